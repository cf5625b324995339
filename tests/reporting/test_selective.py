"""Selective prediction: the risk-coverage curve, its area (AURC) and the error at a coverage."""

from __future__ import annotations

import numpy as np
import pytest

from medmtl.reporting.evaluation import risk_coverage_figure
from medmtl.reporting.per_image import PerImage, risk_coverage, selective


def _per(prob: np.ndarray, label: np.ndarray) -> PerImage:
    return PerImage(
        ids=[str(i) for i in range(len(label))], classes=("a", "b"), label=label, prob=prob
    )


def _ranked(n: int, errors: int, perfect: bool) -> PerImage:
    """n images, ``errors`` of them wrong; with ``perfect``, the wrong ones are the least sure."""
    sure = np.linspace(0.99, 0.6, n)  # image i is more certain than image i + 1
    prob = np.stack([sure, 1 - sure], 1)
    wrong = np.zeros(n, bool)
    wrong[n - errors :] = True
    if not perfect:
        wrong = wrong[::-1]  # the most certain answers are the wrong ones
    return _per(prob, np.where(wrong, 1, 0))


def test_aurc_of_a_perfect_ranking_is_its_known_minimum():
    n, e = 20, 5
    m = selective(_ranked(n, e, perfect=True))
    # the wrong answers come last: risk 0 for the first n - e, then (k - (n - e)) / k
    want = sum((k - (n - e)) / k for k in range(n - e + 1, n + 1)) / n
    assert m["cls_aurc"][0] == pytest.approx(want)
    assert m["cls_error_at_80"][0] == pytest.approx(1 / 16)  # 16 kept: the 15 right, 1 wrong
    assert m["cls_error_at_90"][0] == pytest.approx(3 / 18)
    worst = selective(_ranked(n, e, perfect=False))
    assert worst["cls_aurc"][0] > m["cls_aurc"][0]
    assert worst["cls_error_at_80"][0] == pytest.approx(5 / 16)


def test_weights_repeat_images_and_the_curve_ends_at_the_plain_error():
    rng = np.random.default_rng(0)
    prob = rng.dirichlet([1, 1], size=30)
    label = rng.integers(0, 2, 30)
    coverage, risk, *_ = risk_coverage(prob, label)
    assert coverage[0, -1] == pytest.approx(1.0)
    assert risk[0, -1] == pytest.approx((prob.argmax(1) != label).mean())
    w = rng.integers(1, 3, 30)  # no zero weight: ties in order stay comparable
    repeated = selective(_per(np.repeat(prob, w, 0), np.repeat(label, w)))
    weighted = selective(_per(prob, label), w[None])
    assert weighted["cls_aurc"][0] == pytest.approx(repeated["cls_aurc"][0])
    fig = risk_coverage_figure(prob, label, "test risk-coverage")
    assert fig.axes[0].get_title().startswith("test risk-coverage — AURC ")


def test_unlike_auroc_known_values_and_missing_column(tmp_path):
    from medmtl.errors import DataError
    from medmtl.reporting.unlike import auroc, auroc_ci, read_scores, table

    assert auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0  # perfect separation
    assert auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5  # ties count half
    value, low, high = auroc_ci(np.arange(10.0), np.arange(5.0, 15.0), n_boot=200)
    assert value == pytest.approx(0.875) and low <= value <= high
    inside, outside = tmp_path / "in.csv", tmp_path / "out.csv"
    inside.write_text("file,unlike_score\na,0.5\nb,0.9\nc,1.2\n")
    outside.write_text("file,unlike_score\nd,3.0\ne,2.0\n")
    np.testing.assert_allclose(read_scores(inside), [0.5, 0.9, 1.2])
    text = table(inside, [outside])
    assert "| 2 | 100.0% | 1.0000 |" in text and "33.3% flagged" in text
    (tmp_path / "old.csv").write_text("file,entropy\na,0.1\n")
    with pytest.raises(DataError, match="no unlike_score column"):
        read_scores(tmp_path / "old.csv")


def test_unlike_auroc_command(tmp_path, capsys):
    from medmtl.cli.unlike import main

    inside, outside = tmp_path / "in.csv", tmp_path / "out.csv"
    inside.write_text("file,unlike_score\na,0.5\nb,0.9\n")
    outside.write_text("file,unlike_score\nd,3.0\n")
    with pytest.raises(SystemExit) as ok:
        main([str(inside), str(outside)])
    assert ok.value.code == 0 and "| 1.0000 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main([str(inside)])
    assert bad.value.code == 2 and "at least one other" in capsys.readouterr().err
