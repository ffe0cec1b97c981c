"""Backdrop: the WebRTC server that replaces the background behind a person in live video."""
