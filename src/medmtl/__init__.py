"""medmtl: multi-task (segmentation + classification) medical image analysis experiments."""

import os

# albumentations checks PyPI for updates on import; W&B rejects an empty WANDB_MODE.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if os.environ.get("WANDB_MODE") == "":
    del os.environ["WANDB_MODE"]

__version__ = "0.1.0"
