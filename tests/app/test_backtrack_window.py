"""The hold-back window's timing seam (app/backtrack.py) with a scripted critic: the critic is
not asked while the first window fills, so the first text waits for one verdict, not several."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import orjson

from app.backtrack import BacktrackConfig, Report, Source, guard_stream
from judge.model import Verdict

WORDS = [f"word{i} " for i in range(40)]


def _source(chunks: Sequence[str]) -> Source:
    async def events() -> AsyncGenerator[bytes, None]:
        for c in chunks:
            await asyncio.sleep(0)
            yield b"data: " + orjson.dumps({"choices": [
                {"index": 0, "delta": {"content": c}, "finish_reason": None}]}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    gen = events()
    return Source(gen, gen.aclose)


def _run(mode: str, window: int = 8) -> tuple[list[int], str]:
    asked: list[int] = []

    async def judge(messages: Sequence[dict[str, Any]], answer: str) -> Verdict:
        asked.append(len(answer.split()))
        return Verdict("useful", {"unsafe": 0.0, "refusal": 0.0, "useful": 1.0}, {})

    async def never(*_: Any) -> Any:
        raise AssertionError("a safe stream is never continued")

    async def main() -> str:
        config = BacktrackConfig(mode=mode, window=window, every=4)  # type: ignore[arg-type]
        out = []
        async for event in guard_stream(
                _source(WORDS), conversation=[{"role": "user", "content": "count"}],
                guided=[{"role": "user", "content": "count"}], judge=judge, reopen=never,
                strengthen=never, config=config, report=Report(mode)):
            payload = event.removeprefix(b"data: ").strip()
            if payload != b"[DONE]":
                for choice in orjson.loads(payload).get("choices") or []:
                    out.append(choice["delta"].get("content") or "")
        return "".join(out)

    return asked, asyncio.run(main())


def test_enforce_asks_the_critic_only_once_the_first_window_is_full() -> None:
    asked, text = _run("enforce", window=8)
    assert text == "".join(WORDS)  # everything judged safe reaches the client, in order
    assert asked[0] > 8  # the first verdict covers more than the window: text can leave
    assert asked[-1] == len(WORDS)  # the end of the answer is judged before it is released


def test_monitor_keeps_judging_from_the_first_words() -> None:
    asked, text = _run("monitor", window=8)
    assert text == "".join(WORDS)
    assert asked[0] <= 8  # monitor relays at once and reports on every few words
