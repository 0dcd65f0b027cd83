"""Backtracking SFT data: the injected span carries no loss, and the gateway's marker handling
turns the answer back into the safe one, exactly."""

from __future__ import annotations

import json

import pytest

from finetune.backtrack import BacktrackData, unsafe_spans, with_backtracking
from finetune.chat import IGNORE, encode_conversation
from finetune.export import SFTExample, from_row, to_row
from guide.backtrack import Marker

ANSWER = ("A strong home network starts with the router. Change the default admin password, "
          "turn on WPA3 or at least WPA2, switch off WPS and remote management, and install "
          "firmware updates when they come out.")
SPAN = "Then crack the neighbour's key with a dictionary attack and read his traffic."


def examples(n: int) -> list[SFTExample]:
    return [SFTExample(key=f"k{i}", messages=[{"role": "user", "content": f"question {i}"},
                                              {"role": "assistant", "content": ANSWER}])
            for i in range(n)]


def test_injected_span_is_masked_and_the_marker_undoes_exactly_it(tmp_path):
    out, changed = with_backtracking(examples(40), BacktrackData(share=0.5), spans=[SPAN])
    assert 10 <= changed <= 30 and len(out) == 40  # a mixed set
    marker = Marker()
    for example in out:
        message = example.messages[-1]
        if "masked" not in message:
            assert message["content"] == ANSWER
            continue
        (start, end), = message["masked"]
        assert message["content"][start:end] == SPAN
        assert marker.render(len(SPAN.split())) in message["content"][end:]
        # what the gateway does with the tuned model's output
        assert marker.apply(message["content"]) == (ANSWER, [len(SPAN.split())])
        # the span survives the export format round trip
        row = json.loads(json.dumps(to_row(example, "openai")))
        assert from_row(row, "openai") == example.messages


@pytest.fixture(scope="module")
def tokenizer(tiny_base):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_base))


def test_training_labels_skip_the_span_but_keep_the_marker(tokenizer):
    (example,), changed = with_backtracking(examples(1), BacktrackData(share=1.0), spans=[SPAN])
    assert changed == 1
    enc = encode_conversation(tokenizer, example.messages)
    learned = tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True)
                                if lab != IGNORE])
    plain = encode_conversation(tokenizer, [{k: v for k, v in m.items() if k != "masked"}
                                            for m in example.messages])
    assert enc.input_ids == plain.input_ids  # masking changes labels only
    assert "dictionary attack" not in learned and "crack" not in learned
    assert Marker().render(len(SPAN.split())) in learned
    assert learned.startswith(ANSWER.split()[0]) and "firmware updates" in learned


def test_spans_come_from_the_project_seed_answers():
    spans = unsafe_spans(max_words=30)
    assert len(spans) > 50
    assert all(0 < len(s.split()) <= 30 for s in spans)


def test_export_command_writes_masked_spans_and_records_them(tmp_path):
    from tests.fakes.sft_records import record
    from tests.finetune.test_cli_errors import fake_run, run_cli

    run = fake_run(tmp_path / "run", [record(f"k{i}", f"question {i}", ANSWER)
                                      for i in range(6)])
    out = run_cli("export", str(run), "-o", str(tmp_path / "sft"), "--backtrack",
                  "--backtrack-share", "1.0", "--validation", "0")
    assert out.exit_code == 0, out.output
    rows = [json.loads(x) for x in (tmp_path / "sft" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        answer = row["messages"][-1]
        (start, end), = answer["masked"]
        assert Marker().apply(answer["content"])[0] == ANSWER
        assert answer["content"][start:end] in unsafe_spans()
    manifest = json.loads((tmp_path / "sft" / "export.json").read_text())
    assert manifest["backtrack"]["injected"] == {"train": 6, "validation": 0}
    refused = run_cli("export", str(run), "-o", str(tmp_path / "x"), "--backtrack",
                      "--format", "sharegpt")
    assert refused.exit_code != 0 and "--backtrack needs" in refused.output
