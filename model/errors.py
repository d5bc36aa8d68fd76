"""The root of every error model/ raises on purpose, so callers can catch the package's own."""

from __future__ import annotations


class ModelError(Exception):
    """Something the models, their checkpoints or their inputs refuse; subclasses say which."""
