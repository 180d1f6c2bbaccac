"""The learning loop: LoRA training, evaluation gate, adapter registry, update cycle and its scheduler."""
