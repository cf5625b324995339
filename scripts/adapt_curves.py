"""Issue 43, item 5: how a BUSI model gains on the GE Logiq 7 with N of its labelled cases.

For each N and draw, a site of N Logiq 7 dev-fold (fold 1) cases, by patient
(scripts/logiq7_dev_site.py): "random", patients shuffled with the draw's seed; "chosen", the
patients in the order medmtl-predict label_order=true gives the source model's predictions of
the whole dev fold (one order; its draws differ in the seed of the site's split). Then
medmtl-adapt (its defaults), and medmtl-eval of the adapted ensemble on the Logiq 7 test folds
2-5 (never adapted on) and on the dev fold's cases not drawn; BUSI test before and after from
the adapted ensemble's own evaluation. N=0 is the source. Every step is skipped when its
result exists, so the script can be run again after an interruption.

<out>/curves.csv: a row per run; <out>/curves.md: per point the mean over draws with the
t-interval of the mean (one draw: the image bootstrap), and each run's image-bootstrap CI.

Choosing the adaptation's settings on the dev fold only: --dev-only (no test fold; no chosen
order unless --chosen-draws is given) with --adapt key=value ... (medmtl-adapt's options), one
<out> per setting.

Run (BUSI_ROOT, BUSBRA_ROOT set; the venv's commands on PATH):
  python scripts/adapt_curves.py <source ensemble folder> <out> [--n 25 50 100]
      [--draws 3] [--chosen-draws 1] [--adapt epochs=8 lr=1e-3] [--dev-only]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from medmtl.reporting.per_image import read_predictions
from medmtl.reporting.statistics import bootstrap_ci, mean_ci

HERE = Path(__file__).resolve().parent
LOGIQ7_TEST = ["data=busbra", "split=test", "data.busbra.test_fold=[2,3,4,5]"]
# (label, metric key without split, file)
SHOWN = [
    ("Logiq 7 lesion Dice", "seg_dice_lesion", "logiq7"),
    ("lesions left empty", "empty_lesion_rate", "logiq7"),
    ("B-vs-M AUC", "cls_auc", "logiq7"),
    ("coverage", "conformal_coverage", "logiq7"),
    ("coverage, malignant", "conformal_coverage_malignant", "logiq7"),
    ("ECE", "cls_ece", "logiq7"),
    ("dev lesion Dice", "seg_dice_lesion", "dev"),
    ("dev AUC", "cls_auc", "dev"),
    ("dev coverage", "conformal_coverage", "dev"),
    ("BUSI accuracy", "cls_acc", "busi"),
    ("BUSI lesion Dice", "seg_dice_lesion", "busi"),
]


def run(cmd: list[str], log: Path) -> None:
    """One step, its output appended to ``log``; stop at the first failure."""
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")


def evaluate(model: Path, out: Path, data: list[str], log: Path) -> Path:
    if not (out / "metrics.json").is_file():
        run(["medmtl-eval", f"ckpt_path={model}", *data, "figures=false",
             f"hydra.run.dir={out}"], log)  # fmt: skip
    return out


def dev_data(site: Path) -> list[str]:
    return ["data=manifest", f"data.manifest={site / 'rest.csv'}", "data.name=logiq7_dev_rest",
            "data.classes=[benign,malignant]", f"data.split_file={site / 'rest_split.json'}",
            "split=all"]  # fmt: skip


def scores(folder: Path, split: str) -> dict[str, float]:
    """The run's metrics on ``split`` and each one's image-bootstrap 95 % CI."""
    metrics = json.loads((folder / "metrics.json").read_text())
    found = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{split}/")}
    per = read_predictions(folder / f"predictions_{split}.csv")  # the data set's classes
    keys = sorted({k for _, k, _ in SHOWN})
    for k, ci in bootstrap_ci(per, keys).items():
        found[f"{k}_low"], found[f"{k}_high"] = ci.low, ci.high
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="the source ensemble folder (BUSI recipe)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--chosen-draws", type=int, default=None, help="1 (0 with --dev-only)")
    ap.add_argument("--adapt", nargs="*", default=[], help="medmtl-adapt options, key=value")
    ap.add_argument("--dev-only", action="store_true", help="the dev fold only: no test fold")
    args = ap.parse_args()
    if args.chosen_draws is None:
        args.chosen_draws = 0 if args.dev_only else 1
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "steps.log"
    source = args.source.resolve()
    # the source: the dev fold ranked for labelling, and its scores at N = 0
    pool = out / "pool"
    if not (pool / "list.csv").is_file():
        run([sys.executable, str(HERE / "logiq7_dev_site.py"), "0", "0", str(pool)], log)
    onnx = out / "source.onnx"
    order = pool / "order" / "label_order.csv"
    if args.chosen_draws and not onnx.is_file():
        run(["medmtl-ensemble", str(source.parent), f"out={out / 'source_ensemble'}",
             f"export={onnx}", "tta=true", "gate=tune", "target_sensitivity=0.95"], log)  # fmt: skip
    if args.chosen_draws and not order.is_file():
        run(["medmtl-predict", f"model={onnx}", f"input={pool / 'list.csv'}",
             f"out={pool / 'order'}", "label_order=true"], log)  # fmt: skip
    rows = []
    zero = {"dev": scores(evaluate(source, out / "n0" / "dev", dev_data(pool), log), "all")}
    if not args.dev_only:
        zero["logiq7"] = scores(evaluate(source, out / "n0" / "logiq7", LOGIQ7_TEST, log), "test")
        zero["busi"] = json_split(source, "test")
    rows.append(flat("source", 0, 0, zero, None))
    # N by N, as given (the first one first: its runs are the goal's), then the runs an
    # earlier call of the script finished in <out> (all of them are in the tables)
    plan = [(how, n, d) for n in args.n
            for how, draws in (("random", args.draws), ("chosen", args.chosen_draws))
            for d in range(draws)]  # fmt: skip
    for done in sorted(out.glob("*/n*_d*/adapted/adapt.json")):
        n, d = done.parent.parent.name[1:].split("_d")
        if (done.parents[2].name, int(n), int(d)) not in plan:
            plan.append((done.parents[2].name, int(n), int(d)))
    for how, n, draw in plan:
        here = out / how / f"n{n}_d{draw}"
        site = here / "site"
        if not (site / "cases.csv").is_file():
            extra = [str(order)] if how == "chosen" else []
            run([sys.executable, str(HERE / "logiq7_dev_site.py"), str(n), str(draw), str(site),
                 *extra], log)  # fmt: skip
        adapted = here / "adapted"
        if not (adapted / "adapt.json").is_file():
            run(["medmtl-adapt", f"model={source}", f"site={site / 'cases.csv'}",
                 f"out={adapted}", f"seed={draw}", *args.adapt], log)  # fmt: skip
        record = json.loads((adapted / "adapt.json").read_text())
        model = Path(record["model"])
        found = {"dev": scores(evaluate(model, here / "dev", dev_data(site), log), "all")}
        if not args.dev_only:
            found["logiq7"] = scores(evaluate(model, here / "logiq7", LOGIQ7_TEST, log), "test")
            found["busi"] = json_split(model, "test")
        rows.append(flat(how, n, draw, found, record))
        write(out, rows)
        print(f"{how} N={n} draw {draw}: done", flush=True)
    write(out, rows)


def json_split(folder: Path, split: str) -> dict[str, float]:
    metrics = json.loads((folder / "metrics.json").read_text())
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{split}/")}


def flat(how: str, n: int, draw: int, found: dict, record: dict | None) -> dict:
    row: dict = {"order": how, "n": n, "draw": draw}
    if record is not None:
        row["learned_from"] = len(record["site"]["learned_from"])
        row["held_back"] = len(record["site"]["held_back"])
        row["wall_time_s"] = record["wall_time_s"]
    for where, metrics in found.items():
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[f"{where}/{k}"] = v
    return row


def write(out: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "curves.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| order | N | runs | " + " | ".join(label for label, _, _ in SHOWN) + " |",
             "|---|---|---|" + "---|" * len(SHOWN)]  # fmt: skip
    points = list(dict.fromkeys((r["order"], r["n"]) for r in rows))
    for how, n in points:
        group = [r for r in rows if (r["order"], r["n"]) == (how, n)]
        cells = []
        for _, key, where in SHOWN:
            values = [r.get(f"{where}/{key}") for r in group]
            values = [v for v in values if v is not None]
            if not values:
                cells.append("–")
            elif len(values) > 1:
                mean, _, ci = mean_ci(values)
                cells.append(f"{mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
            else:
                low, high = (group[0].get(f"{where}/{key}_{e}") for e in ("low", "high"))
                ci = "" if low is None else f" [{low:.3f}, {high:.3f}]"
                cells.append(f"{values[0]:.3f}{ci}")
        lines.append(f"| {how} | {n} | {len(group)} | " + " | ".join(cells) + " |")
    (out / "curves.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
