"""kbservice: a continual-learning medical knowledge service."""

__version__ = "0.1.0"
