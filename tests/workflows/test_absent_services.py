"""A launcher or service that is not there, each in turn (the cluster, the image archive, W&B's
server, a W&B login): one ``medmtl: error:`` line naming it and what to do, exit 2, before any
work."""

from __future__ import annotations

import importlib
import socket
import sys

import pytest

from tests.conftest import TINY_MODEL, TINY_PHANTOM, refused


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.fixture
def listening():
    """A port something listens on (and never answers): a server that is there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


TRAIN = ["experiment=demo", *TINY_PHANTOM, *TINY_MODEL, "trainer.max_epochs=1"]
SERVICES = ["slurm", "archive", "wandb server", "wandb login", "wandb server (tables)"]


@pytest.mark.parametrize("service", SERVICES)
def test_an_absent_service_is_one_line(service, tmp_path, tiny_ckpt, listening, monkeypatch,
                                       capsys):  # fmt: skip
    monkeypatch.setenv("WANDB_MODE", "offline")  # the tests' "disabled" would skip W&B
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no login
    closed = f"http://127.0.0.1:{_closed_port()}"
    run_dir = tmp_path / "run"
    hydra = None
    if service == "slurm":
        empty = tmp_path / "bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        hydra = ["train", "-m", *TRAIN, "hydra/launcher=slurm_cpu", f"hydra.sweep.dir={run_dir}"]
        says = "no SLURM cluster answers from here (sbatch and srun and sinfo not found)"
    elif service == "archive":
        args = ["predict", f"ckpt_path={tiny_ckpt}", f"out={tmp_path / 'out'}",
                f"input=dicomweb://127.0.0.1:{_closed_port()}/dicom-web/studies/1.2.3"]  # fmt: skip
        says = "127.0.0.1"
    elif service.startswith("wandb server"):
        monkeypatch.setenv("WANDB_BASE_URL", closed)
        says = f"W&B's server {closed} cannot be reached from here"
        if service.endswith("(tables)"):
            (tmp_path / "sweep").mkdir()
            args = ["tables", str(tmp_path / "sweep"), "wandb=online"]
        else:
            hydra = ["train", *TRAIN, "logger=wandb", "logger.wandb.offline=false",
                     f"hydra.run.dir={run_dir}"]  # fmt: skip
    else:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listening}")
        hydra = ["train", *TRAIN, "logger=wandb", "logger.wandb.offline=false",
                 f"hydra.run.dir={run_dir}"]  # fmt: skip
        says = "no W&B login on this machine for 127.0.0.1"
    if hydra:
        monkeypatch.setattr(sys, "argv", [f"medmtl-{hydra[0]}", *hydra[1:]])
        run = importlib.import_module(f"medmtl.cli.{hydra[0]}").main
    else:
        module = importlib.import_module(f"medmtl.cli.{args[0]}")
        run = lambda: module.main(args[1:])  # noqa: E731
    error = refused(run, capsys)
    assert says in error, error
    assert not (run_dir / "checkpoints").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no result begun
