"""Decode once and cache (keyed by content and settings); CLAHE; augmentation rules."""

from __future__ import annotations

import numpy as np
import pytest

import medmtl.data.cache as cache_mod
from medmtl.data.cache import load_cases
from medmtl.data.datamodule import MedDataModule
from medmtl.data.index import index_class_folders
from medmtl.data.phantom import ensure_phantom
from medmtl.data.transforms import train_transform
from medmtl.errors import ConfigError
from medmtl.preprocess.pipeline import PreprocessSettings

COUNTS = {"normal": 12, "benign": 14, "malignant": 14}


def load_clean(cases, settings, cache_dir, thumb_size=32):
    """Every case, none of them unusable."""
    items, problems = load_cases(cases, settings, cache_dir, thumb_size=thumb_size)
    assert problems == []
    return items


@pytest.fixture
def phantom_root(tmp_path):
    return ensure_phantom(tmp_path / "gen", seed=2, counts=COUNTS, size=64)


def test_cache_is_reused_and_keyed_by_content_and_settings(phantom_root, tmp_path, monkeypatch):
    cases = index_class_folders(phantom_root, ("normal", "benign", "malignant")).cases
    calls = []
    real = cache_mod.load_case
    monkeypatch.setattr(cache_mod, "load_case", lambda c, s, t=32: calls.append(c) or real(c, s, t))
    s = PreprocessSettings(image_size=32)
    first = load_clean(cases, s, tmp_path / "c")
    assert len(calls) == len(cases)
    second = load_clean(cases, s, tmp_path / "c")
    assert len(calls) == len(cases)  # all from the cache
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))
    load_clean(cases, PreprocessSettings(image_size=32, clahe=True), tmp_path / "c")
    assert len(calls) == 2 * len(cases)  # other settings, other entries
    # a changed file is decoded again, the others are not
    img = cases[0].image
    img.write_bytes(img.read_bytes())  # same content: still cached
    load_clean(cases, s, tmp_path / "c")
    assert len(calls) == 2 * len(cases)
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(img)
    load_clean(cases, s, tmp_path / "c")
    assert len(calls) == 2 * len(cases) + 1
    # the duplicate thumbnails are cached too: another thumbnail size is another entry
    small = load_clean(cases, s, tmp_path / "c", thumb_size=16)
    assert len(calls) == 3 * len(cases) + 1 and small[0].thumb.shape == (16, 16)


def test_clahe_preprocessing_changes_the_images(phantom_root, tmp_path):
    cases = index_class_folders(phantom_root, ("normal", "benign", "malignant")).cases[:3]
    plain = load_clean(cases, PreprocessSettings(image_size=64), None)
    eq = load_clean(cases, PreprocessSettings(image_size=64, clahe=True), None)
    assert not np.array_equal(plain[0].image, eq[0].image)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(plain, eq, strict=True))


def test_no_vertical_flip_by_default_and_clahe_augmentation():
    names = [type(t).__name__ for t in train_transform(64).transforms]
    assert "VerticalFlip" not in names and "HorizontalFlip" in names
    names = [type(t).__name__ for t in train_transform(64, clahe=0.5, vflip=0.5).transforms]
    assert "CLAHE" in names and "VerticalFlip" in names


def test_zoom_speckle_and_gamma_augmentation():
    """Wide zoom (random resized crop), speckle and gamma: same size out, mask still binary."""
    tf = train_transform(64, crop=1.0, crop_scale=0.3, speckle=1.0, gamma=1.0, hflip=0, affine=0)
    names = [type(t).__name__ for t in tf.transforms]
    assert {"RandomResizedCrop", "MultiplicativeNoise", "RandomGamma"} <= set(names)
    tf.set_random_seed(0)
    img = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 3, (64, 1))[..., None]
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 20:44] = 1
    out = tf(image=img, mask=mask)
    assert tuple(out["image"].shape) == (1, 64, 64) and out["mask"].shape == (64, 64)
    assert set(np.unique(np.asarray(out["mask"]))) <= {0, 1}
    assert np.asarray(out["mask"]).sum() > mask.sum()  # zoomed in: the lesion grew


def _drawn(tmp_path, **sampling) -> tuple[np.ndarray, np.ndarray]:
    """Shares of the classes drawn over 200 training epochs of a phantom with 12 normal, 60
    benign and 24 malignant images, and the images per class."""
    import torch

    dm = MedDataModule.from_config(
        dict(
            source="phantom",
            cache_dir=str(tmp_path / "c"),
            image_size=64,
            phantom={"seed": 2, "counts": {"normal": 12, "benign": 60, "malignant": 24},
                     "size": 64},
            **sampling,
        )
    )  # fmt: skip
    dm.setup()
    loader = dm.train_dataloader()
    torch.manual_seed(0)
    labels = np.array(loader.dataset.labels)
    picks = np.array([labels[i] for _ in range(200) for i in loader.sampler])
    assert len(list(loader.sampler)) == len(loader.dataset)  # an epoch keeps its length
    return np.bincount(picks, minlength=3) / len(picks), np.bincount(labels, minlength=3)


