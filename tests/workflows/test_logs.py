"""What a run prints is the user's concern: no library adverts, no duplicated lines."""

from __future__ import annotations

import warnings

from tests.conftest import TINY_MODEL, TINY_PHANTOM, compose_cfg, run_cli


def test_a_run_prints_each_line_once_and_no_advert(tmp_path, cache_dir):
    res = run_cli(
        "train",
        *TINY_PHANTOM,
        *TINY_MODEL,
        "trainer.max_epochs=1",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "litlogger" not in out and "LeafSpec" not in out
    # Lightning's srun hint (this machine has SLURM installed for the cluster tests)
    assert "srun` command is available" not in out
    # Lightning's messages reach the console (and the run's log file) once, through Hydra
    assert out.count("`Trainer.fit` stopped") == 1
    assert not [ln for ln in out.splitlines() if ln.startswith("INFO: ")]
    assert "`Trainer.fit` stopped" in (tmp_path / "run" / "train.log").read_text()


def test_warnings_nobody_can_act_on_are_filtered():
    from medmtl.workflows.logs import quiet_third_party

    quiet_third_party()
    with warnings.catch_warnings(record=True) as seen:
        for text in (
            "The `srun` command is available on your system but is not used.",
            "No positive samples in targets, true positive value should be meaningless",
            "a warning that says something about the run",
        ):
            warnings.warn(text, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a warning that says something about the run"]


def test_resuming_does_not_warn_about_its_own_folder(tmp_path, cache_dir):
    from medmtl.workflows.train import train

    tiny = TINY_PHANTOM + TINY_MODEL
    run = tmp_path / "run"
    train(compose_cfg(tiny + ["trainer.max_epochs=1"], run, cache_dir))
    last = run / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(
            compose_cfg(
                tiny + ["trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "n", cache_dir
            )
        )
    texts = [str(w.message) for w in seen]
    assert not [t for t in texts if "exists and is not empty" in t], texts
