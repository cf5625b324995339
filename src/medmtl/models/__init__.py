"""The shared-encoder multi-task network, its pretrained weights and mask post-processing.

The network is imported on first use, so that ``medmtl.models.postprocess`` (numpy only) can be
used by the ONNX backend without importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ARCHITECTURES", "TASKS", "MultiTaskNet"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from medmtl.models import multitask

        return getattr(multitask, name)
    raise AttributeError(f"module 'medmtl.models' has no attribute {name!r}")
