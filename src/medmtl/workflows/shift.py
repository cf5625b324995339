"""The shift test end to end (:mod:`medmtl.models.shift`): of a folder or list of images
(``medmtl-shift``), of the images ``medmtl-predict`` predicted, of the page's recent uploads
(:class:`RecentUploads`), and of an evaluated split with the share of random batches flagged
(``medmtl-eval shift.batches=[...]``).

Each path tests one image per group of near copies
(:func:`medmtl.data.duplicates.near_copies`: the thumbnail correlation medmtl's splits group
by), so that the same lesion imaged twice counts once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmtl.data.duplicates import near_copies
from medmtl.errors import ConfigError, DataError
from medmtl.models.shift import (
    ShiftReference,
    ShiftResult,
    as_members,
    require_references,
    shift_test,
)
from medmtl.settings.evaluation import ShiftPower
from medmtl.settings.train import (
    SHIFT_ALPHA,
    SHIFT_MIN_IMAGES,
    SHIFT_PERMUTATIONS,
    SHIFT_RECENT,
)

log = logging.getLogger(__name__)
SHIFT_JSON = "shift.json"


def describe(result: ShiftResult) -> str:
    """One line on a batch's shift test."""
    verdict = (
        f"unlike the training distribution (p < {result.alpha:g})"
        if result.shifted
        else f"no evidence of a shift at p < {result.alpha:g}"
    )
    copies = (
        f" ({result.distinct} distinct: near copies count once)"
        if result.distinct < result.images
        else ""
    )
    return (
        f"shift test of {result.images} image(s){copies}: {verdict}; p = {result.p_value:.4g}, "
        f"MMD² {result.mmd2:.4f} ({result.z:.1f} null SDs)"
    )


def write_result(path: Path, result: ShiftResult, extra: dict[str, Any] | None = None) -> Path:
    """``shift.json`` (atomically)."""
    from medmtl.reporting.summary import write_json

    write_json(path, {**result.to_dict(), **(extra or {})})
    return path


def shift_of_predictions(
    backend: Any, features: Sequence[np.ndarray], groups: Sequence[int], out: Path
) -> ShiftResult | None:
    """The shift test of ``medmtl-predict``'s predicted images (their ``features`` and
    near-copy ``groups``), written to ``out/shift.json``; None (and why, in the log) for a
    model without a reference or fewer than :data:`~medmtl.settings.train.SHIFT_MIN_IMAGES`
    distinct images."""
    if not getattr(backend, "shift_references", None):
        return None
    distinct = len(set(groups))
    if distinct < SHIFT_MIN_IMAGES:
        log.info("shift test: %d image(s) predicted, %d distinct; it needs %d or more, so none "
                 "was run.", len(features), distinct, SHIFT_MIN_IMAGES)  # fmt: skip
        return None
    result = shift_test(backend.shift_references, np.stack(features), groups=groups)
    write_result(out / SHIFT_JSON, result)
    return result


def _batches(
    backend: Any, files: Sequence[Path], batch_size: int, frame: int
) -> Iterable[tuple[np.ndarray, list[np.ndarray]]]:
    from medmtl.inference.core import load_for_model

    buf: list[Any] = []
    for path in files:
        try:
            buf.append(load_for_model(path, backend.settings, frame))
        except (DataError, OSError, ValueError, MemoryError) as exc:
            raise DataError(
                f"{path}: cannot be read for the shift test ({exc}); remove it or fix it."
            ) from exc
        if len(buf) == batch_size:
            yield _stacked(buf)
            buf = []
    if buf:
        yield _stacked(buf)


