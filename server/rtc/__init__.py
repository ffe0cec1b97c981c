"""WebRTC sessions: one peer connection each, the processed video track, typed data-channel messages."""
