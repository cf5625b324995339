"""Data sets: class-folder index, the phantom, near-duplicate groups, the fixed split and its folds,
the image cache, augmentation, the LightningDataModule and the audit."""
