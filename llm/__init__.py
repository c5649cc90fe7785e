"""Floor 2: base models, adapters and the generation backends that serving and the trainer share."""
