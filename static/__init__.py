"""The demo page (HTML, CSS, JS): package data of `server.web.static`, served at / and /static/."""
