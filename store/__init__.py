"""Adapters for state outside the process: Redis (and, later, FAISS and snapshots)."""
