"""PyTorch backend: rebuild the network from a checkpoint (weights_only) and run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medmtl.inference.card import card_from_checkpoint
from medmtl.models.calibration import calibration_record
from medmtl.models.checkpoint import CONFORMAL_KEY, network_from_checkpoint, stored_net
from medmtl.models.conformal import AnswerSets, conformal_record
from medmtl.models.multitask import gate_record
from medmtl.models.postprocess import PostProcess
from medmtl.models.shift import shift_record
from medmtl.models.unlike import unlike_record
from medmtl.preprocess.pipeline import PreprocessSettings
from medmtl.settings.record import evaluated_tta


class TorchBackend:
    """Runs the checkpoint's network in eval mode with the preprocessing it was trained with."""

    def __init__(self, ckpt_path: str | Path, channels_last: bool = True) -> None:
        self.net, ckpt = network_from_checkpoint(ckpt_path)
        hp = ckpt["hyper_parameters"]
        # channels-last runs the network 1.3x faster on this project's CPU (docs/benchmarks.md)
        self.channels_last = channels_last
        self.net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.settings = PreprocessSettings.from_dict(hp.get("data"))
        self.class_names = list(hp["class_names"])
        net = stored_net(hp)
        self.task = net.task
        self.postprocess = PostProcess.from_dict(net.postprocess)
        self.hparams = hp
        # conformal answer sets calibrated after training (None: an older checkpoint)
        self.answer_sets = AnswerSets.from_dict(ckpt.get(CONFORMAL_KEY))
        self.min_mask_agreement = None  # a single model: no members to disagree about a mask
        self.shift_references = self.net.shift_references()  # the shift test's, if fitted
        # the flip its run was evaluated (and its temperature and answer sets fitted) with
        self.tta = evaluated_tta(ckpt_path)
        self.card = {
            **card_from_checkpoint(ckpt_path, hp),
            "calibration": calibration_record(self.net),
            "conformal": conformal_record(self.answer_sets),
            "unlike": unlike_record(self.net),
            "gate": gate_record(self.net, self.class_names),
            "refer": {"min_mask_agreement": self.min_mask_agreement},
            "shift": shift_record(self.shift_references),
        }

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {k: v.contiguous().numpy() for k, v in self.net(x).items() if v is not None}
