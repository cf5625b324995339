"""data.image_list: class folders restricted to a published list (curated BUSI), every listed
image there or one line, the others reported, never a silent drop."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmtl.data.image_list import read_image_list, restrict
from medmtl.data.index import index_class_folders
from medmtl.data.phantom import ensure_phantom
from medmtl.errors import ConfigError, DataError

CLASSES = ("normal", "benign", "malignant")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    counts = {"normal": 2, "benign": 3, "malignant": 2}
    return ensure_phantom(tmp_path_factory.mktemp("gen"), seed=4, counts=counts, size=64)


def _list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(text)
    return path


def test_the_curated_list_selects_its_450_busi_images(busi):
    from medmtl.config import compose
    from medmtl.data.build import datamodule_from_config

    cfg = compose("train", ["data=busi_curated", f"data.root={busi}"])
    dm = datamodule_from_config(cfg.data)
    index = dm.kind.index(dm.data, dm.resolve_root(), True)
    assert index.counts() == {"normal": 64, "benign": 222, "malignant": 164}
    left_out = [
        p for p, why in index.ignored_files if why == "not in the image list curated_busi.csv"
    ]
    assert len(left_out) == 780 - 450
    assert {c.case_id for c in index.cases} >= {"benign/benign (20).png", "normal/normal (2).png"}
    ids = {c.case_id for c in index.cases}
    assert "benign/benign (1).png" not in ids and "normal/normal (1).png" not in ids  # not listed


def test_a_list_keeps_exactly_its_images_and_reports_the_rest(folder, tmp_path):
    index = index_class_folders(folder, CLASSES)
    kept = restrict(index, _list(tmp_path, "class;id\nbenign;2\nnormal;1\nmalignant;2\n"))
    assert sorted(c.case_id for c in kept.cases) == [
        "benign/benign (2).png",
        "malignant/malignant (2).png",
        "normal/normal (1).png",
    ]
    reported = sorted(p.name for p, _ in kept.ignored_files)
    assert reported == ["benign (1).png", "benign (3).png", "malignant (1).png", "normal (2).png"]
    # a comma-separated list reads the same
    again = restrict(index, _list(tmp_path, "class,id\nbenign,2\nnormal,1\nmalignant,2\n"))
    assert [c.case_id for c in again.cases] == [c.case_id for c in kept.cases]


@pytest.mark.parametrize(
    "text, said",
    [
        ("class;id\nbenign;9\n", r"list.csv: 1 listed image\(s\) not in .* \(first: benign;9\)"),
        ("class;id\ncyst;1\n", "list.csv: class 'cyst' is not one of the data set's classes"),
        ("image;label\nbenign;1\n", "list.csv: not an image list; its first line must be"),
        ("class;id\nbenign;one\n", r"list.csv:2: 'benign;one' is not a class;number row"),
        ("class;id\nbenign;1\nbenign;1\n", "list.csv: benign;1 is listed more than once"),
        ("class;id\n", "list.csv: the image list names no image"),
    ],
)
def test_a_wrong_list_is_one_line_naming_it(folder, tmp_path, text, said):
    index = index_class_folders(folder, CLASSES)
    with pytest.raises(DataError, match=said):
        restrict(index, _list(tmp_path, text))


def test_an_unreadable_list_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"missing.csv: image list not readable"):
        read_image_list(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    "overrides, said",
    [
        (["data=manifest", "data.manifest=/x.csv"], "an image list restricts class folders"),
        (["data=busi", "data.image_list=/no/such/list.csv"], "/no/such/list.csv: no such file"),
    ],
)
def test_a_list_where_it_cannot_act_is_refused_before_any_image(overrides, said):
    from medmtl.config import compose
    from medmtl.data.build import datamodule_from_config

    cfg = compose("train", overrides)
    if "data=manifest" in overrides:
        cfg.data.image_list = str(Path(__file__))  # a file that exists
    with pytest.raises(ConfigError, match=said):
        datamodule_from_config(cfg.data)


def test_the_audit_says_how_the_list_relates_to_busis_near_duplicate_groups(busi, capsys):
    import json

    from medmtl.config import compose
    from medmtl.workflows.data import audit_data

    report = audit_data(compose("data_tool", ["data=busi_curated", f"data.root={busi}"]).data)
    rel = report.listed
    # the groups are found on all 780 images: those of BUSI's own split file
    busi_split = json.loads((Path(__file__).parents[2] / "splits" / "busi.json").read_text())
    assert rel.total == 780 and rel.groups == busi_split["num_groups_with_duplicates"]
    kept_groups = report.groups.members()  # groups with two or more kept images
    assert rel.kept_several == len(kept_groups) > 0
    assert rel.kept_grouped == sum(len(m) for m in kept_groups.values())
    assert rel.kept_several + rel.kept_one <= rel.groups
    out = capsys.readouterr().out
    assert (
        f"Image list curated_busi.csv: 450 of the data set's 780 images. Of medmtl's "
        f"{rel.groups} near-duplicate groups in all 780, the list keeps two or more images of "
        f"{rel.kept_several} ({rel.kept_grouped} kept images" in out
    )
    assert report.split_counts["fold0"] == {"normal": 16, "benign": 56, "malignant": 41}