def test_balanced_sampling_draws_classes_equally(tmp_path):
    share, have = _drawn(tmp_path, balanced_sampling=True)
    assert np.allclose(share, 1 / 3, atol=0.05), share
    assert have[1] > 2 * have[0]


@pytest.mark.parametrize("balanced", [True, False])
def test_class_sampling_draws_a_class_more_often(tmp_path, balanced):
    share, have = _drawn(tmp_path, balanced_sampling=balanced, class_sampling={"malignant": 2.0})
    base = np.ones(3) if balanced else have.astype(float)
    expected = base * np.array([1.0, 1.0, 2.0])
    assert np.allclose(share, expected / expected.sum(), atol=0.04), share
    assert share[2] > (0.45 if balanced else 1.5 * have[2] / have.sum())


@pytest.mark.parametrize(
    ("setting", "match"),
    [({"cancer": 2}, "data.class_sampling.cancer: not a class"),
     ({"malignant": 0}, "data.class_sampling.malignant=0: a factor > 0"),
     ({"malignant": "x"}, "a factor > 0")],
)  # fmt: skip
def test_class_sampling_refuses_unknown_classes_and_bad_factors(tmp_path, setting, match):
    with pytest.raises(ConfigError, match=match):
        MedDataModule.from_config(
            dict(source="phantom", cache_dir=str(tmp_path / "c"), class_sampling=setting)
        )


def test_train_augmentation_keeps_image_and_mask_aligned(phantom_root, tmp_path):
    dm = MedDataModule.from_config(
        dict(
            source="phantom",
            cache_dir=str(tmp_path / "c"),
            image_size=64,
            phantom={"seed": 2, "counts": COUNTS, "size": 64},
            augment={"hflip": 1.0, "affine": 0.0, "brightness_contrast": 0.0},
        )
    )
    dm.setup()
    ds_train, ds_eval = dm.dataset("train", train=True), dm.dataset("train")
    i = next(i for i, lab in enumerate(ds_eval.labels) if lab != 0)
    a, b = ds_train[i], ds_eval[i]
    assert a["image"].shape == (1, 64, 64) and a["mask"].shape == (1, 64, 64)
    assert np.allclose(a["image"].numpy()[..., ::-1], b["image"].numpy(), atol=1e-5)
    assert np.array_equal(a["mask"].numpy()[..., ::-1], b["mask"].numpy())


def test_image_size_must_be_multiple_of_32(tmp_path):
    with pytest.raises(ConfigError, match="data.image_size=100.*try 96"):
        MedDataModule.from_config(dict(root=str(tmp_path), image_size=100))


def test_split_file_mismatch_is_an_error(phantom_root, tmp_path):
    from medmtl.errors import DataError

    dm = MedDataModule.from_config(
        dict(
            source="phantom",
            cache_dir=str(tmp_path / "gen"),
            image_size=32,
            phantom={"seed": 2, "counts": COUNTS, "size": 64},
        )
    )
    dm.setup()
    (phantom_root / "benign" / "benign (1).png").unlink()
    (phantom_root / "benign" / "benign (1)_mask.png").unlink()
    dm2 = MedDataModule.from_config(
        dict(
            source="phantom",
            cache_dir=str(tmp_path / "gen"),
            image_size=32,
            phantom={"seed": 2, "counts": COUNTS, "size": 64},
        )
    )
    with pytest.raises(DataError, match="split file does not match the data set"):
        dm2.setup()


def test_preprocess_settings_are_one_object_read_back_from_every_place(tmp_path):
    """The data module, a checkpoint's data config and ONNX metadata (old and new) all give
    the same PreprocessSettings through from_dict."""
    from medmtl.preprocess.pipeline import GREY_MEAN, GREY_STD, Conversion

    data_cfg = {
        "name": "x",
        "source": "phantom",
        "image_size": 96,
        "conversion": {"method": "percentile", "low": 1.0, "high": 99.0},
        "clahe": True,
        "clahe_clip_limit": 3.0,
        "clahe_tile_grid": 4,
        "dedup": {"threshold": 0.9, "thumb_size": 16},
        "cache_dir": str(tmp_path),
    }
    dm = MedDataModule.from_config(data_cfg)
    s = dm.preprocess
    assert s == PreprocessSettings(
        96, Conversion("percentile", None, None, 1.0, 99.0), True, 3.0, 4, GREY_MEAN, GREY_STD
    )
    assert PreprocessSettings.from_dict(s.to_dict()) == s  # checkpoint / ONNX round trip
    assert PreprocessSettings.from_dict(data_cfg) == s  # a checkpoint's stored data config
    assert "thumb_size" not in s.to_dict()  # duplicate search is the split's business
    assert dm.split_settings.thumb_size == 16 and dm.split_settings.dedup_threshold == 0.9
    # an ONNX model exported before: thumb_size inside, normalisation beside it
    old = {**s.to_dict(), "thumb_size": 16}
    old.pop("normalize")
    assert PreprocessSettings.from_dict(old) == s
    with pytest.raises(ConfigError, match="conversion: unknown key.*centre"):
        PreprocessSettings.from_dict({"conversion": {"centre": 40}})


