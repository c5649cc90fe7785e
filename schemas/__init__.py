"""Floor 1: the wire contracts. Every Kafka message as a pydantic model; topic registry; serde."""
