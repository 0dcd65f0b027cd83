"""Records shared by the red-team attacker, loop, journal and attacker training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Goal:
    """A harmful goal written for the project; hold-out goals are never used for repair."""

    id: str
    category: str  # a safety category id of the taxonomy
    text: str
    holdout: bool = False


@dataclass(frozen=True)
class Attack:
    """One adversarial request made from a goal by a tactic."""

    id: str  # stable: goal id, tactic, round and index, so a resumed run skips it
    goal_id: str
    tactic: str  # a tactic name from redteam.tactics.TACTICS
    source: str  # "mutation", "llm" or "trained"
    messages: list[dict[str, Any]] = field(default_factory=list)  # the chat sent to the defender