def test_data_config_with_an_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="data.batchsize: not a data setting"):
        MedDataModule.from_config({"source": "phantom", "batchsize": 8})


def test_audit_finds_the_groups_the_split_keeps_together(phantom_root, tmp_path):
    """The audit uses the split's thumbnail size and threshold, so both find the same groups."""
    from medmtl.data.audit import audit
    from medmtl.data.duplicates import find_groups

    groups = {}
    for thumb in (4, 32):
        dm = MedDataModule.from_config(
            {
                "source": "folder",
                "root": str(phantom_root),
                "image_size": 32,
                "dedup": {"threshold": 0.9, "thumb_size": thumb},
                "split_file": str(tmp_path / f"split{thumb}.json"),
                "cache_dir": str(tmp_path / "c"),
            }
        )
        dm.setup()
        report = audit(dm.index, None, dm.split_settings)
        split_groups = find_groups([it.thumb for it in dm.items], 0.9).group_of
        assert report.groups.group_of == split_groups == dm.groups
        groups[thumb] = split_groups
    assert groups[4] != groups[32]  # the thumbnail size matters, so the test means something


def test_a_small_training_split_keeps_its_batches_under_ddp(tmp_path):
    """28 training images, batch 16: one process drops the last 12; two DDP ranks see 14
    each and must keep them (dropping them left the ranks without any batch)."""
    from types import SimpleNamespace

    dm = MedDataModule.from_config(
        {
            "source": "phantom",
            "cache_dir": str(tmp_path / "c"),
            "image_size": 32,
            "batch_size": 16,
            "phantom": {
                "seed": 2,
                "counts": {"normal": 10, "benign": 15, "malignant": 15},
                "size": 64,
            },
        }
    )
    dm.setup()
    assert dm.split.count("train") == 28
    assert dm.train_dataloader().drop_last
    dm.trainer = SimpleNamespace(world_size=2)
    assert not dm.train_dataloader().drop_last


def _multi(tmp_path, **settings):
    from medmtl.data.build import datamodule_from_config

    def phantom(seed: int, counts: dict) -> dict:
        return {"source": "phantom", "phantom": {"seed": seed, "counts": counts, "size": 64}}

    return datamodule_from_config({
        "source": "multi", "name": "multi", "classes": ["normal", "benign", "malignant"],
        "sets": {"source": phantom(2, {"normal": 12, "benign": 60, "malignant": 24}),
                 "site": phantom(3, {"normal": 12, "benign": 12, "malignant": 12})},
        "image_size": 64, "cache_dir": str(tmp_path / "c"), **settings,
    })  # fmt: skip


def test_set_sampling_gives_a_small_data_set_its_share_of_the_draws(tmp_path):
    """A new scanner's 36 images beside 96 replayed ones: data.set_sampling={site: 0.5} draws
    half of every epoch from them; with class_sampling, each set keeps its classes' shares."""
    import torch

    for class_sampling in (None, {"malignant": 2.0}):
        dm = _multi(tmp_path, set_sampling={"site": 0.5}, class_sampling=class_sampling)
        dm.setup()
        loader = dm.train_dataloader()
        names = np.array([c.dataset for c in dm.cases("train")])
        labels = np.array(loader.dataset.labels)
        torch.manual_seed(0)
        picks = np.array([i for _ in range(200) for i in loader.sampler])
        assert len(list(loader.sampler)) == len(names)  # an epoch keeps its length
        assert (names == "site").mean() < 0.3  # by size it would get 27 %
        assert np.mean(names[picks] == "site") == pytest.approx(0.5, abs=0.02)
        source = picks[names[picks] == "source"]
        have = np.bincount(labels[names == "source"], minlength=3).astype(float)
        if class_sampling:
            have[2] *= 2
        drawn = np.bincount(labels[source], minlength=3) / len(source)
        assert np.allclose(drawn, have / have.sum(), atol=0.03), drawn


@pytest.mark.parametrize(
    ("setting", "match"),
    [({"elsewhere": 0.5}, "data.set_sampling.elsewhere: not a data set trained on"),
     ({"site": 1.5}, r"data.set_sampling.site=1.5: a share between 0 and 1"),
     ({"site": "x"}, "a share between 0 and 1"),
     ({"site": 0.5, "source": 0.4}, "they must sum to 1 when every data set is named")],
)  # fmt: skip
def test_set_sampling_refusals(tmp_path, setting, match):
    with pytest.raises(ConfigError, match=match):
        _multi(tmp_path, set_sampling=setting)
