"""Every job of a study sweep rehearsed at its full size on this machine's CPU.

A rehearsal composes each job of a study (``experiment=<study>``, the sweep's own parameters)
with ``profile=gpu`` exactly as ``medmtl-train -m`` would, and runs the real training function
on it with three changes only: the CPU in fp32 instead of the GPU, one epoch of two training
steps, and about ``2 x batch + 8`` images per split (so that the validation and test splits are
one evaluation batch or two). The model, input size, batch, loss, optimizer, metrics,
calibration, test and record path are the job's own. Weights that must be downloaded and
cannot be are replaced by a random start (the table says so).

While it trains, :class:`Measure` counts the FLOPs of the first training step and of the first
validation batch (:func:`medmtl.training.flops.flop_counter`: matrix products, convolutions
and attention, 2 per multiply-add) and tracks the tensor memory of the second training step at the study's batch
(``torch.distributed._tools.mem_tracker``: parameters, gradients, optimizer state,
activations and temporaries; what a GPU holds in fp32, without the allocator's slack).

Jobs whose composed config is the same but for the study's name (table_arch_backbone is part
of table_arch_backbone_all) run once; the table lists each under every study.
"""

from __future__ import annotations

import csv
import functools
import gc
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from medmtl.errors import ConfigError, MedmtlError
from medmtl.io.files import atomic_write_text
from medmtl.settings.commands import STUDIES
from medmtl.training.flops import flop_counter

log = logging.getLogger(__name__)

# what a rehearsal changes in a job; everything else is the job's own
REHEARSAL = (
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32-true",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "data.num_workers=0",
    "+callbacks.rehearsal._target_=medmtl.workflows.rehearse.Measure",
    "~callbacks.progress_bar",
)
# keys that name a job but do not change what it computes
NAMING_KEYS = ("task_name", "tags", "paths", "hydra")


class Measure(Callback):
    """FLOPs of the first training step and validation batch, tensor memory of the second
    training step, the network's parameters; written to ``<run>/rehearsal.json``."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._mode: Any = None

    def _enter(self, mode: Any) -> None:
        self._mode = mode
        mode.__enter__()

    def _leave(self) -> Any:
        mode, self._mode = self._mode, None
        mode.__exit__(None, None, None)
        return mode

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            self.values["params"] = sum(p.numel() for p in pl_module.parameters())
            self.values["batch"] = int(batch["image"].shape[0])
            self.values["input"] = list(batch["image"].shape[1:])
            self._enter(flop_counter())
            self._start = time.perf_counter()
        elif batch_idx == 1:
            from torch.distributed._tools.mem_tracker import MemTracker

            tracker = MemTracker()
            tracker.track_external(pl_module, *trainer.optimizers)
            self._enter(tracker)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if self._mode is None:
            return
        n = int(batch["image"].shape[0])
        if batch_idx == 0:
            seconds = time.perf_counter() - self._start
            flops = self._leave().get_total_flops()
            self.values["train_gflops_per_image"] = round(flops / n / 1e9, 2)
            self.values["first_step_s"] = round(seconds, 2)
        elif batch_idx == 1:
            peak = self._leave().get_tracker_snapshot("peak")
            total = sum(dev.get("Total", 0) for dev in peak.values())
            self.values["peak_train_mib"] = round(total / 2**20, 1)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:  # fmt: skip
        if batch_idx == 0 and "forward_gflops_per_image" not in self.values:
            self._enter(flop_counter())

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if self._mode is not None and batch_idx == 0:
            n = int(batch["image"].shape[0])
            self.values["forward_gflops_per_image"] = round(
                self._leave().get_total_flops() / n / 1e9, 2
            )

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self._mode is not None:  # a step that raised: leave the mode
            self._leave()
        path = Path(trainer.default_root_dir) / "rehearsal.json"
        atomic_write_text(path, json.dumps(self.values, indent=1))


# what a rehearsal measures of a job; a job that computes the same shares them
MEASURES = ("params_m", "batch", "image_size", "forward_gflops", "train_gflops", "peak_train_mib")
INTEGERS = ("batch", "image_size")


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


@dataclass
class Cell:
    """One job of a study and what its rehearsal found."""

    study: str
    job: int
    overrides: list[str]
    status: str = "not run"  # pass | fail | same as <study> #<job>
    reason: str = ""
    weights: str = ""
    params_m: float | None = None
    batch: int | None = None
    image_size: int | None = None
    forward_gflops: float | None = None  # per image
    train_gflops: float | None = None  # per image, forward + backward
    peak_train_mib: float | None = None  # a training step at the study's batch
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.study} #{self.job}"

    def take_measures(self, other: Cell) -> None:
        """``other``'s measurements (a job that computes the same)."""
        for name in MEASURES:
            setattr(self, name, getattr(other, name))

    @classmethod
    def from_row(cls, row: dict[str, str], overrides: list[str]) -> Cell:
        """A passed job as :func:`write_table` wrote it in ``rehearsal.csv``."""
        cell = cls(row["study"], int(row["job"]), overrides, row["status"], row["reason"],
                   row["weights"], seconds=_number(row["seconds"]))  # fmt: skip
        for name in MEASURES:
            value = _number(row[name])
            setattr(cell, name, int(value) if name in INTEGERS and value is not None else value)
        return cell

    def label(self) -> str:
        """The job's sweep parameters as a short text."""
        return " ".join(self.overrides) or "(the study's one job)"


