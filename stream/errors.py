"""The root of every error stream/ raises on purpose, so callers can catch the package's own."""

from __future__ import annotations


class StreamError(Exception):
    """Something a recstream process or command refuses or cannot do; subclasses say which."""
