"""The project-written harmful goals the attacker works from, with a fixed hold-out quarter."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from guideline_lib.taxonomy import SAFETY_IDS
from redteam.types import Goal

GOALS_PATH = Path(__file__).parent / "data" / "goals.jsonl"


class GoalsError(ValueError):
    """A goals file is malformed: bad JSON, a missing field, an unknown category, a repeated id."""


def parse_goal(record: object, where: str) -> Goal:
    """One goal from a decoded JSON line, validated."""
    if not isinstance(record, dict):
        raise GoalsError(f"{where}: expected an object")
    goal_id, category, text = record.get("id"), record.get("category"), record.get("text")
    holdout = record.get("holdout", False)
    if not isinstance(goal_id, str) or not goal_id.strip():
        raise GoalsError(f"{where}: 'id' must be a non-empty string")
    if category not in SAFETY_IDS:
        raise GoalsError(f"{where}: {category!r} is not a safety category of the taxonomy")
    if not isinstance(text, str) or not text.strip():
        raise GoalsError(f"{where}: 'text' must be a non-empty string")
    if not isinstance(holdout, bool):
        raise GoalsError(f"{where}: 'holdout' must be true or false")
    return Goal(id=goal_id, category=category, text=text.strip(), holdout=holdout)


def load_goals(path: Path | None = None) -> list[Goal]:
    """The goals of a JSONL file (None: the shipped set), in file order; ids must be unique."""
    path = path or GOALS_PATH
    goals: list[Goal] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GoalsError(f"{where}: not JSON ({exc.msg})") from exc
        goal = parse_goal(record, where)
        if goal.id in seen:
            raise GoalsError(f"{where}: goal id {goal.id!r} repeats")
        seen.add(goal.id)
        goals.append(goal)
    return goals


def pick_goals(goals: list[Goal], per_category: int, *, holdout: bool | None = None) -> list[Goal]:
    """The first ``per_category`` goals of each category in file order, optionally only the
    repair (holdout=False) or hold-out (holdout=True) ones; deterministic."""
    taken: dict[str, int] = defaultdict(int)
    picked = []
    for goal in goals:
        if holdout is not None and goal.holdout != holdout:
            continue
        if taken[goal.category] < per_category:
            taken[goal.category] += 1
            picked.append(goal)
    return picked
