"""Floor 2: settings, the one place Kafka clients are made, the warehouse, the local stack."""
