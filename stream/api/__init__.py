"""recstream's HTTP service (FastAPI): event ingest now, retrieval endpoints beside it."""
