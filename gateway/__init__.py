"""smsgw: an on-premise SMS gateway for hospitals."""

__version__ = "0.1.0"
