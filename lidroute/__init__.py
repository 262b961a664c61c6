"""lidroute: multilingual speech recognition with automatic language routing."""

__version__ = "0.1.0"
