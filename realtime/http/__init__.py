"""HTTP around the socket: health, the API, the price board, middlewares, errors."""
