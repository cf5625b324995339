"""data=manifest: a CSV that lists a data set (paths, masks, labels, patients, metadata)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmtl.data.cache import read_case
from medmtl.data.datamodule import MedDataModule
from medmtl.data.phantom import ensure_phantom
from medmtl.data.splits import kfold_train_val
from medmtl.errors import DataError
from tests.conftest import run_cli

COUNTS = {"normal": 8, "benign": 16, "malignant": 16}
HEADER = ["path", "masks", "diagnosis", "patient", "device"]


def _write(path: Path, rows: list[list[str]], header=HEADER, delimiter=",") -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def listed(tmp_path) -> tuple[Path, list[list[str]]]:
    """A phantom laid out as a hospital export: images/, masks/, two images per patient, one
    lesion split into two mask files, a device column; benign and malignant only."""
    src = ensure_phantom(tmp_path / "gen", seed=3, counts=COUNTS, size=64)
    data = tmp_path / "hospital"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rows = []
    k = 0
    for cls in ("benign", "malignant"):
        for i in range(1, COUNTS[cls] + 1):
            k += 1
            img = Image.open(src / cls / f"{cls} ({i}).png")
            mask = np.asarray(Image.open(src / cls / f"{cls} ({i})_mask.png")) > 0
            img.save(data / "images" / f"img{k:03d}.png")
            if k == 1:  # one lesion in two files: left and right halves, merged with OR
                left, right = mask.copy(), mask.copy()
                left[:, 32:], right[:, :32] = False, False
                for part, m in (("a", left), ("b", right)):
                    Image.fromarray(m.astype(np.uint8) * 255).save(
                        data / "masks" / f"m{k}{part}.png"
                    )
                masks = f"masks/m{k}a.png; masks/m{k}b.png"
            else:
                Image.fromarray(mask.astype(np.uint8) * 255).save(data / "masks" / f"m{k}.png")
                masks = f"masks/m{k}.png"
            rows.append(
                [f"images/img{k:03d}.png", masks, cls, f"P{(k + 1) // 2:02d}", f"dev{k % 3}"]
            )
    return _write(data / "list.csv", rows), rows


def _dm(manifest: Path, tmp_path: Path, **extra) -> MedDataModule:
    return MedDataModule.from_config(
        {
            "name": "hospital",
            "source": "manifest",
            "manifest": str(manifest),
            "columns": {"image": "path", "mask": "masks", "label": "diagnosis", "group": "patient"},
            "classes": ["benign", "malignant"],
            "image_size": 32,
            "cache_dir": str(tmp_path / "cache"),
            "split_file": str(tmp_path / "split.json"),
            **extra,
        }
    )


COLUMNS = {"image": "path", "mask": "masks", "label": "diagnosis", "group": "patient"}


def test_manifest_is_read_with_masks_groups_and_metadata(listed, tmp_path):
    manifest, rows = listed
    dm = _dm(manifest, tmp_path)
    dm.setup()
    cases = dm.index.cases
    assert len(cases) == len(rows) == 32
    assert cases[0].case_id == "images/img001.png" and cases[0].dataset == "hospital"
    assert cases[0].group == "P01" and cases[1].group == "P01"  # two images per patient
    assert cases[0].meta == {"device": "dev1"} and cases[0].class_name == "benign"
    assert cases[-1].class_name == "malignant" and cases[-1].label == 1
    # the two mask files of the first image: the network learns their union, and each is a
    # lesion of its own for the lesion-level metrics (as BUSI's _mask_1 files)
    _, lesions, _ = read_case(cases[0])
    halves = [np.asarray(Image.open(m)) > 0 for m in cases[0].masks]
    assert len(halves) == 2 and halves[0].any() and halves[1].any()
    assert np.array_equal(lesions > 0, halves[0] | halves[1])
    assert sorted(np.unique(lesions).tolist()) == [0, 1, 2]


def test_patients_stay_on_one_side_of_the_split_and_every_fold(listed, tmp_path):
    manifest, _ = listed
    dm = _dm(manifest, tmp_path)
    dm.setup()
    patient = [c.group for c in dm.index.cases]

    def sides(split: list[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for s, q in zip(split, patient, strict=True):
            out.setdefault(q, set()).add(s)
        return out

    assert all(len(s) == 1 for s in sides(dm.split).values())
    for fold in range(3):
        split = kfold_train_val(dm.split, [c.label for c in dm.index.cases], dm.groups, 3, fold)
        assert all(len(s) == 1 for s in sides(split).values()), fold
    # the split file says how groups were made, and the next run reads it back unchanged
    again = _dm(manifest, tmp_path)
    again.setup()
    assert again.split == dm.split and again.groups == dm.groups
    assert "patients" in (tmp_path / "split.json").read_text()


def test_a_given_split_column_is_used_and_a_patient_on_two_sides_refused(listed, tmp_path):
    manifest, rows = listed
    sides = ["train"] * 20 + ["val"] * 4 + ["test"] * 8
    header = [*HEADER, "split"]
    columns = {**COLUMNS, "split": "split"}
    given = _write(
        manifest.with_name("given.csv"), [[*r, s] for r, s in zip(rows, sides, strict=True)], header
    )
    dm = _dm(given, tmp_path, columns=columns)
    dm.setup()
    assert dm.split == sides
    leaky = [[*r, s] for r, s in zip(rows, ["test", *sides[1:]], strict=True)]  # P01 in two
    bad = _write(manifest.with_name("leaky.csv"), leaky, header)
    (tmp_path / "split.json").unlink()
    with pytest.raises(DataError, match=r"1 patient/case group\(s\) are in more than one split"):
        _dm(bad, tmp_path, columns=columns).setup()


def test_every_bad_row_is_named_and_all_are_reported_together(listed, tmp_path):
    manifest, rows = listed
    rows = [list(r) for r in rows]
    rows[2][0] = "images/missing.png"  # line 4: image not found
    rows[3][2] = "bening"  # line 5: unknown label
    rows[4][3] = ""  # line 6: empty group
    rows[5][1] = "masks/nowhere.png"  # line 7: mask not found
    (manifest.parent / "images" / "img008.png").write_bytes(b"not a png")  # unreadable
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(manifest.parent / "masks" / "m9.png")
    bad = _write(manifest.with_name("bad.csv"), rows)
    with pytest.raises(DataError) as err:
        _dm(bad, tmp_path).setup()
    msg = str(err.value)
    assert msg.startswith("6 problem(s) with the data of hospital") and "\n" not in msg
    assert "line 4: image 'images/missing.png' not found" in msg
    assert "line 5: label 'bening' is not one of the classes benign, malignant" in msg
    assert "line 6: the 'patient' column is empty" in msg and "(and 1 more)" in msg
    assert not (tmp_path / "split.json").exists()  # nothing was written
    # the audit lists every one of them, index and file problems alike, and exits 1
    res = run_cli(
        "data",
        "audit",
        "data=manifest",
        f"data.manifest={bad}",
        "data.classes=[benign,malignant]",
        *(f"data.columns.{k}={v}" for k, v in COLUMNS.items()),
        f"data.split_file={tmp_path / 'split.json'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        timeout=300,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    for expected in (
        "line 4: image 'images/missing.png' not found",
        "line 5: label 'bening'",
        "line 6: the 'patient' column is empty",
        "line 7: mask 'masks/nowhere.png' not found",
        "img008.png: cannot be decoded",
        "m9.png: mask is 12x10 but its image is 64x64",
    ):
        assert expected in res.stdout, expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("class_map", "line 18: label 'malignant' is not in data.class_map (benign)"),
        ("no_label_column", "has no column 'diagnosis' (it has 'path', 'masks', 'kind', "),
        ("semicolons", "is separated by ';', not by commas"),
        ("no_masks", "no masks at all (no column 'masks')"),
    ],
)
def test_file_level_problems_are_one_clear_line(listed, tmp_path, change, message):
    manifest, rows = listed
    extra = {}
    if change == "class_map":
        extra["class_map"] = {"benign": "benign"}
        path = manifest
    elif change == "no_label_column":
        path = _write(
            manifest.with_name("x.csv"), rows, ["path", "masks", "kind", "patient", "device"]
        )
    elif change == "semicolons":
        path = _write(manifest.with_name("x.csv"), rows, delimiter=";")
    else:
        path = _write(
            manifest.with_name("x.csv"),
            [[r[0], *r[2:]] for r in rows],
            [HEADER[0], *HEADER[2:]],
        )
    with pytest.raises(DataError) as err:
        _dm(path, tmp_path, **extra).setup()
    assert message in str(err.value) and "\n" not in str(err.value)
