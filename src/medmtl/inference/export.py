"""Export a checkpoint to ONNX with both outputs, a dynamic batch size and its preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from medmtl.inference.onnx_backend import ONNX_META_KEY, OUTPUT_KEYS
from medmtl.inference.torch_backend import TorchBackend
from medmtl.io.files import atomic_path
from medmtl.models.calibration import calibration_record
from medmtl.models.checkpoint import stored_net
from medmtl.models.multitask import gate_record
from medmtl.models.unlike import unlike_record
from medmtl.preprocess.pipeline import PreprocessSettings


class _Outputs(nn.Module):
    def __init__(self, net: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.net, self.names = net, names

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        return tuple(out[OUTPUT_KEYS.get(n, n)] for n in self.names)


def output_names(net: nn.Module, task: str) -> list[str]:
    """The exported outputs: mask and class logits as the task has them, the unlike-training
    score where the model has one, the pooled features where it has a shift reference, and an
    ensemble's members' probabilities."""
    names = [
        n for n, keep in (("mask_logits", task != "cls"), ("class_logits", task != "seg")) if keep
    ]
    if unlike_record(net)["fitted"]:
        names.append("unlike_score")
    if net.shift_references():  # the pooled features the shift test compares
        names.append("features")
    if getattr(net, "members", None) is not None:
        names += [
            n for n, keep in (("member_seg", task != "cls"), ("member_cls", task != "seg")) if keep
        ]
    return names


def export_onnx(ckpt_path: str | Path, out_path: str | Path, opset: int = 17) -> Path:
    """Write ``out_path`` (atomically) and return it."""
    backend = TorchBackend(ckpt_path)
    model = stored_net(backend.hparams).to_dict()  # the network's settings, as trained
    return export_network(
        backend.net,
        backend.settings,
        backend.class_names,
        backend.task,
        model,
        out_path,
        opset,
        extra={
            "postprocess": backend.postprocess.to_dict(),
            "card": backend.card,
            "conformal": backend.answer_sets.to_dict() if backend.answer_sets else None,
            "tta": backend.tta,
        },
    )


def export_network(
    net: nn.Module,
    settings: PreprocessSettings,
    class_names: list[str],
    task: str,
    model: dict,
    out_path: str | Path,
    opset: int = 17,
    extra: dict | None = None,
) -> Path:
    """Export any network with MultiTaskNet's outputs (also an ensemble) with its metadata."""
    import onnx

    names = output_names(net, task)
    wrapper = _Outputs(net, names).eval()  # eval: the exporter restores the wrapper's mode
    size = settings.image_size
    in_ch = int(model["in_channels"])  # a model's settings, or an ensemble's summary of them
    meta = {
        "class_names": list(class_names),
        "task": task,
        "outputs": names,
        "preprocess": settings.to_dict(),
        "model": model,
        "calibration": calibration_record(net),
        "unlike": unlike_record(net),
        "gate": gate_record(net, class_names),
        "refer": {"min_mask_agreement": getattr(net, "min_mask_agreement", None)},
        "shift": [r.to_dict() for r in net.shift_references()],
        **(extra or {}),
    }
    with atomic_path(out_path) as tmp:
        torch.onnx.export(
            wrapper,
            torch.zeros(1, in_ch, size, size),
            str(tmp),
            input_names=["image"],
            output_names=names,
            dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}},
            opset_version=opset,
            dynamo=False,
        )
        onnx_model = onnx.load(str(tmp))
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
        onnx.checker.check_model(onnx_model)
        onnx.save(onnx_model, str(tmp))
    return Path(out_path)
