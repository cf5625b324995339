"""ONNX Runtime backend: no torch, Lightning or Hydra needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medmtl.errors import MedmtlError
from medmtl.models.conformal import AnswerSets, conformal_record
from medmtl.models.postprocess import PostProcess
from medmtl.models.shift import references_from_record, shift_record
from medmtl.models.upgrade import upgrade_onnx_meta
from medmtl.preprocess.pipeline import PreprocessSettings

# the metadata entry medmtl-export writes (medmtl.inference.export imports it from here)
ONNX_META_KEY = "medmtl"
# the ONNX outputs named differently from the network's outputs (the others keep their names)
OUTPUT_KEYS = {"mask_logits": "seg", "class_logits": "cls"}


class OnnxBackend:
    """Runs an ONNX model exported by ``medmtl-export`` with the preprocessing stored in it."""

    def __init__(self, model_path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise MedmtlError(f"{path}: ONNX model not found. Export one with medmtl-export.")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise MedmtlError(
                f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:160]})."
            ) from exc
        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        if raw is None:
            raise MedmtlError(
                f"{path}: an ONNX model, but not one exported by medmtl-export (no '{ONNX_META_KEY}' "
                "metadata, so its preprocessing and classes are unknown)."
            )
        meta = upgrade_onnx_meta(json.loads(raw))  # older exports in today's form
        self.settings = PreprocessSettings.from_dict(meta["preprocess"])
        self.class_names = list(meta["class_names"])
        self.task = meta["task"]
        self.outputs = list(meta["outputs"])
        self.postprocess = PostProcess.from_dict(meta["postprocess"])
        self.calibration = dict(meta["calibration"])
        self.answer_sets = AnswerSets.from_dict(meta["conformal"])
        # an ensemble's members disagreeing about the mask below this refers the image
        self.min_mask_agreement = (meta.get("refer") or {}).get("min_mask_agreement")
        self.tta = bool(meta["tta"])  # the flip it was evaluated with
        # the shift test's references (an export from before them: none)
        self.shift_references = references_from_record(meta.get("shift"))
        self.card = {
            **dict(meta["card"]),
            "calibration": self.calibration,
            "conformal": conformal_record(self.answer_sets),
            "unlike": dict(meta["unlike"]),
            "gate": meta.get("gate"),  # None: an export from before the gate was recorded
            "refer": {"min_mask_agreement": self.min_mask_agreement},
            "shift": shift_record(self.shift_references),
        }
        self.meta = meta

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {"image": batch.astype(np.float32)})
        return {OUTPUT_KEYS.get(n, n): v for n, v in zip(self.outputs, values, strict=True)}
