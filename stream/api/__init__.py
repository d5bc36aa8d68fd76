"""recstream's HTTP replica (FastAPI): event ingest, recommendations, item admin; and
`client`, a standard-library client of it for frontends and producers."""
