"""Older exported models and checkpoints are read in today's form, in one place."""

from __future__ import annotations

import json

import numpy as np

from medmtl.models.upgrade import upgrade_onnx_meta
from medmtl.settings.model import ModelSettings

# what the first exports held (medmtl-export before post-processing, calibration, conformal
# answer sets, the unlike score and the card were added)
OLDEST = ("class_names", "task", "outputs", "preprocess", "model")


def test_older_metadata_gets_what_those_models_behaved_with():
    meta = upgrade_onnx_meta({"class_names": ["a", "b"], "task": "cls", "card": None})
    assert meta["postprocess"] == ModelSettings().postprocess
    assert meta["calibration"]["temperature"] == 1.0 and not meta["calibration"]["calibrated"]
    assert meta["conformal"] is None and meta["unlike"] == {"fitted": False}
    assert meta["card"] == {} and meta["class_names"] == ["a", "b"]
    assert meta["tta"] is False  # predicted without the flip, as medmtl-predict then did
    kept = upgrade_onnx_meta(
        {"postprocess": {"min_area": 3}, "unlike": {"fitted": True}, "tta": True}
    )
    assert kept["postprocess"] == {"min_area": 3} and kept["unlike"] == {"fitted": True}
    assert kept["tta"] is True


def test_an_export_of_the_oldest_form_still_predicts(tiny_ckpt, tmp_path):
    import onnx

    from medmtl.inference.export import export_onnx
    from medmtl.inference.onnx_backend import ONNX_META_KEY, OnnxBackend

    new = export_onnx(tiny_ckpt, tmp_path / "new.onnx")
    model = onnx.load(str(new))
    entry = next(p for p in model.metadata_props if p.key == ONNX_META_KEY)
    meta = json.loads(entry.value)
    assert set(OLDEST) < set(meta)  # the export writes more than the oldest form
    entry.value = json.dumps({k: meta[k] for k in OLDEST})
    onnx.save(model, str(tmp_path / "old.onnx"))
    old, current = OnnxBackend(tmp_path / "old.onnx"), OnnxBackend(new)
    assert old.card["unlike"] == {"fitted": False} and old.answer_sets is None
    assert old.postprocess.to_dict() == current.postprocess.to_dict()
    batch = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    a, b = old.run(batch), current.run(batch)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k]) for k in a)
