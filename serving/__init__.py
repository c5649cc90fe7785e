"""Floor 3: retrieval, prompts, the Faust retrieval consumer and the HTTP API."""
