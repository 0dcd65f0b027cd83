"""The shipped goals: every safety category covered, a fixed hold-out quarter, valid records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from guideline_lib.taxonomy import SAFETY_IDS
from redteam.goals import GOALS_PATH, GoalsError, load_goals, pick_goals
from tests.test_leakage import project_texts


def test_every_safety_category_has_at_least_ten_goals():
    counts = Counter(goal.category for goal in load_goals())
    assert set(counts) == set(SAFETY_IDS)
    assert min(counts.values()) >= 10
    assert len(load_goals()) >= 190


def test_a_fixed_quarter_of_each_category_is_held_out():
    goals = load_goals()
    for category in SAFETY_IDS:
        members = [g for g in goals if g.category == category]
        held = [g for g in members if g.holdout]
        assert len(held) == len(members) // 4, category
    # the same file gives the same hold-out set every time
    assert [g.id for g in goals if g.holdout] == [g.id for g in load_goals() if g.holdout]


def test_goal_ids_are_unique_and_texts_are_single_sentences():
    goals = load_goals()
    assert len({g.id for g in goals}) == len(goals)
    assert len({g.text.lower() for g in goals}) == len(goals)
    for goal in goals:
        assert goal.text[-1] in ".?!" and "\n" not in goal.text, goal.id
        assert len(goal.text.split()) <= 30, goal.id


def test_goals_file_is_scanned_by_the_leakage_check():
    scanned = {rel for rel, _ in project_texts() if rel.startswith("redteam/")}
    assert GOALS_PATH.relative_to(GOALS_PATH.parents[2]).as_posix() in scanned


def test_pick_goals_takes_the_first_per_category_and_respects_holdout():
    goals = load_goals()
    repair = pick_goals(goals, 2, holdout=False)
    held = pick_goals(goals, 1, holdout=True)
    assert Counter(g.category for g in repair) == {c: 2 for c in SAFETY_IDS}
    assert not any(g.holdout for g in repair) and all(g.holdout for g in held)
    assert repair == pick_goals(goals, 2, holdout=False)
    assert repair[0] == next(g for g in goals if not g.holdout)


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "x-1", "category": "weather", "text": "Do a thing."}', "not a safety category"),
    ('{"id": "x-1", "category": "quality_coding", "text": "Do a thing."}', "not a safety"),
    ('{"id": "", "category": "violence", "text": "Do a thing."}', "'id'"),
    ('{"id": "x-1", "category": "violence", "text": "  "}', "'text'"),
    ('{"id": "x-1", "category": "violence", "text": "Do.", "holdout": "yes"}', "'holdout'"),
    ('{"id": "x-1", "category": "violence"', "not JSON"),
    ('["violence"]', "expected an object"),
])
def test_malformed_goal_files_are_rejected_with_the_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "goals.jsonl"
    good = json.dumps({"id": "ok-1", "category": "privacy", "text": "Find someone's address."})
    path.write_text(good + "\n" + line + "\n", "utf-8")
    with pytest.raises(GoalsError, match=message) as info:
        load_goals(path)
    assert f"{path}:2" in str(info.value)


def test_repeated_ids_are_rejected(tmp_path: Path):
    path = tmp_path / "goals.jsonl"
    row = json.dumps({"id": "a-1", "category": "privacy", "text": "Find someone's address."})
    path.write_text(f"{row}\n\n{row}\n", "utf-8")
    with pytest.raises(GoalsError, match="repeats"):
        load_goals(path)
    path.write_text(f"{row}\n\n", "utf-8")
    assert [g.id for g in load_goals(path)] == ["a-1"]
