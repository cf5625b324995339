"""One atomic-write helper: a result appears whole under its name, or not at all."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from medmtl.io.files import atomic_path, atomic_write_text


def test_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"  # never overwritten by a half-written result
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_suffix_is_kept_for_writers_that_choose_the_format_by_name(tmp_path):
    target = tmp_path / "case.npz"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and tmp.name.startswith(".")
        np.savez(tmp, a=np.arange(3))  # numpy would append .npz to any other name
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]


def test_folder_and_concurrent_writers(tmp_path):
    with atomic_path(tmp_path / "data") as tmp:
        (tmp / "a").mkdir(parents=True)
    assert (tmp_path / "data" / "a").is_dir()
    target = tmp_path / "same.txt"
    errors = []

    def write(i: int) -> None:
        try:
            atomic_write_text(target, f"writer {i}\n" * 1000)
        except Exception as exc:  # noqa: BLE001 - any failure is the test's finding
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1  # one writer's whole text, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "same.txt"]
