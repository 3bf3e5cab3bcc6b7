"""Image–text retrieval with multilingual captions: data module, encoder + LightningModule, evaluator."""
