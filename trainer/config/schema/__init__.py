"""The config schema, one module per area; trainer.config combines them into TrainConfig."""
