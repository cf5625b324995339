"""data=busbra: BUS-BRA's distributed layout, its patients and its published folds."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from medmtl.config import compose
from medmtl.data.busbra import BusbraSplit, index_busbra
from medmtl.data.datamodule import MedDataModule
from medmtl.data.splits import kfold_train_val
from medmtl.errors import ConfigError, DataError
from tests.conftest import run_cli


def _rows(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _dm(root, tmp_path, **busbra):
    cfg = compose(
        "train",
        [
            "data=busbra",
            f"data.root={root}",
            "data.image_size=32",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.output_root={tmp_path}",
            *(f"data.busbra.{k}={'null' if v is None else v}" for k, v in busbra.items()),
        ],
    )
    return MedDataModule.from_config(cfg.data)


def _sides(dm) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for case, s in zip(dm.index.cases, dm.split, strict=True):
        out.setdefault(case.group, set()).add(s)
    return out


def test_layout_is_read_labels_patients_masks_and_metadata(busbra):
    index = index_busbra(busbra)
    table = _rows(busbra / "bus_data.csv")
    assert len(index.cases) == len(table) == 24 and index.classes == ("benign", "malignant")
    first = index.cases[0]
    assert first.case_id == "Images/bus_0001-l.png"
    assert first.masks == (busbra.resolve() / "Masks" / "mask_0001-l.png",)
    assert first.group == "1" and first.class_name == "benign" and first.dataset == "busbra"
    assert set(first.meta) == {"ID", "Histology", "BIRADS", "Device", "Side", "kFold"}
    folds = {r["ID"]: r["kFold"] for r in _rows(busbra / "5-fold-cv.csv")}
    assert all(c.meta["kFold"] == folds[c.meta["ID"]] for c in index.cases)
    assert first.meta["ID"] == "bus_0001-l" and first.meta["Device"] == table[0]["Device"]
    assert {c.class_name for c in index.cases} == {"benign", "malignant"}


def test_published_5_folds_give_test_and_validation(busbra, tmp_path):
    dm = _dm(busbra, tmp_path, folds=5, test_fold=2)
    dm.setup()
    folds = {r["ID"]: r for r in _rows(busbra / "5-fold-cv.csv")}
    for case, s in zip(dm.index.cases, dm.split, strict=True):
        row = folds[case.meta["ID"]]
        want = "test" if row["kFold"] == "2" else ("val" if row["valid_2"] == "0" else "train")
        assert s == want, case.case_id
    assert all(len(s) == 1 for s in _sides(dm).values())
    assert (tmp_path / "outputs" / "splits" / "busbra_folds5_test2.json").exists()
    # medmtl's k-fold over train+val keeps the patients together too, the test fold untouched
    split = kfold_train_val(dm.split, [c.label for c in dm.index.cases], dm.groups, 3, 1)
    assert [s == "test" for s in split] == [s == "test" for s in dm.split]
    for p in {c.group for c in dm.index.cases}:
        assert len({s for s, c in zip(split, dm.index.cases, strict=True) if c.group == p}) == 1


@pytest.mark.parametrize("folds", [10, None])
def test_without_validation_columns_medmtl_chooses_validation_by_patient(busbra, tmp_path, folds):
    dm = _dm(busbra, tmp_path, folds=folds, test_fold=1)
    dm.setup()
    assert {"train", "val", "test"} == set(dm.split)
    assert all(len(s) == 1 for s in _sides(dm).values())
    if folds == 10:  # the published test fold is kept
        fold = {r["ID"]: r["kFold"] for r in _rows(busbra / "10-fold-cv.csv")}
        tests = [fold[c.meta["ID"]] == "1" for c in dm.index.cases]
        assert tests == [s == "test" for s in dm.split]


def test_bad_folds_and_files_are_named(busbra, tmp_path):
    with pytest.raises(ConfigError, match=r"data.busbra.test_fold=6: must be in 1..5"):
        BusbraSplit.from_dict({"folds": 5, "test_fold": 6})
    with pytest.raises(ConfigError, match=r"data.busbra.folds=3: BUS-BRA publishes 5 and 10"):
        BusbraSplit.from_dict({"folds": 3})
    broken = tmp_path / "BUSBRA"
    shutil.copytree(busbra, broken)
    (broken / "Masks" / "mask_0002-l.png").unlink()
    rows = _rows(broken / "5-fold-cv.csv")
    with (broken / "5-fold-cv.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[1:])  # bus_0001-l has no fold any more
    with pytest.raises(DataError) as err:
        index_busbra(broken)
    msg = str(err.value)
    assert msg.startswith("2 problem(s) in ") and "bus_data.csv" in msg
    assert "1 image(s) of bus_data.csv have no fold (e.g. bus_0001-l)" in msg
    assert "line 4: mask 'Masks/mask_0002-l.png' not found" in msg


def test_audit_of_bus_bra(busbra, tmp_path):

    res = run_cli(
        "data",
        "audit",
        "data=busbra",
        f"data.root={busbra}",
        f"paths.output_root={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Images per class: benign 12, malignant 12 (total 24)" in res.stdout
    assert "RESULT: OK, trainable." in res.stdout


def test_fold_options_are_checked():
    assert BusbraSplit.from_dict({"test_fold": [2, 3, 4, 5], "val_fold": 1}).test_fold == (
        2,
        3,
        4,
        5,
    )
    with pytest.raises(ConfigError, match=r"data.busbra.val_fold=2 is also a test fold"):
        BusbraSplit.from_dict({"test_fold": [2, 3], "val_fold": 2})
    with pytest.raises(ConfigError, match=r"data.busbra.val_fold=7: must be in 1..5"):
        BusbraSplit.from_dict({"test_fold": 1, "val_fold": 7})
    with pytest.raises(ConfigError, match=r"give one fold or distinct folds"):
        BusbraSplit.from_dict({"test_fold": [2, 2]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) valid; known: folds, test_fold"):
        BusbraSplit.from_dict({"valid": 1})


def test_validation_marks_that_mix_patients_are_redrawn_by_patient(busbra, tmp_path, caplog):
    """valid_<k> marks images, not patients: medmtl keeps the test fold and redraws val."""
    mixed = tmp_path / "BUSBRA"
    shutil.copytree(busbra, mixed)
    rows = _rows(mixed / "5-fold-cv.csv")
    first = {}
    for r in rows:  # the first image of each two-image patient outside fold 1 validates
        if r["kFold"] != "1":
            case = r["ID"].split("-")[0]
            r["valid_1"] = "0" if case not in first else "1"
            first.setdefault(case, r["ID"])
    with (mixed / "5-fold-cv.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dm = _dm(mixed, tmp_path, folds=5, test_fold=1)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "patient(s) on both the training and the validation side" in caplog.text
    assert {"train", "val", "test"} == set(dm.split)
    assert all(len(s) == 1 for s in _sides(dm).values())
    fold = {r["ID"]: r["kFold"] for r in rows}
    assert [fold[c.meta["ID"]] == "1" for c in dm.index.cases] == [s == "test" for s in dm.split]
    doc = json.loads((tmp_path / "outputs" / "splits" / "busbra_folds5_test1.json").read_text())
    assert "medmtl drew the validation images" in doc["settings"]["split"]


def test_published_folds_as_dev_and_several_test_folds(busbra, tmp_path):
    dm = _dm(busbra, tmp_path, folds=5, test_fold="[3,4]", val_fold=1)
    dm.setup()
    fold = {r["ID"]: r["kFold"] for r in _rows(busbra / "5-fold-cv.csv")}
    want = {"1": "val", "3": "test", "4": "test"}
    assert dm.split == [want.get(fold[c.meta["ID"]], "train") for c in dm.index.cases]
    assert (tmp_path / "outputs" / "splits" / "busbra_folds5_test3-4_val1.json").exists()
    # an evaluation needs only its split: folds 2-5 as test and fold 1 as val leave no train
    dm = _dm(busbra, tmp_path, folds=5, test_fold="[2,3,4,5]", val_fold=1)
    dm.setup("test")
    assert set(dm.split) == {"val", "test"}
    with pytest.raises(DataError, match="the train split has no images"):
        dm.dataloader("train")


def test_real_logiq7_part_is_read_with_its_patients_and_leak_free_splits(busbra_real, tmp_path):
    """The real BUS-BRA folder of CI: the GE Logiq 7 part (902 images of 488 patients)."""
    table = _rows(busbra_real / "bus_data.csv")
    index = index_busbra(busbra_real)
    assert len(index.cases) == len(table)
    assert {c.class_name for c in index.cases} == {"benign", "malignant"}
    if {r["Device"] for r in table} == {"GE Logiq 7 @10-14MHz"}:  # the part CI has
        assert len(index.cases) == 902 and len({c.group for c in index.cases}) == 488
    folds = {r["ID"]: r["kFold"] for r in _rows(busbra_real / "5-fold-cv.csv")}
    for busbra_split in ({"test_fold": 1}, {"test_fold": 2, "val_fold": 1}):
        dm = _dm(busbra_real, tmp_path, folds=5, **busbra_split)
        dm.setup()
        assert all(len(s) == 1 for s in _sides(dm).values()), busbra_split
        tests = [folds[c.meta["ID"]] == str(busbra_split["test_fold"]) for c in dm.index.cases]
        assert tests == [s == "test" for s in dm.split]
        assert dm.split.count("val") > 0 and dm.split.count("train") > 0
    # k-fold over train+val keeps every patient on one side of every fold
    labels = [c.label for c in dm.index.cases]
    for k in range(3):
        split = kfold_train_val(dm.split, labels, dm.groups, 3, k)
        sides: dict = {}
        for case, s in zip(dm.index.cases, split, strict=True):
            sides.setdefault(case.group, set()).add(s)
        assert all(len(s) == 1 for s in sides.values())


def test_multi_site_recipe_trains_on_folds_3_to_5_and_keeps_dev_and_test(
    busi, busbra_real, tmp_path
):
    """experiment=busi_busbra_cpu: BUS-BRA fold 1 validates (external dev), fold 2 tests."""
    from medmtl.data.build import datamodule_from_config

    cfg = compose(
        "train",
        [
            "experiment=busi_busbra_cpu",
            f"data.sets.busi.root={busi}",
            f"data.sets.busbra.root={busbra_real}",
            "data.sets.busi.fold=3",
            "data.image_size=32",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.output_root={tmp_path}",
        ],
    )
    dm = datamodule_from_config(cfg.data)
    dm.setup()
    folds = {r["ID"]: r["kFold"] for r in _rows(busbra_real / "5-fold-cv.csv")}
    want = {"1": "val", "2": "test"}
    got = [(c, s) for c, s in zip(dm.index.cases, dm.split, strict=True) if c.dataset == "busbra"]
    assert len(got) == len(folds)
    assert [s for _, s in got] == [want.get(folds[c.meta["ID"]], "train") for c, _ in got]
    busi_val = sum(s == "val" for c, s in zip(dm.index.cases, dm.split, strict=True)
                   if c.dataset == "busi")  # fmt: skip
    assert 100 < busi_val < 140  # a fifth of BUSI's train+val (fold 3 of 5)
    with pytest.raises(ConfigError, match="data=multi has no folds of its own"):
        datamodule_from_config({**dict(cfg.data), "fold": 2})
