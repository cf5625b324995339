"""The shared-encoder multi-task network and its pretrained weights."""

from medmtl.models.multitask import ARCHITECTURES, TASKS, MultiTaskNet

__all__ = ["ARCHITECTURES", "TASKS", "MultiTaskNet"]
