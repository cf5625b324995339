"""Conformal answer sets: coverage within binomial bounds, class by class, and their records."""

from __future__ import annotations

import numpy as np
import pytest

from medmtl.errors import ConfigError
from medmtl.models.conformal import AnswerSets
from medmtl.reporting.per_image import PerImage, answer_sets, read_predictions, write_predictions
from medmtl.settings.train import check_alpha


def _data(n: int, rng: np.random.Generator, hard: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exchangeable images: labels drawn from the model's own (calibrated) probabilities; with
    ``hard``, class 2 is rarer in the model's eyes and also drawn where the model thinks it
    unlikely (a class the model neglects)."""
    prob = rng.dirichlet([1, 1, 0.3] if hard else [0.6, 0.6, 0.6], size=n)
    label = (rng.random(n)[:, None] > np.cumsum(prob, 1)).sum(1).clip(0, 2)
    if hard:
        label = np.where(rng.random(n) < 0.05, 2, label)
    return prob, label


@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_coverage_is_within_binomial_bounds_over_many_seeds(alpha):
    n_cal, n_test, seeds = 400, 400, 60
    cover, by_class_cover = [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        sets = AnswerSets.fit(*_data(n_cal, rng), alpha=alpha)
        prob, label = _data(n_test, rng)
        cover.append(sets.predict(prob)[np.arange(n_test), label].mean())
        mondrian = sets.with_settings(by_class=True).predict(prob)
        by_class_cover.append([mondrian[label == c, c].mean() for c in range(3)])
    # split conformal: E[coverage] in [1 - α, 1 - α + 1/(n_cal + 1)]; the mean over seeds has
    # binomial + calibration noise of about sqrt(α(1 - α) (1/n_test + 1/n_cal) / seeds)
    sd = np.sqrt(alpha * (1 - alpha) * (1 / n_test + 1 / n_cal) / seeds)
    assert 1 - alpha - 3 * sd <= np.mean(cover) <= 1 - alpha + 1 / (n_cal + 1) + 3 * sd
    per_class = np.array(by_class_cover).mean(0)
    n_c = n_cal / 3  # about a third of the calibration images per class
    slack = 3 * np.sqrt(alpha * (1 - alpha) * (3 / n_test + 1 / n_c) / seeds) + 1 / (n_c + 1)
    assert np.all(per_class >= 1 - alpha - slack) and np.all(per_class <= 1 - alpha + slack)


def test_class_by_class_sets_cover_a_neglected_class():
    rng = np.random.default_rng(7)
    sets = AnswerSets.fit(*_data(3000, rng, hard=True), alpha=0.1)
    prob, label = _data(3000, rng, hard=True)
    marginal = sets.predict(prob)
    mondrian = sets.with_settings(by_class=True).predict(prob)
    hard = label == 2
    assert marginal[hard, 2].mean() < 0.75  # the neglected class loses its coverage
    assert mondrian[hard, 2].mean() >= 0.85  # class by class it keeps it
    assert abs(marginal[np.arange(3000), label].mean() - 0.9) < 0.03


def test_sets_shrink_as_the_error_rate_grows_and_round_trip():
    rng = np.random.default_rng(3)
    sets = AnswerSets.fit(*_data(300, rng), alpha=0.05)
    prob, _ = _data(50, rng)
    wide, narrow = sets.predict(prob), sets.with_settings(alpha=0.3).predict(prob)
    assert np.all(narrow <= wide) and narrow.sum() < wide.sum()
    again = AnswerSets.from_dict(sets.to_dict())
    np.testing.assert_array_equal(again.predict(prob), wide)
    assert AnswerSets.from_dict(None) is None
    with pytest.raises(ConfigError, match="calibrated for 3 classes"):
        sets.predict(prob[:, :2])
    # no calibration images: every class stays possible
    empty = AnswerSets.fit(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert empty.predict(prob).all()


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "x", None, True])
def test_alpha_is_checked(bad):
    with pytest.raises(ConfigError, match="conformal.alpha"):
        check_alpha(bad)


def test_answer_sets_in_the_predictions_file_and_their_metrics(tmp_path):
    classes = ("normal", "benign", "malignant")
    sets = np.array([[0, 1, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    per = PerImage(
        ids=["a", "b", "c", "d"],
        classes=classes,
        label=np.array([2, 1, 1, 0]),
        prob=np.full((4, 3), 1 / 3),
        answer_set=sets,
    )
    m = answer_sets(per)
    assert m["conformal_coverage"][0] == pytest.approx(0.5)  # a and b are covered
    assert m["conformal_set_size"][0] == pytest.approx(1.0)
    assert m["conformal_singleton_rate"][0] == pytest.approx(0.5)
    assert m["conformal_empty_rate"][0] == pytest.approx(0.25)
    assert m["conformal_coverage_benign"][0] == pytest.approx(0.5)
    assert m["conformal_coverage_malignant"][0] == pytest.approx(1.0)
    path = write_predictions(tmp_path / "predictions_test.csv", per)
    text = path.read_text().splitlines()
    assert text[0].split(",")[-2:] == ["answer_set", "refer"]
    assert text[1].endswith(",benign|malignant,1")  # two classes: refer
    # refer: the sets of two classes and of none, not the single-class ones
    assert [row.rsplit(",", 1)[1] for row in text[1:]] == ["1", "0", "0", "1"]
    assert per.refer.tolist() == [1, 0, 0, 1]
    again = read_predictions(path)
    np.testing.assert_array_equal(again.answer_set.astype(bool), sets)
    assert "answer_set" not in again.meta


def _site(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A new site for a model of three classes: exchangeable cases of classes 1 and 2 only
    (a breast clinic's scanner: no normal image), on which the model is overconfident (its
    logits 4 times what its true probabilities say)."""
    truth = rng.dirichlet([0.05, 0.6, 0.6], size=n)
    truth[:, 0] = np.minimum(truth[:, 0], 0.02)
    truth /= truth.sum(1, keepdims=True)
    site = truth[:, 1:] / truth[:, 1:].sum(1, keepdims=True)
    label = 1 + (rng.random(n) > site[:, 0]).astype(np.int64)
    return 4 * np.log(truth), label


def test_recalibrated_on_a_site_the_sets_cover_at_the_nominal_rate_there():
    """medmtl-adapt's recalibration: a temperature and answer sets fitted on 25 held-back site
    cases cover the site's other cases at 1 − α on average (split conformal: E[coverage] in
    [1 − α, 1 − α + 1/(n + 1)]); the source's calibration does not carry over."""
    from medmtl.models.calibration import scaled_probabilities
    from medmtl.models.conformal import fit_calibration

    alpha, n_cal, n_test, seeds = 0.1, 25, 400, 200
    source = AnswerSets.fit(*_data(400, np.random.default_rng(99)), alpha=alpha)
    cover, source_cover, temps = [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        temperature, sets = fit_calibration(*_site(n_cal, rng), alpha=alpha)
        logits, label = _site(n_test, rng)
        prob = scaled_probabilities(logits, temperature)
        cover.append(sets.predict(prob)[np.arange(n_test), label].mean())
        source_cover.append(
            source.predict(scaled_probabilities(logits, 1.0))[np.arange(n_test), label].mean()
        )
        temps.append(temperature)
    sd = np.sqrt(alpha * (1 - alpha) * (1 / n_test + 1 / n_cal) / seeds)
    assert 1 - alpha - 3 * sd <= np.mean(cover) <= 1 - alpha + 1 / (n_cal + 1) + 3 * sd
    assert np.mean(source_cover) < 1 - alpha - 0.03  # the source's sets under-cover the site
    assert 3 < np.median(temps) < 5  # the overconfidence is found: logits divided by ~4
