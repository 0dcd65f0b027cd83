"""Reading sets: files of every format, labels and categories, multi-turn rows, public sets
by name from a data folder (test halves), stratified samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.public import PUBLIC_SETS, half, hh_conversation, load_public_set
from evaluation.sets import SetError, load_file_set, make_prompt, stratified_sample
from tests.evaluation.conftest import ROWS, write_jsonl


def test_jsonl_csv_and_saved_dataset_read_the_same(tmp_path, mixed_set):
    from datasets import Dataset

    csv_path = tmp_path / "mixed.csv"
    csv_path.write_text("prompt,harmful,type\n" + "".join(
        f"\"{r['text']}\",{int(r['label'] == 'harmful')},{r['category']}\n" for r in ROWS))
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    sets = [load_file_set(mixed_set), load_file_set(csv_path, name="mixed"),
            load_file_set(tmp_path / "ds", name="mixed")]
    for s in sets:
        assert [(p.text, p.label, p.category) for p in s.prompts] == \
            [(r["text"], r["label"], r["category"]) for r in ROWS]
    assert sets[0].prompts == sets[2].prompts  # same set name and text: same keys


def test_messages_rows_bad_rows_and_default_label(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "name a river"},
                          {"role": "assistant", "content": "The Nile."},
                          {"role": "user", "content": "and a longer one?"},
                          {"role": "assistant", "content": "(answer to grade: dropped)"}]},
            {"messages": [{"from": "human", "value": "what rhymes with cat"}]},
            {"messages": [{"role": "wizard", "content": "x"}]},
            {"messages": 5}, {"other": 1},
            {"messages": [{"from": "human", "value": "what rhymes with cat"}]},
            {"text": "a plain prompt among conversations", "label": "harmful"}]
    s = load_file_set(write_jsonl(tmp_path / "chat.jsonl", rows), label="benign")
    assert s.skipped == 4 and len(s.prompts) == 3
    assert s.prompts[2].text == "a plain prompt among conversations"
    assert s.prompts[2].label == "harmful"  # its own label wins over the default
    assert [m["role"] for m in s.prompts[0].messages] == ["system", "user", "assistant", "user"]
    assert s.prompts[0].text == "and a longer one?" and s.prompts[0].label == "benign"


def test_unreadable_sets_say_why(tmp_path):
    with pytest.raises(SetError, match="no such file"):
        load_file_set(tmp_path / "missing.jsonl")
    with pytest.raises(SetError, match="no text column"):
        load_file_set(write_jsonl(tmp_path / "odd.jsonl", [{"body": "hi"}]))
    with pytest.raises(SetError, match="no text column 'txt'"):
        load_file_set(write_jsonl(tmp_path / "a.jsonl", [{"text": "hi"}]), text_field="txt")
    with pytest.raises(SetError, match="no usable prompts"):
        load_file_set(write_jsonl(tmp_path / "empty.jsonl", [{"text": "  "}]))
    (tmp_path / "x.parquet").write_text("?")
    with pytest.raises(SetError, match="unknown set format"):
        load_file_set(tmp_path / "x.parquet")


def test_stratified_sample_keeps_proportions_and_is_stable():
    prompts = [make_prompt("s", f"question {i}", label="harmful" if i % 4 == 0 else "benign",
                           category="a" if i % 2 else "b") for i in range(100)]
    got = stratified_sample([p for p in prompts if p], 20, seed=3)
    assert len(got) == 20
    strata = Counter((p.label, p.category) for p in got)
    assert strata == {("benign", "a"): 10, ("harmful", "b"): 5, ("benign", "b"): 5}
    assert got == stratified_sample([p for p in prompts if p], 20, seed=3)
    assert got != stratified_sample([p for p in prompts if p], 20, seed=4)


def test_public_sets_by_name_use_the_test_half(tmp_path):
    folder = tmp_path / "data" / "do_not_answer"
    folder.mkdir(parents=True)
    texts = [f"made-up risky request number {i}" for i in range(40)]
    (folder / "do_not_answer_en_prompt.jsonl").write_text("".join(
        json.dumps({"question": t, "type": "Risk area " + str(i % 2)}) + "\n"
        for i, t in enumerate(texts)))
    s = load_public_set(tmp_path / "data", "do_not_answer")
    assert {p.text for p in s.prompts} == {t for t in texts if half(t) == "test"}
    assert 5 < len(s.prompts) < 35
    assert all(p.label == "harmful" and p.category.startswith("Risk area") for p in s.prompts)
    with pytest.raises(SetError, match="missing"):
        load_public_set(tmp_path / "data", "vicuna_bench")
    with pytest.raises(SetError, match="unknown set"):
        load_public_set(tmp_path / "data", "nope")
    assert "hh_rlhf_harmless" in PUBLIC_SETS


def test_hh_transcripts_become_conversations_ending_with_the_user():
    transcript = ("\n\nHuman: my bike squeaks\n\nAssistant: Where does it squeak?"
                  "\n\nHuman: near the pedals\n\nAssistant: Try oiling the chain.")
    assert hh_conversation(transcript) == [
        {"role": "user", "content": "my bike squeaks"},
        {"role": "assistant", "content": "Where does it squeak?"},
        {"role": "user", "content": "near the pedals"}]


def test_bench_loader_still_reads_the_public_sets(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.retrieval_quality import load_sets

    folder = tmp_path / "data" / "mt_bench"
    folder.mkdir(parents=True)
    (folder / "question.jsonl").write_text(json.dumps(
        {"turns": ["plan a picnic", "now for ten people"], "category": "writing"}) + "\n")
    sets = {s.name: s for s in load_sets(tmp_path / "data", alpaca_max=10)}
    assert sets["mt_bench"].prompts == ["plan a picnic"] and not sets["mt_bench"].harmful
