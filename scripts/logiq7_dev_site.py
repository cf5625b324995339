"""Logiq 7 dev fold (BUS-BRA 5-fold-cv.csv kFold 1): N cases drawn by patient (seed), as a
site manifest (cases.csv), and the fold's other cases (rest.csv) to evaluate on; list.csv: all
the fold's images (what medmtl-predict label_order=true ranks).
With a label_order.csv, the patients come in the order of their best-ranked image instead.
BUS-BRA's root is BUSBRA_ROOT (its GE Logiq 7 part). docs/results.md, issue 43.
Run: python scripts/logiq7_dev_site.py <N> <seed> <out folder> [label_order.csv]"""

import csv
import os
import random
import sys
from pathlib import Path

root = Path(os.environ["BUSBRA_ROOT"])
n, seed, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
with open(root / "5-fold-cv.csv") as fh:
    folds = list(csv.DictReader(fh))
with open(root / "bus_data.csv") as fh:
    data = {r["ID"]: r for r in csv.DictReader(fh)}
fold1 = [r["ID"] for r in folds if r["kFold"] == "1"]
by_patient: dict[str, list[str]] = {}
for i in fold1:
    by_patient.setdefault(data[i]["Case"], []).append(i)
patients = sorted(by_patient)
random.Random(seed).shuffle(patients)
if len(sys.argv) > 4:  # the patients by the rank of their first image in the label order
    with open(sys.argv[4]) as fh:
        rank = {Path(r["file"]).stem: int(r["rank"]) for r in csv.DictReader(fh)}
    missing = [i for i in fold1 if i not in rank]
    if missing:
        sys.exit(f"{sys.argv[4]}: {len(missing)} dev-fold image(s) not ranked, e.g. {missing[0]}")
    patients.sort(key=lambda p: min(rank[i] for i in by_patient[p]))
chosen: list[str] = []
for p in patients:
    if len(chosen) >= n:
        break
    chosen += by_patient[p]


def row(i: str) -> dict:
    return {
        "image": str(root / "Images" / f"{i}.png"),
        "mask": str(root / "Masks" / f"mask_{i[4:]}.png"),
        "label": data[i]["Pathology"],
        "group": data[i]["Case"],
    }


lists = (("cases.csv", chosen), ("rest.csv", [i for i in fold1 if i not in chosen]),
         ("list.csv", fold1))  # fmt: skip
for name, ids in lists:
    with open(out / name, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mask", "label", "group"])
        w.writeheader()
        w.writerows(row(i) for i in ids)
print(len(chosen), len(fold1) - len(chosen))
