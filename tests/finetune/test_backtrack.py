"""Backtracking SFT data: the injected span carries no loss, and the gateway's marker handling
turns the answer back into the safe one, exactly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.backtrack import BacktrackConfig, Source, guard_answer, guard_stream
from app.config import Settings
from finetune.backtrack import BacktrackData, unsafe_spans, with_backtracking
from finetune.chat import IGNORE, encode_conversation
from finetune.export import SFTExample, from_row, to_row
from guide.backtrack import Marker
from judge.model import Verdict

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
    # by default no span is longer than the gateway's default window: all of it is still
    # held back when the marker arrives, so all of it can be taken back
    window = Settings().backtrack_window
    assert BacktrackData().max_span_words <= window
    assert max(len(s.split()) for s in unsafe_spans()) == BacktrackData().max_span_words


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


def test_the_trainer_gives_the_span_no_loss(tiny_base, tmp_path):
    """The batches `finetune train` optimises: span tokens are -100, marker and rest count."""
    from finetune.models import load_model
    from finetune.train import TrainConfig, build_trainer

    (example,), _ = with_backtracking(examples(1), BacktrackData(share=1.0), spans=[SPAN])
    base = load_model(tiny_base)
    trainer = build_trainer(base, {"train": [example.messages]},
                            config=TrainConfig(max_steps=1, batch_size=1, show_progress=False),
                            work_dir=tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    tok = base.tokenizer
    learned = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    skipped = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE])
    content = example.messages[-1]["content"]
    (start, end), = example.messages[-1]["masked"]
    # every label kept is the token itself (no shift or substitution by the collator)
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels, strict=True))
    assert SPAN.strip() in skipped and "dictionary" not in learned
    assert learned.startswith(content[:start].strip())
    assert content[end:].strip() in learned  # the marker and the safe rest
    # the loss the trainer optimises sends no gradient through the span's predictions
    trained = [i for i, lab in enumerate(labels) if lab != IGNORE]
    hole = [i for i in range(trained[0], trained[-1]) if labels[i] == IGNORE]
    assert len(hole) >= len(SPAN.split())
    out = trainer.model(**batch)
    out.logits.retain_grad()
    out.loss.backward()
    grad = out.logits.grad[0].abs().sum(dim=-1)  # row i predicts token i + 1
    assert all(float(grad[i - 1]) == 0.0 for i in hole)
    assert all(float(grad[i - 1]) > 0.0 for i in trained)


def chunks_of(text: str, tokenizer: Any) -> list[str]:
    """``text`` cut where the model's tokens end: the deltas a tuned model streams."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = [tokenizer.decode([i]) for i in ids]
    assert "".join(out) == text
    return out


def sse(chunks: list[str]) -> Source:
    async def events() -> AsyncIterator[bytes]:
        for i, piece in enumerate(chunks):
            delta: dict[str, Any] = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            yield b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk",
                                          "choices": [{"index": 0, "delta": delta,
                                                       "finish_reason": None}]}).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def close() -> None:
        return None

    return Source(events=events(), close=close)


async def never_unsafe(conversation: Any, answer: str) -> Verdict:
    """A critic that passes everything: only the upstream's own marker takes text back."""
    return Verdict(label="useful", scores={"unsafe": 0.0, "refusal": 0.0, "useful": 1.0},
                   categories={})


async def no_reopen(messages: Any) -> Source:
    raise AssertionError("a marker never calls the upstream again")


async def no_strengthen(categories: Any) -> str:
    raise AssertionError("a marker needs no strengthened guidance")


def client_text(events: list[bytes]) -> tuple[str, dict[str, Any]]:
    text, report = "", {}
    for event in events:
        payload = event.decode().removeprefix("data: ").strip()
        if payload == "[DONE]":
            continue
        obj = json.loads(payload)
        for choice in obj.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
        report = obj.get("guide_align", {}).get("backtrack", report)
    return text, report


def test_the_gateway_turns_a_streamed_exported_answer_back_into_the_safe_one(tokenizer):
    """Exported answers with the longest default spans, streamed token by token through the
    gateway's hold-back window (default settings): the client reads the safe answer, exactly."""
    spans = sorted(unsafe_spans(), key=lambda s: -len(s.split()))[:3]
    out, changed = with_backtracking(examples(12), BacktrackData(share=1.0), spans=spans)
    assert changed == 12
    config = BacktrackConfig(window=Settings().backtrack_window)
    ask = [{"role": "user", "content": "question"}]

    async def relay(text: str) -> list[bytes]:
        stream = guard_stream(sse(chunks_of(text, tokenizer)), conversation=ask, guided=ask,
                              judge=never_unsafe, reopen=no_reopen, strengthen=no_strengthen,
                              config=config)
        return [event async for event in stream]

    for example in out:
        content = example.messages[-1]["content"]
        (start, end), = example.messages[-1]["masked"]
        text, report = client_text(asyncio.run(relay(content)))
        assert text == ANSWER, content
        assert content[start:end] not in text and "backtrack" not in text
        assert report["marker_retractions"] == 1 and report["retractions"] == 0


def test_the_gateway_undoes_the_span_of_a_non_streaming_answer():
    (example,), _ = with_backtracking(examples(1), BacktrackData(share=1.0), spans=[SPAN])
    ask = [{"role": "user", "content": "question"}]
    answer = {"choices": [{"index": 0, "message": dict(example.messages[-1])}]}

    async def no_regenerate(messages: Any) -> dict[str, Any]:
        raise AssertionError("a safe answer is not regenerated")

    report = asyncio.run(guard_answer(answer, conversation=ask, guided=ask, judge=never_unsafe,
                                      regenerate=no_regenerate, strengthen=no_strengthen,
                                      config=BacktrackConfig()))
    assert answer["choices"][0]["message"]["content"] == ANSWER
    assert report.markers == 1 and report.retractions == 0
