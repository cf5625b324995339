"""Progressive resizing (data.progressive_resize): train small, finish at the input size."""

from __future__ import annotations

import pytest
import torch

from medmtl.errors import ConfigError
from medmtl.training.progressive import ProgressiveResize, resized_batch


def test_sizes_grow_in_steps_of_32_and_finish_at_the_input_size():
    p = ProgressiveResize.from_data(
        {"image_size": 160, "progressive_resize": {"start_size": 96, "fraction": 0.5}}
    )
    sizes = [p.size_at(e, 22) for e in range(22)]
    assert sizes == [96] * 6 + [128] * 5 + [160] * 11
    assert ProgressiveResize.from_data({"image_size": 160}).size_at(0, 22) == 160
    assert not ProgressiveResize.from_data(
        {"image_size": 160, "progressive_resize": {"start_size": None}}
    ).active


@pytest.mark.parametrize(
    ("setting", "match"),
    [({"start_size": 100}, "start_size=100: must be a positive multiple of 32"),
     ({"start_size": 160}, "must be smaller than data.image_size=160"),
     ({"start_size": 96, "fraction": 1.0}, "fraction=1.0: the share of the epochs")],
)  # fmt: skip
def test_bad_schedules_are_refused_in_one_line(setting, match):
    with pytest.raises(ConfigError, match=match):
        ProgressiveResize.from_data({"image_size": 160, "progressive_resize": setting})


def test_a_batch_resized_keeps_image_and_mask_aligned():
    image = torch.zeros(2, 1, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    image[:, :, 16:48, 8:40] = 1.0
    mask[:, :, 16:48, 8:40] = 1.0
    small_image, small_mask = resized_batch(image, mask, 32)
    assert small_image.shape == small_mask.shape == (2, 1, 32, 32)
    assert set(small_mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(small_mask[0, 0, 8:24, 4:20], torch.ones(16, 16))
    assert small_mask.sum() == 2 * 16 * 16
    # the image's square is where the mask's is (its edges smoothed by the anti-aliasing)
    assert torch.equal((small_image >= 0.5).float(), small_mask)
