"""data.augment_on=device: the batch's flips, affine warps and brightness/contrast equal
albumentations' transforms with the same parameters (within interpolation), the normalisation
equals the eval pipeline's, and a run trains with it; augmentations it lacks are refused."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from medmtl.data import device_augment as da
from medmtl.data.transforms import eval_transform
from medmtl.errors import ConfigError
from medmtl.settings.data import Augment, check_data

SIZE = (64, 96)  # h, w: not square, so that x and y cannot be confused


def _image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth grey image (interpolation differences stay small) and a lesion mask."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    small = rng.integers(0, 256, (h // 8, w // 8)).astype(np.float32)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    mask = np.zeros(SIZE, np.uint8)
    cv2.ellipse(mask, (w // 2 + 7, h // 2 - 5), (18, 11), 20, 0, 360, 1, -1)
    return image, mask


def _params(augment: Augment, seed: int, batch: int = 6) -> da.Params:
    gen = torch.Generator().manual_seed(seed)
    return da.draw(augment, batch, SIZE, generator=gen)


def _albumentations(image: np.ndarray, mask: np.ndarray, p: da.Params, i: int):
    """albumentations' pipeline order with image ``i``'s parameters fixed."""
    ops = []
    if p.hflip[i]:
        ops.append(A.HorizontalFlip(p=1))
    if p.vflip[i]:
        ops.append(A.VerticalFlip(p=1))
    if p.affine[i]:
        s, r = float(p.scale[i]), float(p.angle[i])
        tx, ty = int(p.shift[i, 0]), int(p.shift[i, 1])
        ops.append(A.Affine(scale=(s, s), rotate=(r, r), translate_px={"x": (tx, tx),
                            "y": (ty, ty)}, border_mode=cv2.BORDER_CONSTANT, p=1))  # fmt: skip
    if p.light[i]:
        c, b = float(p.alpha[i]) - 1, float(p.beta[i]) / 255
        ops.append(A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(c, c), p=1))
    out = A.Compose(ops)(image=image, mask=mask)
    return out["image"].astype(np.float32), out["mask"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_device_batch_equals_albumentations_with_the_same_parameters(seed):
    augment = Augment(hflip=0.5, vflip=0.5, affine=0.7, rotate=15, scale=0.15, translate=0.08,
                      brightness_contrast=0.6)  # fmt: skip
    p = _params(augment, seed)
    pairs = [_image(seed * 10 + i) for i in range(len(p.hflip))]
    images = torch.tensor(np.stack([im for im, _ in pairs]))[:, None].float()
    masks = torch.tensor(np.stack([m for _, m in pairs]))[:, None].float()
    got_images, got_masks = da.apply(images, masks, p)
    assert bool(p.affine.any()) and bool(p.hflip.any()) and bool(p.light.any())  # all exercised
    for i, (image, mask) in enumerate(pairs):
        want_image, want_mask = _albumentations(image, mask, p, i)
        got = got_images[i, 0].numpy()
        inside = np.ones(SIZE, bool)
        if p.affine[i]:  # the warp's outermost pixels differ in how the border is sampled
            inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False
        diff = np.abs(got - want_image)[inside]
        assert diff.mean() < 1.0 and np.quantile(diff, 0.99) < 4.0, (i, diff.mean(), diff.max())
        disagree = (got_masks[i, 0].numpy() > 0.5) != (want_mask > 0)
        assert disagree.mean() < 0.01, (i, disagree.mean())  # nearest neighbour at the edge
        assert want_mask.sum() > 0


def test_no_augmentation_leaves_the_batch_unchanged():
    p = _params(Augment(hflip=0, vflip=0, affine=0, brightness_contrast=0), 0)
    images = torch.rand(6, 1, *SIZE) * 255
    masks = (torch.rand(6, 1, *SIZE) > 0.5).float()
    out_images, out_masks = da.apply(images, masks, p)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)


@pytest.mark.parametrize("standardize", [False, True])
def test_normalise_equals_the_eval_pipeline(standardize):
    image, _ = _image(5)
    want = eval_transform(0.449, 0.226, standardize)(image=image[..., None])["image"].float()
    got = da.normalise(torch.tensor(image)[None, None].float(), 0.449, 0.226, standardize)[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_draw_keeps_albumentations_ranges():
    a = Augment(affine=1.0, rotate=10, scale=0.1, translate=0.05, brightness_contrast=1.0)
    p = _params(a, 3, batch=2000)
    assert p.affine.all() and p.light.all()
    assert p.angle.abs().max() <= 10 and (p.scale - 1).abs().max() <= 0.1
    assert (
        p.shift[:, 0].abs().max() <= 0.05 * SIZE[1] and p.shift[:, 1].abs().max() <= 0.05 * SIZE[0]
    )
    assert torch.equal(p.shift, p.shift.trunc())  # whole pixels
    assert (p.alpha - 1).abs().max() <= a.contrast_limit and p.beta.abs().max() <= 0.15 * 255
    assert 0.45 < float(_params(Augment(), 4, batch=2000).hflip.float().mean()) < 0.55


def test_augmentations_only_the_workers_have_are_refused():
    check_data({"augment_on": "device", "augment": {"hflip": 0.5, "affine": 0.3}})
    with pytest.raises(ConfigError, match=r"data.augment.gamma runs only in the loader workers"):
        check_data({"augment_on": "device", "augment": {"gamma": 0.3}})
    with pytest.raises(ConfigError, match="augment_on"):
        check_data({"augment_on": "gpu"})


SEEN: list[float] = []  # the largest |value| of each training batch the network got


class Peek:
    """A callback (Lightning calls its hooks by name) that looks at each training batch."""

    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class _Peek(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                SEEN.append(float(batch["image"].abs().max()))

        return _Peek()


def test_a_run_trains_with_device_augmentation(make_cfg):
    """The training batches reach the network augmented and normalised (not 0..255)."""
    from medmtl.workflows.train import train
    from tests.conftest import TINY_MODEL, TINY_PHANTOM

    SEEN.clear()
    cfg = make_cfg([*TINY_PHANTOM, *TINY_MODEL, "trainer.max_epochs=1", "data.augment_on=device",
                    "+trainer.limit_train_batches=2",
                    "+callbacks.peek._target_=tests.data.test_device_augment.Peek"])  # fmt: skip
    metrics = train(cfg)
    assert len(SEEN) == 2 and max(SEEN) < 20  # normalised: (x/255 - 0.449)/0.226 <= 2.44
    assert metrics["global_step"] == 2 and "test/seg_dice" in metrics