def _stacked(loaded: Sequence[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    batch = np.stack([li.model_input for li in loaded])[:, None].astype(np.float32)
    return batch, [li.thumb for li in loaded]


def image_features(
    backend: Any, files: Sequence[Path], batch_size: int = 8, frame: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(n, M, D) pooled features of every file (the image itself, no flip), and each file's
    near-copy thumbnail."""
    parts, thumbs = [], []
    for batch, batch_thumbs in _batches(backend, files, batch_size, frame):
        out = backend.run(batch)
        if out.get("features") is None:
            raise ConfigError("this model gives no pooled features; export it again.")
        parts.append(as_members(out["features"]))
        thumbs += batch_thumbs
    return np.concatenate(parts), thumbs


def batch_power(
    refs: Sequence[ShiftReference],
    features: np.ndarray,
    thumbs: Sequence[np.ndarray],
    power: ShiftPower,
    alpha: float = SHIFT_ALPHA,
    permutations: int = SHIFT_PERMUTATIONS,
) -> dict[str, Any]:
    """The test of all ``features`` and, for each size in ``power.batches``, the share of
    ``power.repeats`` random batches (drawn without replacement within a batch) flagged at
    ``alpha``, with its Wilson 95 % interval (the batches overlap, so the interval is
    narrower than for independent data sets). Near copies count once, found from ``thumbs``
    in each batch as a user's batch would be. ``shift/...`` entries for ``metrics.json``."""
    from scipy.stats import binomtest

    features = as_members(features)
    thumbs = list(thumbs)
    whole = shift_test(refs, features, alpha, permutations, groups=near_copies(thumbs))
    out: dict[str, Any] = {
        "shift/images": whole.images,
        "shift/distinct": whole.distinct,
        "shift/p_value": whole.p_value,
        "shift/mmd2": whole.mmd2,
        "shift/z": whole.z,
        "shift/alpha": alpha,
        "shift/reference_images": [r.size for r in refs],
    }
    rng = np.random.default_rng(power.seed)
    for size in power.batches:
        if size > len(features):
            raise ConfigError(
                f"shift.batches: a batch of {size} images from a split of {len(features)}; "
                "give smaller sizes."
            )
        flagged, distinct = 0, []
        for r in range(power.repeats):
            pick = rng.choice(len(features), size, replace=False)
            groups = near_copies([thumbs[i] for i in pick])
            test = shift_test(refs, features[pick], alpha, permutations, seed=r, groups=groups)
            flagged += test.shifted
            distinct.append(test.distinct)
        ci = binomtest(flagged, power.repeats).proportion_ci(method="wilson")
        out.update({
            f"shift/flagged_{size}": flagged / power.repeats,
            f"shift/flagged_{size}_ci": [float(ci.low), float(ci.high)],
            f"shift/distinct_{size}": float(np.mean(distinct)),
        })  # fmt: skip
        log.info("shift test: %d of %d random batches of %d images flagged at p < %g",
                 flagged, power.repeats, size, alpha)  # fmt: skip
    if power.batches:
        out["shift/repeats"] = power.repeats
    return out


class _NetFeatures:
    """A PyTorch model (checkpoint, run, ensemble or sweep folder) giving pooled features the
    way a predictor backend does."""

    def __init__(self, path: str | Path) -> None:
        from medmtl.preprocess.pipeline import PreprocessSettings
        from medmtl.workflows.members import open_model

        opened = open_model(path)
        self.net = opened.module.net.eval()
        self.settings = PreprocessSettings.from_dict(opened.data)
        self.shift_references = self.net.shift_references()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The pooled features of a (B, 1, S, S) batch, as a backend's ``run`` gives them."""
        import torch

        with torch.inference_mode():
            return {"features": self.net(torch.from_numpy(batch))["features"].double().numpy()}


def input_files(
    inp: Path, image_column: str = "image", group_column: str | None = None
) -> tuple[list[Path], list[tuple[Path, str]], list[str | None] | None]:
    """The image files of a file, a folder (recursively) or a list.csv, the files left out
    with the reason (hidden, not an image), and each file's ``group_column`` value (a list's
    patient or case id; None without one); a listed file that is missing is an error."""
    from medmtl.io.outputs import plan_files

    inp = inp.expanduser()
    if not inp.exists():
        raise DataError(f"{inp}: input not found.")
    group_of: dict[Path, str | None] | None = None
    if inp.suffix.lower() == ".csv":
        from medmtl.data.manifest import read_csv_rows

        needed = (image_column,) + ((group_column,) if group_column else ())
        _, rows = read_csv_rows(inp.resolve(), needed, "image list")
        listed = [inp.resolve().parent / r[image_column] for r in rows]
        if group_column:
            group_of = {p: r[group_column] or None for p, r in zip(listed, rows, strict=True)}
        plan = plan_files(listed, inp.parent, inp)
    else:
        if group_column:
            raise ConfigError(
                f"group_column={group_column}: groups come from a list.csv; {inp} is not one."
            )
        base = inp if inp.is_dir() else inp.parent
        plan = plan_files(sorted(inp.rglob("*")) if inp.is_dir() else [inp], base, base)
    if plan.missing:
        first, why = plan.missing[0]
        raise DataError(
            f"{inp}: {len(plan.missing)} listed image(s) not found, e.g. {first} ({why}); "
            "fix the list."
        )
    files = [src for src, _ in plan.items]
    groups = None if group_of is None else [group_of[f] for f in files]
    return files, plan.skipped, groups


def shift_of_input(settings: Any) -> tuple[ShiftResult, list[tuple[Path, str]]]:
    """``medmtl-shift``: the shift test of every image of ``settings.input`` against the
    model's reference (``shift.json`` at ``settings.out`` if given), and the files left out."""
    if settings.model:
        from medmtl.inference.onnx_backend import OnnxBackend

        backend: Any = OnnxBackend(settings.model, threads=settings.threads or None)
        name = settings.model
    else:
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)
        backend, name = _NetFeatures(settings.ckpt_path), settings.ckpt_path
    refs = require_references(backend.shift_references, str(name))
    files, skipped, given = input_files(
        Path(settings.input), settings.image_column, settings.group_column
    )
    if len(files) < 2:
        raise DataError(
            f"{settings.input}: {len(files)} image(s); the shift test needs 2 or more "
            f"({SHIFT_MIN_IMAGES} or more to find a moderate shift)."
        )
    features, thumbs = image_features(backend, files, settings.batch_size, settings.frame)
    result = shift_test(
        refs, features, settings.alpha, settings.permutations, settings.seed,
        near_copies(thumbs, given),
    )  # fmt: skip
    if settings.out:
        write_result(Path(settings.out), result, {
            "input": str(settings.input), "model": str(name),
            "left_out": [{"file": str(p), "reason": why} for p, why in skipped],
        })  # fmt: skip
    return result, skipped


class RecentUploads:
    """The page's shift test: the pooled features of the server's most recent uploads (at
    most ``size``, kept in memory only, with their near-copy thumbnails) tested together
    against the model's references; and the order in which to label them
    (:meth:`label_order`, from their file names and the model's doubt)."""

    def __init__(self, references: Sequence[ShiftReference], size: int = SHIFT_RECENT) -> None:
        import threading

        self.references = list(references)
        self.size = size
        self._uploads: deque[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = deque(maxlen=size)
        self._lock = threading.Lock()  # FastAPI runs the endpoints in a thread pool
        self._cached: dict[str, Any] | None = None

    def add(
        self,
        features: np.ndarray | None,
        thumb: np.ndarray | None,
        row: dict[str, Any] | None = None,
    ) -> None:
        """Remember one upload's pooled features (M, D), thumbnail and ``row`` (its ``file``
        name and the model's doubt: :func:`medmtl.inference.core.uncertainty_row`)."""
        if features is None or thumb is None or not self.references:
            return
        with self._lock:
            self._uploads.append((np.asarray(features), np.asarray(thumb), dict(row or {})))
            self._cached = None

    def label_order(self) -> dict[str, Any]:
        """The recent uploads in the order in which to label them
        (:func:`medmtl.workflows.label_order.label_order`)."""
        from medmtl.workflows.label_order import label_order

        with self._lock:
            kept = list(self._uploads)
        if not kept:
            return {"images": 0, "order": []}
        rows = [{"file": "", **row} for _, _, row in kept]
        features = np.stack([f for f, _, _ in kept])
        groups = near_copies([t for _, t, _ in kept])
        return {"images": len(kept), "order": label_order(rows, features, groups, self.references)}

    def clear(self) -> None:
        with self._lock:
            self._uploads.clear()
            self._cached = None

    def report(self) -> dict[str, Any]:
        """The window's size, and its test once it holds enough images (else why not)."""
        with self._lock:
            if self._cached is not None:
                return self._cached
            n = len(self._uploads)
            groups = near_copies([t for _, t, _ in self._uploads])
            distinct = len(set(groups))
            out: dict[str, Any] = {
                "fitted": bool(self.references),
                "images": n,
                "distinct": distinct,
                "needed": SHIFT_MIN_IMAGES,
                "window": self.size,
                "result": None,
            }
            if not self.references:
                out["text"] = "This model has no reference for the shift test."
            elif distinct < SHIFT_MIN_IMAGES:
                copies = f" ({n} uploads: near copies count once)" if distinct < n else ""
                out["text"] = (
                    f"Shift test of the recent uploads: {distinct} of the {SHIFT_MIN_IMAGES} "
                    f"distinct images it needs{copies}."
                )
            else:
                features = np.stack([f for f, _, _ in self._uploads])
                result = shift_test(self.references, features, groups=groups)
                out["result"] = result.to_dict()
                out["text"] = f"Recent uploads: {describe(result)}."
            self._cached = out
            return out
