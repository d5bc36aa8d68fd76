"""The ingest worker (Faust): apply each event to Redis exactly once and re-embed its user."""
