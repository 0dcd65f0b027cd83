"""`library validate`, stats, diff and merge: each defect is caught, each change reported."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.library import app
from guideline_lib.io import load_library, save_library
from guideline_lib.schema import MAX_GUIDELINE_CHARS, Example, Guideline, Library
from guideline_lib.validate import (
    diff_libraries,
    library_stats,
    merge_libraries,
    validate_library,
)

OK = Guideline.create("Show runnable code: Give a complete example with imports.",
                      "quality_coding")


def codes(lib: Library) -> set[str]:
    return {f.code for f in validate_library(lib).errors}


def with_(*guidelines: Guideline, examples: list[Example] | None = None) -> Library:
    return Library(guidelines=list(guidelines), examples=examples or [])


def test_a_clean_library_passes(small_lib: Library) -> None:
    assert validate_library(small_lib).ok


@pytest.mark.parametrize(("library", "code"), [
    (with_(OK.model_copy(update={"category": "astrology"})), "unknown_category"),
    (with_(OK.model_copy(update={"kind": "safety"})), "kind_mismatch"),
    (with_(OK, examples=[Example(input="hi", guideline_ids=["g_missing"])]), "dangling_id"),
    (with_(OK, examples=[Example(input="  ", guideline_ids=[OK.id])]), "empty_input"),
    (with_(OK, examples=[Example(input="hi", guideline_ids=[])]), "no_guidelines"),
    (with_(OK.model_copy(update={"text": "  "})), "empty_text"),
    (with_(Guideline.create("Long: " + "x" * MAX_GUIDELINE_CHARS, "quality_coding")), "too_long"),
    (with_(OK, OK), "duplicate_id"),
    (with_(OK, Guideline.create("Show runnable code: give a complete example with imports!!",
                                "quality_coding").model_copy(update={"id": "g_other"})),
     "near_duplicate"),
])
def test_each_defect_is_an_error(library: Library, code: str) -> None:
    assert code in codes(library)


def test_validate_command_exit_codes(small_lib: Library, tmp_path) -> None:
    save_library(small_lib, tmp_path / "good")
    bad = with_(OK.model_copy(update={"category": "astrology"}), OK,
                examples=[Example(input="x", guideline_ids=["g_missing"])])
    save_library(bad, tmp_path / "bad")
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(tmp_path / "good")]).exit_code == 0
    result = runner.invoke(app, ["validate", str(tmp_path / "bad")])
    assert result.exit_code == 1
    assert "unknown_category" in result.output and "dangling_id" in result.output


def test_stats_count_guidelines_and_examples_per_category(small_lib: Library) -> None:
    rows = {r["category"]: r for r in library_stats(small_lib)}
    assert rows["quality_coding"]["guidelines"] == 2
    assert rows["quality_coding"]["examples_test"] == 2
    assert rows["quality_coding"]["examples_train"] == 4
    assert rows["weapons"]["guidelines"] == 0


def test_diff_reports_added_removed_and_changed(small_lib: Library) -> None:
    first, second = small_lib.guidelines[0], small_lib.guidelines[1]
    new = Guideline.create("Brand new rule: Do the new helpful thing each time.", "quality_advice")
    changed = second.model_copy(update={"tags": ["retagged"]})
    newer = Library(guidelines=[changed, *small_lib.guidelines[2:], new])
    d = diff_libraries(small_lib, newer)
    assert d.added == [new] and d.removed == [first] and d.changed == [(second, changed)]
    assert diff_libraries(small_lib, small_lib).empty


def test_merge_unions_by_id_and_dedups_examples(small_lib: Library, tmp_path) -> None:
    extra = with_(OK, small_lib.guidelines[0],
                  examples=[Example(input="sort a dict in python", guideline_ids=[OK.id]),
                            small_lib.examples[0]])
    merged = merge_libraries(small_lib, extra, name="merged")
    assert len(merged.guidelines) == len(small_lib.guidelines) + 1
    assert len(merged.examples) == len(small_lib.examples) + 1
    assert merged.manifest.name == "merged" and validate_library(merged).ok
    save_library(small_lib, tmp_path / "a")
    save_library(extra, tmp_path / "b")
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "-o", str(tmp_path / "m")])
    assert result.exit_code == 0
    assert load_library(tmp_path / "m").content_hash() == merged.content_hash()
