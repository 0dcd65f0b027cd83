"""The options contract: a request tightens the deployment's policy, never loosens it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from guide.options import RULES, GuideOptions, Policy, apply_options
from retriever.types import SelectConfig

BASE = Policy(select=SelectConfig(k=6, min_score=0.4, safety_margin=0.05))


@pytest.mark.parametrize(("options", "ignored"), [
    ({"enabled": False}, ["enabled"]),
    ({"k": 0}, ["k"]), ({"k": 5}, ["k"]),
    ({"min_score": 1.0}, ["min_score"]), ({"min_score": 0.41}, ["min_score"]),
    ({"safety_margin": 1.0}, ["safety_margin"]), ({"safety_margin": 0.06}, ["safety_margin"]),
    ({"enabled": False, "k": 0, "min_score": 1.0}, ["enabled", "k", "min_score"]),
])
def test_looser_options_change_nothing_and_are_named(options, ignored):
    applied = apply_options(BASE, GuideOptions(**options))
    assert applied.policy == BASE
    assert sorted(applied.ignored) == sorted(ignored)


def test_tighter_and_equal_options_apply():
    applied = apply_options(BASE, GuideOptions(enabled=True, k=9, min_score=0.2,
                                               safety_margin=0.0))
    assert applied.ignored == ()
    assert applied.policy.select.k == 9
    assert applied.policy.select.min_score == 0.2
    assert applied.policy.select.safety_margin == 0.0
    same = apply_options(BASE, GuideOptions(k=6, min_score=0.4, safety_margin=0.05))
    assert same.policy == BASE and same.ignored == ()


def test_no_margin_is_the_tightest_and_off_can_be_switched_on():
    no_margin = Policy(select=SelectConfig(safety_margin=None))
    assert apply_options(no_margin, GuideOptions(safety_margin=-1.0)).ignored == ("safety_margin",)
    off = Policy(enabled=False)
    assert apply_options(off, GuideOptions(enabled=True)).policy.enabled is True


def test_the_server_may_allow_loosening():
    applied = apply_options(BASE, GuideOptions(enabled=False, k=0, min_score=1.0),
                            allow_loosen=True)
    assert applied.ignored == ()
    assert (applied.policy.enabled, applied.policy.select.k, applied.policy.select.min_score) \
        == (False, 0, 1.0)


def test_every_option_has_a_rule_and_bad_values_are_refused():
    assert set(GuideOptions.model_fields) == set(RULES)
    for bad in ({"k": 51}, {"k": -1}, {"min_score": 1.5}, {"enabled": "no"}, {"other": 1}):
        with pytest.raises(ValidationError):
            GuideOptions(**bad)
    assert apply_options(BASE, None).policy == BASE


def test_the_margin_and_the_threshold_can_be_switched_off_from_the_environment(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("GUIDE_ALIGN_SAFETY_MARGIN", "off")
    monkeypatch.setenv("GUIDE_ALIGN_RISK_THRESHOLD", "none")
    s = Settings()
    assert s.safety_margin is None and s.risk_threshold is None
    assert Settings(safety_margin="0.1").safety_margin == 0.1
