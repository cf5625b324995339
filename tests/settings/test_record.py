"""The run record: one typed description of metrics.json, written and read in one way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmtl.errors import DataError
from medmtl.reporting.runs import collect_runs
from medmtl.reporting.summary import write_record
from medmtl.settings.record import (
    FIELD_META,
    KEY_FIELDS,
    VALUE_FAMILIES,
    RunRecord,
    read_record,
)


def test_fields_and_keys_map_one_to_one():
    assert len(KEY_FIELDS) == len(FIELD_META) > 40
    assert KEY_FIELDS["loss/seg_weight"] == "seg_weight"
    assert KEY_FIELDS["ensemble/members"] == "members"


def test_round_trip_keeps_every_entry(tmp_path):
    record = RunRecord(data_name="busi", fold=2, seed=7, seg_weight=0.7, arch="Unet")
    record.update({"test/seg_dice": 0.71, "calibration/temperature": 1.3, "wall_time_s": 12.5})
    written = write_record(tmp_path, record)
    back = read_record(tmp_path / "metrics.json")
    assert back == record
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    # the file keeps its flat form: older readers and the published docs still hold
    assert written["data/fold"] == 2 and written["test/seg_dice"] == 0.71
    # unset optional entries are left out: their presence says what the run was
    assert "ensemble/members" not in written and not back.is_ensemble
    assert "data/num_folds" in written and written["data/num_folds"] is None


def test_metric_reads_the_evaluated_split():
    record = RunRecord(eval_split="all").update({"all/cls_acc": 0.8, "test/cls_acc": 0.1})
    assert record.split == "all" and record.metric("test/cls_acc") == 0.8
    assert RunRecord().update({"test/cls_acc": 0.1}).metric("test/cls_acc") == 0.1
    assert RunRecord(seed=3).metric("seed") == 3


def test_setting_falls_back_to_the_command_line_spelling():
    overrides = {"loss.seg_weight": "0.3", "data.fold": "4", "model/encoder": "resnet50"}
    old = RunRecord()  # a run that did not record these
    assert old.setting("seg_weight", overrides) == "0.3"
    assert old.setting("fold", overrides) == "4"
    assert old.setting("encoder_study", overrides) == "resnet50"
    assert old.setting("seed", overrides) is None
    assert RunRecord(seg_weight=0.7).setting("seg_weight", overrides) == 0.7


def test_merge_sets_only_what_the_other_set():
    base = RunRecord(data_name="busi", seed=1)
    base.merge(RunRecord(members=["a", "b"], ensemble_size=2))
    assert (base.data_name, base.seed, base.ensemble_size, base.is_ensemble) == (
        "busi", 1, 2, True,
    )  # fmt: skip
    base.merge({"ckpt_path": "x", "test/cls_acc": 0.5})
    assert base.ckpt_path == "x" and base.values == {"test/cls_acc": 0.5}


def test_the_record_refuses_a_key_it_does_not_know_but_reads_one():
    record = RunRecord()
    for key in ("seg_dice", "tset/seg_dice", "calibratoin/temperature"):
        with pytest.raises(ValueError, match=f"'{key}' is neither a field"):
            record.update({key: 1.0})
    assert record.values == {}
    # a file written by another version keeps what this one does not know
    back = RunRecord.from_metrics({"seg_dice": 0.5, "data/name": "busi"})
    assert back.values == {"seg_dice": 0.5} and back.data_name == "busi"
    # every family declared takes its values
    assert RunRecord().update({f"{f}/x": 1 for f in VALUE_FAMILIES}).values == {
        f"{f}/x": 1 for f in VALUE_FAMILIES
    }


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_record_is_one_line_naming_the_file(tmp_path, text):
    f = tmp_path / "metrics.json"
    f.write_text(text)
    with pytest.raises(DataError, match=f"{f}: not a readable metrics.json"):
        read_record(f)


def test_tables_read_runs_through_the_record(tmp_path):
    job = Path(tmp_path) / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- loss.seg_weight=0.3\n- seed=5\n")
    write_record(job, RunRecord().update({"test/cls_acc": 0.9}))
    (run,) = collect_runs(tmp_path)
    assert run.setting("seg_weight") == "0.3" and run.repeat == ("5", "None")
    assert run.value("test/cls_acc") == 0.9 and not run.is_ensemble


def test_a_checkpoint_is_predicted_with_the_flip_its_run_was_evaluated_with(tmp_path):
    """medmtl-predict's and the page's default test-time flip: the run's, which its temperature
    and answer sets were fitted with."""
    import json

    from medmtl.settings.record import evaluated_tta

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert evaluated_tta(run / "checkpoints" / "best.ckpt") is False  # no record: no flip
    (run / "metrics.json").write_text(json.dumps({"tta": True}))
    assert evaluated_tta(run / "checkpoints" / "best.ckpt") is True
    artifact = tmp_path / "artifact"  # a W&B model artifact: model.ckpt beside metrics.json
    artifact.mkdir()
    (artifact / "model.ckpt").write_bytes(b"")
    (artifact / "metrics.json").write_text(json.dumps({"tta": False}))
    assert evaluated_tta(artifact / "model.ckpt") is False
    (artifact / "metrics.json").write_text(json.dumps({"tta": True}))
    assert evaluated_tta(artifact / "model.ckpt") is True
