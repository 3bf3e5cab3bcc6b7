"""The training core both tasks share: the contrastive LightningModule, the evaluator callback base, pre-emption."""
