"""How a test runs is set through one method, MultiTaskModule.configure_evaluation, checked."""

from __future__ import annotations

import pytest

from medmtl.errors import ConfigError
from medmtl.models.conformal import AnswerSets
from medmtl.settings.evaluation import EvalSettings
from medmtl.training.module import MultiTaskModule


@pytest.fixture()
def module(tiny_ckpt) -> MultiTaskModule:
    return MultiTaskModule.from_checkpoint(tiny_ckpt)[0]


def test_every_choice_is_set_and_none_keeps_it(module):
    module.configure_evaluation(split="val", tta=True, gate={"mask_threshold": 0.3})
    assert (module.eval_split, module.tta, module.net.gate.mask_threshold) == ("val", True, 0.3)
    module.configure_evaluation(postprocess={"min_area": 5})
    assert (module.eval_split, module.tta, module.net.gate.mask_threshold) == ("val", True, 0.3)
    assert module.postprocess.min_area == 5
    module.configure_evaluation(gate={"empty_mask_index": 0, "mask_threshold": "as_trained"})
    assert module.net.gate.empty_mask_index == 0 and module.net.gate.mask_threshold == 0.3
    module.configure_evaluation(gate={"empty_mask_index": None})
    assert module.net.gate.empty_mask_index is None
    sets = AnswerSets.fit([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], [0, 1], 0.1, False)
    module.configure_evaluation(answer_sets=sets)
    assert module.answer_sets is sets
    module.configure_evaluation(tta=False)
    assert module.answer_sets is sets and module.tta is False
    module.configure_evaluation(answer_sets=None)
    assert module.answer_sets is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "holdout"}, "split='holdout' is unknown"),
        ({"gate": {"mask_threshold": 1.0}}, "model.mask_threshold=1.0"),
        ({"gate": {"empty_mask_min_prob": 2}}, "empty_mask_min_prob=2: a probability"),
        ({"gate": {"empty_mask_index": 3}}, "empty_mask_index=3: not a class"),
        ({"gate": {"threshold": 0.5}}, "gate='threshold' is unknown"),
    ],
)
def test_a_wrong_choice_is_one_line(module, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        module.configure_evaluation(**kwargs)


def test_eval_settings_check_before_any_model():
    assert EvalSettings.from_dict({"by": "Device", "ckpt_path": "x"}).by == ["Device"]
    assert EvalSettings().gate() == {}
    assert EvalSettings(empty_mask_keep_above=None).gate() == {"empty_mask_keep_above": None}
    for bad, message in [
        ({"split": "holdout"}, "split='holdout' is unknown"),
        ({"adapt": "tent"}, "adapt='tent' is unknown"),
        ({"calibrated": "yes"}, "calibrated='yes': expected true or false"),
        ({"conformal": {"level": 0.9}}, "conformal: unknown setting"),
    ]:
        with pytest.raises(ConfigError, match=message):
            EvalSettings.from_dict(bad)


def test_eval_yaml_starts_from_the_schema():
    from omegaconf import OmegaConf

    from medmtl.config import compose

    cfg = OmegaConf.to_container(compose("eval", ["ckpt_path=x"]))
    defaults = EvalSettings().to_dict()
    assert {k: cfg[k] for k in defaults} == defaults
