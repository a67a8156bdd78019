"""LightningModules, one per task, training networks handed to them."""
