"""realtime: a Socket.IO gateway for live trading prices and private account events."""

__version__ = "0.1.0"
