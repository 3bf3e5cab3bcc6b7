"""Text retrieval (LAReQA-style): data module, LightningModule, evaluators."""
