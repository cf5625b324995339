"""The LightningModule, losses and metrics."""
