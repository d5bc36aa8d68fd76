"""recstream's runtime: Faust app, topics, event schemas, agents, producer, HTTP API, CLI."""
