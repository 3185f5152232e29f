"""bandersnatch-clone: a fast, crash-safe PyPI mirror."""

__version__ = "0.1.0"
