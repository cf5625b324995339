"""The shift test: known answers on constructed features, storage in the network, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from medmtl.errors import ConfigError
from medmtl.models.shift import (
    ShiftReference,
    mmd_test,
    one_per_group,
    shift_record,
    shift_test,
)

D = 24


def _reference(rng, n_train=200, n_ref=60, dims=8) -> ShiftReference:
    return ShiftReference.fit(rng.normal(size=(n_train, D)), rng.normal(size=(n_ref, D)), dims)


def test_same_distribution_gives_uniform_p_values():
    """Under no shift the p-value is uniform (each seed a new reference and batch)."""
    p = []
    for seed in range(120):
        rng = np.random.default_rng(seed)
        ref = _reference(rng)
        p.append(shift_test([ref], rng.normal(size=(20, D)), permutations=199).p_value)
    p = np.array(p)
    assert kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p < 0.05) <= 0.12  # 5 % expected; 0.12 is 3 binomial sds above it
    assert np.mean(p > 0.5) >= 0.35


def test_a_constructed_shift_is_detected_and_sized():
    rng = np.random.default_rng(0)
    ref = _reference(rng)
    shift = np.zeros(D)
    shift[:4] = 1.0  # a moved mean in 4 of 24 directions
    moved = shift_test([ref], rng.normal(size=(30, D)) + shift)
    same = shift_test([ref], rng.normal(size=(30, D)))
    assert moved.shifted and moved.p_value < 0.01
    assert not same.shifted
    assert moved.mmd2 > same.mmd2 and moved.z > 3


def test_the_permutation_p_value_is_seeded_and_exact_for_a_fixed_batch():
    rng = np.random.default_rng(3)
    ref, batch = _reference(rng), rng.normal(size=(15, D))
    a = shift_test([ref], batch, seed=5)
    b = shift_test([ref], batch, seed=5)
    assert a.p_value == b.p_value and a.mmd2 == b.mmd2
    # the p-value counts the observed split among the permutations: never below 1/(P+1)
    worst = mmd_test(ref.sample, ref.project(batch + 50.0), permutations=99)
    assert worst["p_value"] == pytest.approx(1 / 100)


def test_the_unbiased_mmd_matches_its_formula():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(7, 3)) + 0.3
    got = mmd_test(x, y, permutations=99)
    z = np.concatenate([x, y])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    k = np.exp(-d2 / np.median(d2[np.triu_indices(len(z), 1)]))
    kxx, kyy, kxy = k[:12, :12], k[12:, 12:], k[:12, 12:]
    expect = (
        (kxx.sum() - np.trace(kxx)) / (12 * 11)
        + (kyy.sum() - np.trace(kyy)) / (7 * 6)
        - 2 * kxy.mean()
    )
    assert got["mmd2"] == pytest.approx(expect, rel=1e-9)


def test_an_ensemble_combines_its_members_by_bonferroni():
    rng = np.random.default_rng(5)
    refs = [_reference(rng), _reference(rng)]
    batch = rng.normal(size=(20, 2, D))
    batch[:, 1, :3] += 1.5  # only the second member's features moved
    result = shift_test(refs, batch)
    ps = [m["p_value"] for m in result.members]
    assert result.p_value == pytest.approx(min(1.0, 2 * min(ps)))
    assert ps[1] < 0.01 < ps[0]
    assert result.to_dict()["reference_images"] == [60, 60]
    with pytest.raises(ConfigError, match="3 members for 2 references"):
        shift_test(refs, rng.normal(size=(20, 3, D)))
    with pytest.raises(ConfigError, match="no reference sample"):
        shift_test([], batch)


def test_near_copies_count_once():
    """The known failure and its mend: a batch of the reference's own distribution in which
    each image comes three times (with slight noise, as a re-crop would) is not exchangeable
    with the reference, and the plain test flags it far above its level; with the copies'
    groups it tests 10 distinct images and holds its level. A reference with copies is
    thinned the same way."""
    rng = np.random.default_rng(7)
    ref = _reference(rng)
    groups = np.repeat(np.arange(10), 3)
    plain, grouped = [], []
    for seed in range(40):
        r = np.random.default_rng(100 + seed)
        batch = np.repeat(r.normal(size=(10, D)), 3, axis=0) + 0.01 * r.normal(size=(30, D))
        plain.append(shift_test([ref], batch, permutations=199).shifted)
        test = shift_test([ref], batch, permutations=199, groups=groups)
        assert (test.images, test.distinct) == (30, 10)
        grouped.append(test.shifted)
    assert np.mean(plain) >= 0.5 and np.mean(grouped) <= 0.1
    assert shift_test([ref], batch, groups=groups).to_dict()["distinct"] == 10
    assert one_per_group([5, 3, 5, 3, 9], 5).tolist() == [0, 1, 4]
    assert one_per_group(None, 3).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="2 group ids for 3 images"):
        one_per_group([1, 2], 3)
    with pytest.raises(ConfigError, match="near copies of 1"):
        shift_test([ref], batch[:3], groups=[0, 0, 0])
    copies = np.repeat(rng.normal(size=(20, D)), 3, axis=0)
    train = rng.normal(size=(200, D))
    thinned = ShiftReference.fit(train, copies, 8, groups=np.repeat(np.arange(20), 3))
    assert thinned.size == 20


def test_the_reference_is_checked_and_round_trips():
    rng = np.random.default_rng(6)
    train = rng.normal(size=(200, D)) * np.linspace(0.5, 3, D)
    ref = ShiftReference.fit(train, rng.normal(size=(60, D)), 8)
    assert ref.components.shape == (8, D) and ref.sample.shape == (60, 8)
    # the projection whitens the training features: uncorrelated, unit variance
    cov = np.cov(ref.project(train), rowvar=False)
    np.testing.assert_allclose(cov, np.eye(8), atol=1e-8)
    back = ShiftReference.from_dict(ref.to_dict())
    np.testing.assert_allclose(back.sample, ref.sample, rtol=1e-6)
    with pytest.raises(ConfigError, match="24 dimensions"):
        ref.project(np.zeros((3, 5)))
    with pytest.raises(ConfigError, match="training and validation"):
        ShiftReference.fit(np.zeros((5, D)), np.zeros((1, D)), 4)
    with pytest.raises(ConfigError, match="at least 2 images"):
        mmd_test(ref.sample, ref.sample[:1])
    assert shift_record([ref]) == {"fitted": True, "reference_images": [60], "dims": [8],
                                   "alpha": 0.01}  # fmt: skip


def test_the_network_carries_its_reference_and_an_old_one_has_none():
    from medmtl.models.ensemble import EnsembleNet
    from medmtl.models.multitask import MultiTaskNet

    net = MultiTaskNet("Unet", "resnet18", None, 1, 3).eval()
    x = torch.randn(30, 1, 64, 64)
    with torch.no_grad():
        out = net(x)
    features = out["features"].numpy()
    assert features.shape == (30, 512)
    np.testing.assert_allclose(features, net.pooled_features(x).detach().numpy(), rtol=1e-5)
    assert net.shift_references() == []
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("shift_")}
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    net.set_shift_reference(ShiftReference.fit(features, features[:12], 4))
    # in place, at fixed sizes: weight averaging (EMA) and DDP swap and broadcast buffers
    assert {k: v.shape for k, v in net.state_dict().items()} == shapes
    fresh = MultiTaskNet("Unet", "resnet18", None, 1, 3)
    fresh.load_state_dict(net.state_dict())  # sizes come with the state
    got = fresh.shift_reference()
    assert got is not None and got.sample.shape == (12, 4)
    np.testing.assert_allclose(got.components, net.shift_reference().components)
    older = MultiTaskNet("Unet", "resnet18", None, 1, 3)
    older.load_state_dict(old)
    assert older.shift_reference() is None
    assert net.train()(x[:2])["features"] is None  # not computed while training
    ens = EnsembleNet([fresh.eval(), net.eval()])
    with torch.no_grad():
        stacked = ens(x[:3])["features"]
    assert stacked.shape == (3, 2, 512)
    assert len(ens.shift_references()) == 2
    assert EnsembleNet([fresh, older]).shift_references() == []  # not all members have one
    # more reference images than the network holds: a seeded subset; too many components: refused
    big = ShiftReference.fit(features, np.repeat(features, 20, axis=0), 4)
    assert big.size == 512
    with pytest.raises(ConfigError, match="does not fit this network"):
        net.set_shift_reference(
            ShiftReference(np.zeros(512), np.zeros((200, 512)), np.zeros((5, 200)))
        )