def study_jobs(study: str, profile: str = "gpu") -> list[list[str]]:
    """The jobs of ``experiment=<study>``'s sweep as override lists, in Hydra's order."""
    return [list(job) for job in _sweep(study, profile)]


@functools.cache
def _sweep(study: str, profile: str) -> tuple[tuple[str, ...], ...]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from medmtl.config import compose

    if study not in STUDIES:
        raise ConfigError(f"studies={study}: not a study sweep; one of {', '.join(STUDIES)}.")
    cfg = compose("train", [f"experiment={study}", f"profile={profile}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params or {}, resolve=False)
    lines = [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(lines)
    batches = BasicSweeper.split_arguments(parsed, None)
    return tuple(tuple(job) for batch in batches for job in batch)


def _matches(text: str, overrides: Sequence[str]) -> bool:
    """``key=value`` names one override exactly; a text without '=' is found inside one."""
    if "=" in text:
        return text in overrides
    return any(text in o for o in overrides)


def select(cells: list[Cell], match: Sequence[str], limit: int | None) -> list[Cell]:
    """The cells that match every text of ``match`` (:func:`_matches`); at most ``limit`` of
    each study."""
    kept, per_study = [], {}
    for cell in cells:
        if not all(_matches(m, cell.overrides) for m in match):
            continue
        per_study[cell.study] = per_study.get(cell.study, 0) + 1
        if limit is None or per_study[cell.study] <= limit:
            kept.append(cell)
    return kept


def _compose(cell: Cell, profile: str, run_dir: Path) -> tuple[Any, str]:
    """The job's config as a rehearsal runs it, and the weights it starts from here."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from medmtl.config import compose

    overrides = [f"experiment={cell.study}", f"profile={profile}", *cell.overrides, *REHEARSAL]
    cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # the run's explicit overrides, as in a real job
    random_start, weights = _weights_here(cfg)
    with open_dict(cfg):
        cfg.data.subset = 2 * int(cfg.data.batch_size) + 8  # one or two evaluation batches
        if random_start:
            cfg.model.encoder.weights = None
        cfg.paths.output_dir = str(run_dir)
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg, weights


def identity(cfg: Any) -> str:
    """What a job computes: its resolved config without the keys that only name it (and its
    run folder, which checkpoints and the trainer write to, as ``<run>``)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True)
    run_dir = str(values["paths"]["output_dir"])
    for key in NAMING_KEYS:
        values.pop(key, None)
    return json.dumps(values, sort_keys=True, default=str).replace(run_dir, "<run>")


def _weights_here(cfg: Any) -> tuple[bool, str]:
    """Whether a rehearsal here starts from random weights instead of the job's, and what it
    starts from."""
    from medmtl.workflows.build import net_settings

    net = net_settings(cfg)
    wanted = net.encoder_weights
    if wanted and not _downloadable(net.encoder, str(wanted)):
        return True, f"random ({wanted} cannot be downloaded here)"
    return False, str(wanted or "random")


@functools.cache
def _downloadable(encoder: str, weights: str) -> bool:
    # once per encoder: the check builds the encoder and may ask the hub
    from medmtl.models.weights import check_downloadable

    try:
        check_downloadable(encoder, weights)
    except ConfigError:
        return False
    return True


NOT_YET = "not rehearsed yet"


def rehearse_cell(
    cell: Cell, profile: str, out: Path, seen: dict[str, Cell], train_new: bool = True
) -> Cell:
    """Rehearse one job in ``out/<study>/<job>``; a job the same as one already rehearsed
    (``seen``) takes that one's results. ``train_new=False``: a job not rehearsed yet is only
    marked so (:data:`NOT_YET`)."""
    from medmtl.workflows.build import check_train_values
    from medmtl.workflows.train import train

    run_dir = out / cell.study / str(cell.job)
    start: float | None = time.time()
    try:
        cfg, cell.weights = _compose(cell, profile, run_dir)
        check_train_values(cfg)
        key = identity(cfg)
        if key in seen and (seen[key].study, seen[key].job) == (cell.study, cell.job):
            vars(cell).update(vars(seen[key]))  # this job passed in an earlier rehearsal
            start = None  # its own time stays
            return cell
        if key in seen:
            twin = seen[key]
            cell.take_measures(twin)
            cell.reason = twin.reason
            start = None  # nothing of its own was run: its time is its twin's
            cell.status = twin.status if twin.status != "pass" else f"pass (= {twin.name})"
            return cell
        if not train_new:
            cell.status, start = NOT_YET, None
            return cell
        seen[key] = cell
        train(cfg)
        measured = json.loads((run_dir / "rehearsal.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        missing = [k for k in ("train_gflops_per_image", "peak_train_mib",
                               "forward_gflops_per_image") if k not in measured]  # fmt: skip
        if missing:
            raise ConfigError(f"the rehearsal did not measure {', '.join(missing)}")
        if not any(k.startswith("test/") for k in metrics):
            raise ConfigError("metrics.json has no test metrics")
        cell.params_m = round(measured["params"] / 1e6, 2)
        cell.batch = int(measured["batch"])
        cell.image_size = int(measured["input"][-1])
        cell.forward_gflops = measured["forward_gflops_per_image"]
        cell.train_gflops = measured["train_gflops_per_image"]
        cell.peak_train_mib = measured["peak_train_mib"]
        cell.status = "pass"
    except Exception as exc:  # noqa: BLE001  (each cell reports its own failure, the rest go on)
        said = str(exc).strip().splitlines()
        cell.status = "fail"
        cell.reason = (
            said[0]
            if isinstance(exc, MedmtlError) and said
            else (f"{type(exc).__name__}: {said[0] if said else ''}")
        )
        log.error("%s failed: %s", cell.name, cell.reason)
    finally:
        if start is not None:
            cell.seconds = round(time.time() - start, 1)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # hundreds of MB a job
        gc.collect()
    return cell


def rehearse(
    studies: Sequence[str],
    out: Path,
    profile: str = "gpu",
    match: Sequence[str] = (),
    limit: int | None = None,
    train_new: bool = True,
) -> list[Cell]:
    """Rehearse the selected jobs of ``studies``; writes ``rehearsal.csv`` and ``rehearsal.md``
    in ``out`` after every job (a stopped rehearsal keeps what it measured, and one started
    again into the same ``out`` goes on from there: :func:`passed_before`). ``train_new=False``
    trains nothing: the table of what earlier rehearsals into ``out`` found."""
    cells = [Cell(s, i, job) for s in studies for i, job in enumerate(study_jobs(s, profile))]
    cells = select(cells, match, limit)
    if not cells:
        raise ConfigError(f"match={list(match)}: no job of {', '.join(studies)} matches.")
    seen = passed_before(out, profile)
    earlier = list(seen.values())
    for n, cell in enumerate(cells, 1):
        log.info("rehearsal %d/%d: %s %s", n, len(cells), cell.name, cell.label())
        rehearse_cell(cell, profile, out, seen, train_new)
        done = {(c.study, c.job) for c in cells[:n]}
        # an earlier pass not reached yet stays in the table: a stop now loses nothing
        write_table([*cells[:n], *(c for c in earlier if (c.study, c.job) not in done)], out,
                    profile)  # fmt: skip
    return cells


def passed_before(out: Path, profile: str) -> dict[str, Cell]:
    """The jobs an earlier rehearsal into ``out`` passed (its ``rehearsal.csv``), by what they
    compute: a rehearsal started again into the same folder goes on where it stopped."""
    table = out / "rehearsal.csv"
    if not table.exists():
        return {}
    try:
        with table.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("status") == "pass"]
        seen = {}
        for row in rows:
            study, job = row["study"], int(row["job"])
            cell = Cell.from_row(row, study_jobs(study, profile)[job])
            seen[identity(_compose(cell, profile, out / study / str(job))[0])] = cell
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise ConfigError(
            f"{table}: cannot go on from it ({type(exc).__name__}: {exc}); give another out= "
            "or move the folder away."
        ) from None
    return seen


COLUMNS = ("study", "job", "parameters", "status", "reason", "weights", "params_m", "batch",
           "image_size", "forward_gflops", "train_gflops", "peak_train_mib", "seconds")  # fmt: skip


def write_table(cells: Sequence[Cell], out: Path, profile: str) -> tuple[Path, Path]:
    """``rehearsal.csv`` (every column) and ``rehearsal.md`` (the table for the docs)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in cells:
        d = asdict(c)
        d["parameters"] = c.label()
        rows.append({k: d.get(k) for k in COLUMNS})
    csv_path = out / "rehearsal.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)
    md = out / "rehearsal.md"
    atomic_write_text(md, markdown(cells, profile))
    return csv_path, md


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(cells: Sequence[Cell], profile: str) -> str:
    """The rehearsal table: one row per job, passes counted above it."""
    passed = sum(c.status.startswith("pass") for c in cells)
    waiting = sum(c.status == NOT_YET for c in cells)
    lines = [
        f"{passed} of {len(cells)} jobs pass"
        + (f", {waiting} not rehearsed yet" if waiting else "")
        + f" (profile={profile}; GFLOPs per image, memory of a training step at the study's "
        "batch in fp32).",
        "",
        "| study | job | parameters | weights | params (M) | batch × px | GFLOPs fwd | GFLOPs "
        "train | peak MiB | s | result |",
        "|---|---:|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for c in cells:
        size = f"{c.batch} × {c.image_size}" if c.batch else "–"
        result = c.status if not c.reason else f"{c.status}: {c.reason}"
        lines.append(
            f"| {c.study} | {c.job} | {c.label()} | {c.weights} | {_num(c.params_m, 2)} | {size} "
            f"| {_num(c.forward_gflops)} | {_num(c.train_gflops)} | {_num(c.peak_train_mib, 0)} "
            f"| {_num(c.seconds, 0)} | {result} |"
        )
    return "\n".join(lines) + "\n"


def cost_table(rehearsal_csv: Path, profile: str = "gpu") -> str:
    """The GPU cost of each study (:mod:`medmtl.reporting.gpu_cost`) from a rehearsal's CSV,
    with BUSI's committed split sizes and the profile's epochs."""
    from medmtl.config import compose
    from medmtl.reporting.gpu_cost import cost_markdown

    cfg = compose("train", ["data=busi", f"profile={profile}"])
    try:
        counts = json.loads(Path(cfg.data.split_file).read_text())["counts"]
        with Path(rehearsal_csv).open(newline="") as f:
            rows = list(csv.DictReader(f))
        missing = [c for c in ("study", "train_gflops", "forward_gflops", "peak_train_mib")
                   if rows and c not in rows[0]]  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{rehearsal_csv}: cannot read it with the split's counts ({exc})."
        ) from None
    if not rows or missing:
        raise ConfigError(
            f"{rehearsal_csv}: not a rehearsal.csv (no rows, or no {', '.join(missing)} column); "
            "give the file medmtl-rehearse wrote."
        )
    train, val = (sum(counts[s].values()) for s in ("train", "val"))
    return cost_markdown(rows, train, val, int(cfg.trainer.max_epochs))
