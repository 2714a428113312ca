"""The training engine: Trainer, callbacks, recipes, batches, feature cache, resume, several processes."""
