"""The trainer: learn the stream exactly once and publish model versions."""
