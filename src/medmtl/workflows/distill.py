"""Knowledge distillation (``distill.teacher``): one model trained to match a trained teacher.

The teacher is anything ``medmtl-eval`` opens (a checkpoint, a run, an ensemble folder, a sweep
folder: typically the CPU recipe's 5-fold ensemble). On every training batch it gives its class
probabilities and mask probability map (averaged over its members, without its gate, mask
threshold or test-time flip), and the student's loss becomes
``(1 − w)·L_task + w·L_distill`` (:func:`medmtl.training.losses.distillation_loss`), so that one
network of the ensemble's members' cost learns what the ensemble knows. The teacher must read
images as the student does (the same preprocessing) and answer in the same classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from medmtl.settings.train import Distill
from medmtl.training.module import MultiTaskModule, Teacher
from medmtl.workflows.members import OpenedModel, check_classes, check_reads_like, open_model

log = logging.getLogger(__name__)


def open_teacher(settings: Distill, student_data: Mapping[str, Any]) -> OpenedModel:
    """The teacher of ``distill.teacher``, checked to read images as the student does."""
    opened = open_model(settings.teacher)
    check_reads_like(opened, student_data, f"distill.teacher={settings.teacher}")
    return opened


def attach_teacher(module: MultiTaskModule, opened: OpenedModel, settings: Distill) -> None:
    """Give ``module`` the opened teacher for training (gate, mask threshold and flip off: the
    student learns the teacher's own probabilities)."""
    check_classes(opened, module.class_names, f"distill.teacher={settings.teacher}")
    opened.module.configure_evaluation(gate={"empty_mask_index": None, "mask_threshold": 0.5})
    net = opened.module.net
    net.eval().requires_grad_(False)
    if module.channels_last:
        net.to(memory_format=torch.channels_last)
    module.teacher = Teacher(net, settings.weight, settings.temperature, str(settings.teacher))
    size = len(getattr(net, "members", [net]))
    log.info("Distilling %s (%d network(s)) into this run", settings.teacher, size)
