"""SFT export: guidelines stripped, filters, reproducible split, formats and dataset card."""

from __future__ import annotations

import json

import pytest

from finetune.export import FORMATS, ExportConfig, ExportError, build_sft, export_manifest
from finetune.io import read_export, write_export
from guideline_lib.render import PREAMBLE
from tests.fakes.sft_records import BLOCK, record

RUN = {"library": {"name": "lib", "version": "1.2.3", "content_hash": "abc123"},
       "llm": {"model": "teacher"}, "fingerprint": "fp"}


def many(n: int) -> list[dict]:
    return [record(f"k{i:03d}", f"question {i}", f"answer {i}") for i in range(n)]


def test_exported_prompts_hold_no_guidelines_and_keep_the_client_system_message():
    records = [record("a", "hi there", "Hello!", system="You are a pirate."),
               record("b", "what is 2+2", "4")]
    sft = build_sft(records, config=ExportConfig(validation=0.0))
    by_key = {e.key: e.messages for e in sft.train}
    assert by_key["a"] == [{"role": "system", "content": "You are a pirate."},
                           {"role": "user", "content": "hi there"},
                           {"role": "assistant", "content": "Hello!"}]
    assert by_key["b"] == [{"role": "user", "content": "what is 2+2"},
                           {"role": "assistant", "content": "4"}]
    for messages in by_key.values():
        for m in messages:
            assert BLOCK not in m["content"] and PREAMBLE not in m["content"]


def test_failed_empty_and_truncated_answers_are_dropped():
    records = [record("ok", "fine", "A good answer."),
               record("failed", "x", status="failed"),
               record("empty", "y", "   "),
               record("trunc", "z", "cut off mid", finish="length"),
               record("short", "s", "ok"),
               record("long", "l", "word " * 50)]
    sft = build_sft(records, config=ExportConfig(validation=0.0, min_answer_chars=3,
                                                 max_answer_chars=100))
    st = sft.stats
    assert [e.key for e in sft.train] == ["ok"]
    assert (st.records, st.failed, st.empty, st.truncated, st.too_short, st.too_long,
            st.kept) == (6, 1, 1, 1, 1, 1, 1)


def test_dedup_drops_repeated_inputs_and_answers_when_asked():
    records = [record("a", "Sort a list?", "Use sorted()."), record("b", "sort a list", "Other."),
               record("c", "Reverse a list?", "use sorted"), record("d", "new", "fresh")]
    assert build_sft(records, config=ExportConfig(validation=0.0)).stats.kept == 4
    sft = build_sft(records, config=ExportConfig(validation=0.0, dedup=True))
    assert sorted(e.key for e in sft.train) == ["a", "d"]
    assert sft.stats.duplicate == 2


def test_the_split_is_reproducible_and_independent_of_record_order():
    records = many(50)
    config = ExportConfig(validation=0.2, seed=7)
    first = build_sft(records, config=config)
    again = build_sft(list(reversed(records)), config=config)
    assert [e.key for e in first.validation] == [e.key for e in again.validation]
    assert [e.key for e in first.train] == [e.key for e in again.train]
    assert (len(first.train), len(first.validation)) == (40, 10)
    assert not {e.key for e in first.train} & {e.key for e in first.validation}
    other = build_sft(records, config=ExportConfig(validation=0.2, seed=8))
    assert {e.key for e in other.validation} != {e.key for e in first.validation}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_with_its_card(tmp_path, fmt):
    records = [*many(9), record("sys", "with system", "yes", system="Be kind.")]
    config = ExportConfig(format=fmt, validation=0.2)
    sft = build_sft(records, config=config)
    manifest = export_manifest(sft, config=config, run=RUN, served_models=["teacher-q4"])
    out = tmp_path / "out"
    write_export(sft, out, manifest=manifest)
    read_manifest, splits = read_export(out)
    assert splits == {k: [e.messages for e in v] for k, v in sft.splits().items()}
    assert read_manifest["data_hash"] == manifest["data_hash"]
    card = (out / "README.md").read_text()
    assert "abc123" in card and "1.2.3" in card and "`teacher`" in card
    assert "| kept | 10 |" in card and "| train | 8 |" in card and "seed 13" in card
    if fmt == "hf":
        from datasets import load_from_disk

        assert load_from_disk(str(out))["train"].num_rows == 8


def test_a_hand_edited_export_is_rejected(tmp_path):
    config = ExportConfig(validation=0.0)
    sft = build_sft(many(3), config=config)
    write_export(sft, tmp_path / "out", manifest=export_manifest(sft, config=config, run=RUN))
    path = tmp_path / "out" / "train.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["messages"][-1]["content"] = "edited"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ExportError, match="hash"):
        read_export(tmp_path / "out")


def test_hf_export_without_validation_reads_back(tmp_path):
    config = ExportConfig(format="hf", validation=0.0)
    sft = build_sft(many(4), config=config)
    write_export(sft, tmp_path / "out", manifest=export_manifest(sft, config=config, run=RUN))
    _, splits = read_export(tmp_path / "out")
    assert len(splits["train"]) == 4 and splits["validation"] == []


def test_dedup_keeps_the_same_record_whatever_the_journal_order():
    # Journal order is completion order under concurrency; the survivor must not depend on it.
    records = [record("k2", "Sort a list?", "Use sorted()."), record("k1", "sort a list", "Other.")]
    config = ExportConfig(validation=0.0, dedup=True)
    kept = [e.key for e in build_sft(records, config=config).train]
    assert kept == [e.key for e in build_sft(list(reversed(records)), config=config).train]
    assert kept == ["k1"]
