"""Reading build inputs: every format, the text column, and every kind of bad row."""

from __future__ import annotations

import gzip
import json

import pytest

from guideline_lib.inputs import InputError, input_key, read_inputs


def test_plain_text_one_input_per_line(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("How tall is Mont Blanc?\nWrite a haiku about rain\n")
    items, stats = read_inputs([tmp_path / "in.txt"])
    assert [i.text for i in items] == ["How tall is Mont Blanc?", "Write a haiku about rain"]
    assert (items[1].source, items[1].line) == (str(tmp_path / "in.txt"), 2)
    assert stats.read == 2 and stats.kept == 2 and not any(stats.skipped.values())


def test_jsonl_with_a_chosen_field_and_message_lists(tmp_path) -> None:
    rows = [{"prompt": "Sort a list in Go"},
            {"prompt": [{"role": "system", "content": "be nice"},
                        {"role": "user", "content": "I need a name for my cat"},
                        {"role": "assistant", "content": "Miso?"},
                        {"role": "user", "content": "something longer"}]},
            "a bare JSON string row"]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items, _ = read_inputs([tmp_path / "in.jsonl"], text_field="prompt")
    assert [i.text for i in items] == ["Sort a list in Go",
                                       "I need a name for my cat\nsomething longer",
                                       "a bare JSON string row"]


def test_json_array_and_gzipped_jsonl(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "Name three rivers"}]))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"instruction": "Define entropy"}\n'))
    items, _ = read_inputs([tmp_path / "a.json", tmp_path / "b.jsonl.gz"],
                           text_field="instruction")
    assert [i.text for i in items] == ["Name three rivers", "Define entropy"]


def test_csv_column_selection_with_quoted_commas_and_newlines(tmp_path) -> None:
    (tmp_path / "in.csv").write_text('id,question\n1,"Hi, how are you?"\n2,"two\nlines"\n')
    items, _ = read_inputs([tmp_path / "in.csv"], text_field="question")
    assert [i.text for i in items] == ["Hi, how are you?", "two\nlines"]


def test_unknown_csv_column_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "in.csv").write_text("id,question\n1,hello\n")
    with pytest.raises(InputError, match=r"no column 'text' \(columns: id, question\)"):
        read_inputs([tmp_path / "in.csv"])


def test_hugging_face_dataset_on_disk(tmp_path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"goal": ["Plan a picnic", ""], "n": [1, 2]}),
                 "test": Dataset.from_dict({"goal": ["Explain tides", "Plan a picnic"],
                                            "n": [3, 4]})}).save_to_disk(tmp_path / "ds")
    items, stats = read_inputs([tmp_path / "ds"], text_field="goal")
    assert [i.text for i in items] == ["Plan a picnic", "Explain tides"]
    assert stats.skipped["empty"] == 1 and stats.skipped["duplicate"] == 1
    with pytest.raises(InputError, match="no column 'text'"):
        read_inputs([tmp_path / "ds"])


def test_every_kind_of_bad_row_is_skipped_and_counted(tmp_path) -> None:
    (tmp_path / "in.txt").write_bytes(
        b"good text line\n"
        b"   \n"                         # empty
        b"caf\xe9 latin-1 bytes\n"        # not UTF-8
        + b"x" * 500 + b"\n"             # too long for max_chars=100
        b"GOOD text line!\n"             # duplicate after normalisation
    )
    (tmp_path / "in.jsonl").write_bytes(
        b'{"text": "valid json row"}\n'
        b'{"text": "unterminated\n'      # malformed JSON
        b'{"other": "no text field"}\n'  # malformed: field missing
        b'{"text": 42}\n'                # malformed: not text
        b'{"text": null}\n'              # empty
        b'[1, 2]\n'                      # malformed: not an object
        b'{"text": "\\u0000\\u0000"}\n'  # empty once NULs are removed
    )
    (tmp_path / "in.csv").write_bytes(
        b"text,n\n"
        b"a csv row,1\n"
        b"too,many,fields\n"             # malformed
        b"\xff\xfe,2\n"                  # not UTF-8
        b",3\n"                          # empty
    )
    items, stats = read_inputs([tmp_path / "in.txt", tmp_path / "in.jsonl",
                                tmp_path / "in.csv"], max_chars=100)
    assert [i.text for i in items] == ["good text line", "valid json row", "a csv row"]
    assert stats.skipped == {"empty": 4, "too_long": 1, "not_utf8": 2, "malformed": 5,
                             "duplicate": 1}
    assert stats.read == 3 + 13 and stats.kept == 3
    summary = stats.summary()
    assert summary.startswith("read 16 rows, kept 3, skipped 1 duplicate, 4 empty")
    assert any("in.jsonl:2: skipped (malformed: not valid JSON" in n for n in stats.notes)
    assert any("in.csv:3: skipped (malformed: 3 fields, header has 2)" in n for n in stats.notes)


def test_garbage_files_do_not_crash(tmp_path) -> None:
    (tmp_path / "bin.json").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "top.json").write_text("42")
    items, stats = read_inputs([tmp_path / "bin.json", tmp_path / "empty.csv",
                                tmp_path / "top.json"])
    assert items == [] and stats.kept == 0 and sum(stats.skipped.values()) == stats.read


def test_missing_path_and_unknown_format_are_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_inputs([tmp_path / "nope.txt"])
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match="unknown input format"):
        read_inputs([tmp_path / "x.parquet"])


def test_keys_are_stable_and_collapse_trivial_variants() -> None:
    assert input_key("How do I  bake bread?") == input_key("how do i bake bread")
    assert input_key("bake bread") != input_key("bake cake")
