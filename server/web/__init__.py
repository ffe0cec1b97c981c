"""The aiohttp application: settings, routes, JSON errors, metrics, resources and the demo page."""
