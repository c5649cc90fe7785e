"""Floor 3: dataset snapshots, LoRA fine-tuning, adapters and evaluation."""
