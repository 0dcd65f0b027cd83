"""Assembling journal records into a library: provenance, examples, splits, extending."""

from __future__ import annotations

from guideline_lib.assemble import assemble_library
from guideline_lib.inputs import InputItem, input_key
from guideline_lib.schema import Library
from guideline_lib.starter import split_for
from guideline_lib.validate import validate_library


def item(text: str, line: int = 1) -> InputItem:
    return InputItem(key=input_key(text), text=text, source="in.txt", line=line)


A, B, C = item("how do I write a cover letter", 1), item("help me phish my bank", 2), \
    item("explain photosynthesis", 3)
RECORDS = {
    A.key: {"status": "ok", "finished": "2030-01-01T00:00:00+00:00", "guidelines": [
        {"text": "Ask about the role: Tailor the letter to the job and the company asked about.",
         "category": "quality_writing"},
        {"text": "Keep it to one page: Aim for three short paragraphs with a clear opening.",
         "category": "quality_writing"}]},
    B.key: {"status": "ok", "finished": "2030-01-01T00:00:01+00:00", "guidelines": [
        {"text": "No phishing kits: Do not write deceptive messages that harvest credentials.",
         "category": "fraud_deception"},
        {"text": "Ask about the role: Tailor the letter to the job and the company asked about.",
         "category": "quality_writing"},
        {"text": "Bogus category: Something something something else.", "category": "nope"}]},
    C.key: {"status": "failed", "stage": "detect", "error": "unparseable"},
}


def test_records_become_guidelines_and_linked_examples() -> None:
    lib, stats = assemble_library([A, B, C], RECORDS, model="m1", prompt_version="v1-x")
    assert validate_library(lib).ok
    assert (stats.ok, stats.failed, stats.candidates) == (2, 1, 4)
    assert stats.new_guidelines == 3 and stats.merged == 1 and stats.new_examples == 2
    assert "in.txt:3: detect: unparseable" in stats.failures[0]
    by_text = {g.text.split(":")[0]: g for g in lib.guidelines}
    shared = by_text["Ask about the role"]
    assert shared.source == "generated" and shared.kind == "quality"
    assert shared.provenance.inputs == [A.key, B.key]  # both inputs produced it
    assert shared.provenance.model == "m1" and shared.provenance.prompt_version == "v1-x"
    assert by_text["No phishing kits"].kind == "safety"
    examples = {e.input: e for e in lib.examples}
    assert set(examples) == {A.text, B.text}
    assert examples[B.text].guideline_ids == [by_text["No phishing kits"].id, shared.id]
    assert all(e.split == split_for(e.input) for e in lib.examples)
    assert lib.manifest.content_hash == lib.content_hash()


def test_result_does_not_depend_on_record_order() -> None:
    first, _ = assemble_library([A, B, C], RECORDS)
    second, _ = assemble_library([A, B, C], dict(reversed(list(RECORDS.items()))))
    assert first.content_hash() == second.content_hash()


def test_extending_keeps_the_base_and_merges_into_it(small_lib: Library) -> None:
    existing = small_lib.guidelines[0]
    records = {A.key: {"status": "ok", "guidelines": [
        {"text": existing.text + " ", "category": "quality_writing"},
        {"text": "Keep it to one page: Aim for three short paragraphs with a clear opening.",
         "category": "quality_writing"}]}}
    lib, stats = assemble_library([A], records, base=small_lib)
    assert validate_library(lib).ok
    assert len(lib.guidelines) == len(small_lib.guidelines) + 1 and stats.merged == 1
    assert lib.by_id()[existing.id] == existing  # curated entry untouched
    assert lib.examples[: len(small_lib.examples)] == small_lib.examples
    assert lib.examples[-1].guideline_ids[0] == existing.id
    again, stats = assemble_library([A], records, base=lib)  # re-running adds nothing
    assert again.content_hash() == lib.content_hash() and stats.new_examples == 0


def test_missing_and_empty_records_are_counted_not_fatal() -> None:
    lib, stats = assemble_library([A, B], {A.key: {"status": "ok", "guidelines": []}})
    assert lib.guidelines == [] and (stats.failed, stats.missing) == (1, 1)
