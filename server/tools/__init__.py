"""Tools around the server: bench, loadtest, the aiortc test client, evaluation and its gallery."""
