"""The options contract: a request's ``guide_align`` options may tighten the policy, not loosen it.

"Tighter" means more guidance: guidance on, more guidelines (``k`` up), weaker matches allowed
(``min_score`` down), safety guidelines kept more readily (``safety_margin`` down, no margin at
all being the tightest; ``risk_threshold`` down). Each option states its own order once, in
``RULES``; later stages add theirs the same way (backtracking off < monitor < enforce;
refinement off < retrieve < auto < rewrite). A deployment may allow loosening (``allow_loosen``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guide.refine import REFINE_MODES
from retriever.types import SelectConfig

# Bounds shared by every request model that carries these options (one limit, one place).
K_MAX = 50
BACKTRACK_WINDOW_MAX = 200
KOption = Annotated[int, Field(ge=0, le=K_MAX, strict=True)]
ScoreOption = Annotated[float, Field(ge=-1.0, le=1.0, strict=True)]


class GuideOptions(BaseModel):
    """Per-request options, sent in the namespaced ``guide_align`` body field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = None
    k: KOption | None = None
    min_score: ScoreOption | None = None
    safety_margin: float | None = Field(None, ge=-1.0, le=1.0)
    risk_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # stream backtracking (guide/backtrack.py): the mode, the hold-back window in words, and how
    # many retractions before the answer ends with a short safe completion
    backtrack: Literal["off", "monitor", "enforce"] | None = None
    backtrack_window: int | None = Field(None, ge=0, le=BACKTRACK_WINDOW_MAX)
    backtrack_max_retractions: int | None = Field(None, ge=0, le=10)
    # query refinement (guide/refine.py): what the refined latest user turn is used for
    refine: Literal["off", "retrieve", "auto", "rewrite"] | None = None
    # how much the answer's `guide_align` field says: ids (default) or the guideline texts too
    details: Literal["ids", "full"] | None = None


@dataclass(frozen=True)
class Policy:
    """How much guidance a request gets: on or off, the selection rules, the turn window."""

    enabled: bool = True
    select: SelectConfig = field(default_factory=SelectConfig)
    window: int = 3
    # The prompt-risk gate: below this P(risky) no safety guideline is injected (None: no gate,
    # the safety-margin rule decides). Safety candidates of likely categories gain
    # category_weight x P(category) when the gate is open.
    risk_threshold: float | None = None
    category_weight: float = 0.2
    # Stream backtracking: off < monitor (judge and report) < enforce (retract and continue).
    backtrack: str = "off"
    backtrack_window: int = 16  # words held back from the client
    backtrack_max_retractions: int = 2
    # Query views per conversation at most (guide/views.py), bounding a long input's cost.
    max_views: int = 48
    # Query refinement: off < retrieve (retrieval and risk) < auto < rewrite (the upstream too).
    refine: str = "off"
    details: str = "ids"  # what the answer's guide_align field lists (presentation only)
    # The key of the guideline block's markers (guide/forgery.py); None: an unsigned block.
    sign_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Rule:
    """How one option reads from and writes to a policy, and which way is tighter."""

    get: Callable[[Policy], Any]
    set: Callable[[Policy, Any], Policy]
    tighter_or_equal: Callable[[Any, Any], bool]  # (requested, current) -> True when allowed


def _select(**changes: Any) -> Callable[[Policy, Any], Policy]:
    (name,) = changes

    def apply(policy: Policy, value: Any) -> Policy:
        return dataclasses.replace(policy, select=dataclasses.replace(policy.select,
                                                                       **{name: value}))
    return apply


_MODE_ORDER = ("off", "monitor", "enforce")


def _lower_is_tighter(requested: float, current: float | None) -> bool:
    # no margin keeps every safety hit; no gate leaves safety to the margin rule
    return current is not None and requested <= current


RULES: dict[str, Rule] = {
    "enabled": Rule(lambda p: p.enabled, lambda p, v: dataclasses.replace(p, enabled=v),
                    lambda req, cur: req or not cur),
    "k": Rule(lambda p: p.select.k, _select(k=None), lambda req, cur: req >= cur),
    "min_score": Rule(lambda p: p.select.min_score, _select(min_score=None),
                      lambda req, cur: req <= cur),
    "safety_margin": Rule(lambda p: p.select.safety_margin, _select(safety_margin=None),
                          _lower_is_tighter),
    "risk_threshold": Rule(lambda p: p.risk_threshold,
                           lambda p, v: dataclasses.replace(p, risk_threshold=v),
                           _lower_is_tighter),
    "backtrack": Rule(lambda p: p.backtrack, lambda p, v: dataclasses.replace(p, backtrack=v),
                      lambda req, cur: _MODE_ORDER.index(req) >= _MODE_ORDER.index(cur)),
    # a wider window gives the critic more context before text leaves; fewer retractions end
    # a drifting answer sooner
    "backtrack_window": Rule(lambda p: p.backtrack_window,
                             lambda p, v: dataclasses.replace(p, backtrack_window=v),
                             lambda req, cur: req >= cur),
    "backtrack_max_retractions": Rule(
        lambda p: p.backtrack_max_retractions,
        lambda p, v: dataclasses.replace(p, backtrack_max_retractions=v),
        lambda req, cur: req <= cur),
    "refine": Rule(lambda p: p.refine, lambda p, v: dataclasses.replace(p, refine=v),
                   lambda req, cur: REFINE_MODES.index(req) >= REFINE_MODES.index(cur)),
    # presentation only: neither tighter nor looser
    "details": Rule(lambda p: p.details, lambda p, v: dataclasses.replace(p, details=v),
                    lambda req, cur: True),
}


@dataclass(frozen=True)
class Applied:
    """The policy a request gets, and the options it asked for that were not applied."""

    policy: Policy
    ignored: tuple[str, ...] = ()


def apply_options(base: Policy, options: GuideOptions | None, *,
                  allow_loosen: bool = False) -> Applied:
    """The deployment policy ``base`` changed by a request's options, tightening only unless
    ``allow_loosen``; options that would loosen it are named in ``ignored``."""
    if options is None:
        return Applied(base)
    policy, ignored = base, []
    for name, value in options.model_dump(exclude_none=True).items():
        rule = RULES[name]
        if allow_loosen or rule.tighter_or_equal(value, rule.get(policy)):
            policy = rule.set(policy, value)
        else:
            ignored.append(name)
    return Applied(policy, tuple(ignored))
