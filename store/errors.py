"""The root of every error store/ raises on purpose, so callers can catch the package's own."""

from __future__ import annotations


class StoreError(Exception):
    """Something the Redis or vector-index adapters refuse or cannot do; subclasses say which."""
