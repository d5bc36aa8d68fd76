"""recstream's HTTP replica (FastAPI): event ingest, recommendations, item admin."""
