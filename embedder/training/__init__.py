"""Training: `train` (tokenizer, then every encoder) and the one loop (`loop.fit`) that trains
any encoder with validation, early stopping, checkpoints and exact resume."""
