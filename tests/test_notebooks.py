"""The notebooks run top to bottom with the package (they are documentation that must not rot)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from medmtl.config import project_root

NOTEBOOKS = sorted((project_root() / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, cache_dir) -> Path:
    """A 2-λ sweep on the tiny phantom for the study-tables notebook."""
    from tests.reporting.test_sweeps_tables import _train_multirun

    out = tmp_path_factory.mktemp("nb_sweep")
    res = _train_multirun(out, cache_dir, "loss.seg_weight=0.3,0.7", "seed=0")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


# the study-tables notebook needs a sweep of its own (about a minute): make test-full
PARAMS = [
    pytest.param(p, marks=pytest.mark.slow) if p.name == "02_study_tables.ipynb" else p
    for p in NOTEBOOKS
]


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, request, monkeypatch):
    if path.name == "02_study_tables.ipynb":
        monkeypatch.setenv("MEDMTL_SWEEP", str(request.getfixturevalue("tiny_sweep")))
        monkeypatch.setenv("MEDMTL_BASELINE", "λ=0.7")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o.get("output_type") == "error"]
    assert not errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the comparison figures were drawn
    if path.name == "02_study_tables.ipynb":
        text = "".join(
            str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
            for o in outputs
        )
        assert "λ=0.3 vs λ=0.7" in text and "Holm" in text  # the paired comparison
        assert len(images) >= 3  # λ curve, forest plot, the cases side by side
