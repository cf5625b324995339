"""Paths as users have them on a Hydra command line: spaces and parentheses (BUSI's own
``benign (1).png``) are read as the path they are; what cannot be read bare says how to quote."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from medmtl.cli import preprocess, train
from medmtl.cli.options import quote_paths
from tests.conftest import refused


@pytest.mark.parametrize(
    "given, read",
    [
        ("input=/data/benign (1).png", "input='/data/benign (1).png'"),
        ("data.root=/data/BUSI (copy)/x", "data.root='/data/BUSI (copy)/x'"),
        ("data.root=/data/my busi", "data.root=/data/my busi"),  # Hydra reads it as it is
        ("model/encoder=resnet50,resnet18", "model/encoder=resnet50,resnet18"),  # a sweep
        ("trainer.devices=[0,1]", "trainer.devices=[0,1]"),
        ("-m", "-m"),
    ],
)
def test_values_hydra_cannot_read_bare_are_quoted(given, read):
    assert quote_paths([given]) == [read]


def test_a_file_named_as_busi_names_them_is_read(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "Dataset BUSI (copy)"
    folder.mkdir()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1))).save(folder / "benign (1).png")
    out = tmp_path / "out (2)"
    monkeypatch.setattr(sys, "argv", ["medmtl-preprocess", f"input={folder / 'benign (1).png'}",
                                      f"output={out}", f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    with pytest.raises(SystemExit) as done:
        preprocess.main()
    assert done.value.code == 0
    assert (out / "benign (1).png").is_file(), capsys.readouterr().err[-2000:]


def test_a_path_with_parentheses_is_named_as_given_in_an_error(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "BUSI (old)"
    monkeypatch.setattr(sys, "argv", ["medmtl-train", "data=folder", f"data.root={missing}",
                                      f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    assert f"{missing}: data folder not found" in refused(train.main, capsys)


def test_what_cannot_be_quoted_for_the_user_says_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["medmtl-train", "data=folder",
                                      "data.root=/data/busi (1), copy",
                                      f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    error = refused(train.main, capsys)
    assert "goes in quotes" in error and "'data.root=\"" in error, error
    assert not (tmp_path / "run").exists()
