"""Stream backtracking in the gateway: a hold-back window, the critic, retraction, continuation.

A streamed answer's text is held back until the critic (the response judge) has judged a prefix
that reaches ``window`` words past it; only then does it go to the client. The critic judges the
conversation plus the answer so far every ``every`` words, at word boundaries, one verdict in
flight per stream (a slow critic coalesces words, it never lets them through unjudged). On an
``unsafe`` verdict at or above the threshold the held text is dropped, the upstream stream is
closed, and the upstream is asked again to continue from the clean prefix (the text already
sent) with strengthened guidelines; the client's stream simply goes on. After
``max_retractions`` the answer ends with a short safe completion. ``monitor`` relays at once
and only reports. The upstream's own backtrack marker is honoured and never shown.
Nothing here knows HTTP: the route passes in how to reopen the upstream and judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from app.errors import GatewayError
from app.upstream import DONE, sse_error
from guide.backtrack import (
    Continuation,
    Marker,
    closing,
    continuation_messages,
    release_point,
    word_boundary,
    words_in,
)
from judge.model import Verdict

log = logging.getLogger(__name__)

Messages = Sequence[dict[str, Any]]
Judge = Callable[[Messages, str], Awaitable[Verdict]]
Strengthen = Callable[[Sequence[str]], Awaitable[str]]
CATEGORY_FLOOR = 0.3  # a category is named when the critic gives it at least this


@dataclass(frozen=True)
class BacktrackConfig:
    """One request's backtracking: the deployment's settings after its options."""

    mode: str = "enforce"  # monitor | enforce
    window: int = 16
    every: int = 4
    threshold: float = 0.5
    max_retractions: int = 2
    continuation: Continuation = "fold"
    marker: Marker | None = field(default_factory=Marker)
    log_retracted: bool = False


@dataclass
class Report:
    """What backtracking did to one answer; sent in the stream's last chunk or a header."""

    mode: str
    retractions: int = 0
    categories: list[str] = field(default_factory=list)
    markers: int = 0  # retractions the upstream asked for with its own marker
    flagged: int = 0  # monitor: unsafe verdicts that enforce would have acted on
    closed: bool = False  # the answer ended with the safe completion
    judged: int = 0  # critic verdicts used

    def add(self, categories: Sequence[str]) -> None:
        self.categories = list(dict.fromkeys([*self.categories, *categories]))

    def as_dict(self) -> dict[str, Any]:
        """The ``guide_align.backtrack`` field."""
        out: dict[str, Any] = {"mode": self.mode, "retractions": self.retractions,
                               "categories": self.categories}
        if self.markers:
            out["marker_retractions"] = self.markers
        if self.mode == "monitor":
            out["flagged"] = self.flagged
        if self.closed:
            out["closed"] = True
        return out

    def header(self) -> str:
        """The ``x-guide-align-backtrack`` value of a non-streaming answer."""
        value = f"{self.mode};retractions={self.retractions}"
        if self.mode == "monitor":
            value += f";flagged={self.flagged}"
        return value + (f";categories={','.join(self.categories)}" if self.categories else "")


@dataclass
class Source:
    """An open upstream stream: its SSE events (as ``relay_sse`` yields them) and its closer."""

    events: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


Reopen = Callable[[list[dict[str, Any]]], Awaitable[Source]]


def unsafe_categories(verdict: Verdict) -> list[str]:
    """The safety categories the critic names (at least the likeliest one)."""
    ranked = sorted(verdict.categories.items(), key=lambda kv: -kv[1])
    return [c for c, s in ranked[:3] if s >= CATEGORY_FLOOR] or [ranked[0][0]]


async def _next(events: AsyncIterator[bytes]) -> bytes | None:
    return await anext(events, None)


def _payload(event: bytes) -> bytes:
    return b"\n".join(ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:"))


class _Guard:
    """The state of one guarded stream (see the module docstring)."""

    def __init__(self, source: Source, *, conversation: Messages, guided: Messages,
                 judge: Judge, reopen: Reopen, strengthen: Strengthen,
                 config: BacktrackConfig, report: Report):
        self.source, self.conversation, self.guided = source, conversation, guided
        self.judge, self.reopen, self.strengthen = judge, reopen, strengthen
        self.cfg, self.report = config, report
        self.text = ""  # the answer so far, held part included
        self.sent = 0  # text[:sent] is with the client
        self.safe = 0  # text[:safe] was judged safe
        self.asked = 0  # text[:asked] went to the critic
        self.gen = 0  # bumped when text the critic saw changes: older verdicts are void
        self.was_unsafe = False
        self.ended = False  # the current upstream stream has ended
        self.fresh = False  # the next text starts a continuation
        self.meta: dict[str, Any] = {"id": "chatcmpl-guide-align",
                                     "object": "chat.completion.chunk",
                                     "created": int(time.time()), "model": ""}
        self.seen_meta = False
        self.role_sent = False
        self.finish: str | None = None
        self.deltas: list[dict[str, Any]] = []  # non-text deltas (tool calls), after the text
        self.usage: list[dict[str, Any]] = []
        self.reading: asyncio.Task[bytes | None] | None = None
        self.judging: asyncio.Task[Verdict] | None = None
        self.judging_at = (0, 0)
        self.stop: list[bytes] = []  # the last events, when the stream ends early

    # -- wire -------------------------------------------------------------------------------
    def _event(self, data: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def _chunk(self, text: str) -> bytes:
        return self._event({**self.meta, "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": None}]})

    def _report(self) -> bytes:
        return self._event({**self.meta, "choices": [],
                            "guide_align": {"backtrack": self.report.as_dict()}})

    def _finish(self) -> list[bytes]:
        out = [self._chunk(self.text[self.sent:])] if self.sent < len(self.text) else []
        self.sent = len(self.text)
        out += [self._event({**self.meta, "choices": [{"index": 0, "delta": d,
                                                       "finish_reason": None}]})
                for d in self.deltas]
        out.append(self._event({**self.meta, "choices": [
            {"index": 0, "delta": {}, "finish_reason": self.finish or "stop"}]}))
        out += [self._event(u) for u in self.usage]
        return [*out, self._report(), DONE]

    def _fail(self, event: bytes) -> list[bytes]:
        # held text was never judged clean: it is dropped with the failed stream
        return [self._report(), event, DONE]

    # -- the window ---------------------------------------------------------------------------
    def _hold_from(self) -> int:
        if self.cfg.marker is None or self.ended:
            return len(self.text)
        return self.cfg.marker.partial_start(self.text)

    def _release(self) -> list[bytes]:
        point = len(self.text) if self.cfg.mode == "monitor" else \
            release_point(self.text, self.safe, self.cfg.window)
        point = min(point, self._hold_from())
        if point <= self.sent:
            return []
        out = self._chunk(self.text[self.sent:point])
        self.sent = point
        return [out]

    def _maybe_judge(self) -> None:
        if self.judging is not None:
            return
        end = len(self.text) if self.ended else min(word_boundary(self.text), self._hold_from())
        if end <= self.asked:
            return
        new = words_in(self.text[self.asked:end])
        if new == 0:  # only whitespace since the last verdict
            if self.safe == self.asked:
                self.safe = end
            self.asked = end
            return
        # the first release waits for a verdict past the window: ask as soon as there is one,
        # and not before (an earlier verdict would only delay that one)
        filling = self.sent == 0 and not self.ended and self.cfg.mode == "enforce" \
            and words_in(self.text[:end]) <= self.cfg.window
        if filling:
            return
        first = self.sent == 0 and words_in(self.text[:self.asked]) <= self.cfg.window \
            < words_in(self.text[:end])
        if new >= self.cfg.every or self.ended or first:
            self.asked = end
            self.judging_at = (end, self.gen)
            self.judging = asyncio.ensure_future(self.judge(self.conversation, self.text[:end]))

    # -- events ---------------------------------------------------------------------------------
    def _on_event(self, raw: bytes | None) -> list[bytes] | None:
        """Client events for one upstream event; None when the stream must stop (with
        ``self.stop`` holding the last events)."""
        payload = _payload(raw) if raw is not None else b"[DONE]"
        if payload == b"[DONE]" or not payload:
            self.ended = raw is None or payload == b"[DONE]"
            return []
        obj = orjson.loads(payload)
        if not isinstance(obj, dict):
            return []
        if "error" in obj and not obj.get("choices"):
            self.stop = self._fail(raw or b"")
            return None
        if not self.seen_meta and "choices" in obj:
            self.seen_meta = True
            self.meta |= {k: obj[k] for k in ("id", "created", "model", "system_fingerprint")
                          if k in obj}
        choices = obj.get("choices") or []
        if not choices:
            self.usage = [obj]
            return []
        choice = choices[0]
        delta = choice.get("delta") or {}
        out: list[bytes] = []
        extra = {k: v for k, v in delta.items() if k != "content" and v is not None}
        if set(extra) == {"role"}:
            if not self.role_sent:
                self.role_sent = True
                out.append(self._event({**self.meta, "choices": [
                    {"index": 0, "delta": extra, "finish_reason": None}]}))
        elif extra:
            self.deltas.append(extra)
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.fresh and self.text and not self.text[-1].isspace() \
                    and not content[0].isspace() and content[0] not in ".,;:!?)":
                content = " " + content
            self.fresh = False
            self.text += content
            self._apply_marker()
        return out + self._release()

    def _apply_marker(self) -> None:
        if self.cfg.marker is None:
            return
        before = self.text
        self.text, removed = self.cfg.marker.apply(before, floor=self.sent)
        if not removed:
            return
        self.report.markers += len(removed)
        same = next((i for i, (a, b) in enumerate(zip(before, self.text, strict=False))
                     if a != b), min(len(before), len(self.text)))
        self.safe, self.asked = min(self.safe, same), min(self.asked, same)
        self.gen += 1

    async def _on_verdict(self, verdict: Verdict) -> list[bytes] | None:
        end, gen = self.judging_at
        self.report.judged += 1
        if gen != self.gen:
            return []
        if verdict.scores.get("unsafe", 0.0) < self.cfg.threshold:
            self.was_unsafe = False
            self.safe = max(self.safe, end)
            return self._release()
        categories = unsafe_categories(verdict)
        if self.cfg.mode == "monitor":
            self.report.flagged += not self.was_unsafe
            self.was_unsafe = True
            self.report.add(categories)
            self.safe = max(self.safe, end)
            return self._release()
        return await self._retract(categories)

    async def _stop_reading(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reading
            self.reading = None
        await self.source.close()

    async def _retract(self, categories: list[str]) -> list[bytes] | None:
        if self.cfg.log_retracted:
            log.info("retracted (%s): %r", ",".join(categories), self.text[self.sent:])
        self.text = self.text[:self.sent]
        self.safe = self.asked = self.sent
        self.gen += 1
        self.report.retractions += 1
        self.report.add(categories)
        self.finish, self.deltas, self.usage = None, [], []
        await self._stop_reading()
        if self.report.retractions > self.cfg.max_retractions:
            self.report.closed = True
            end = closing(self.conversation)
            self.text += end if not self.text or self.text[-1].isspace() else " " + end
            self.stop = self._finish()
            return None
        block = await self.strengthen(categories)
        messages = continuation_messages(self.guided, self.text, block=block,
                                         how=self.cfg.continuation)
        try:
            self.source = await self.reopen(messages)
        except GatewayError as exc:
            self.stop = self._fail(sse_error(f"continuation failed: {exc.message}",
                                             code=exc.code or "stream_error"))
            return None
        self.ended, self.fresh = False, True
        return []

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if not self.ended and self.reading is None:
                    self.reading = asyncio.ensure_future(_next(self.source.events))
                self._maybe_judge()
                if self.ended and self.judging is None:
                    for event in self._finish():
                        yield event
                    return
                reading, judging = self.reading, self.judging
                waits = {t for t in (reading, judging) if t is not None}
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                out: list[bytes] | None = []
                if judging is not None and judging in done:
                    self.judging = None
                    try:
                        verdict = judging.result()
                    except Exception as exc:  # no critic, no release: end the answer here
                        log.exception("backtracking critic failed")
                        self.stop = self._fail(sse_error(
                            f"backtracking critic failed ({type(exc).__name__})",
                            type_="gateway_error", code="critic_error"))
                        out = None
                    else:
                        out = await self._on_verdict(verdict)
                if out is not None and reading is not None and reading in done \
                        and reading is self.reading:
                    self.reading = None
                    more = self._on_event(reading.result())
                    out = None if more is None else [*out, *more]
                if out is None:
                    for event in self.stop:
                        yield event
                    return
                for event in out:
                    yield event
        finally:
            if self.judging is not None:
                self.judging.cancel()
            # A disconnected client cancels the response's task scope, and anyio cancels every
            # await inside it again: shielded, the upstream call in flight is really closed.
            with anyio.CancelScope(shield=True):
                await self._stop_reading()


def guard_stream(source: Source, *, conversation: Messages, guided: Messages, judge: Judge,
                 reopen: Reopen, strengthen: Strengthen, config: BacktrackConfig,
                 report: Report | None = None) -> AsyncIterator[bytes]:
    """The client's SSE events for an upstream stream under backtracking; ends with the
    ``guide_align`` report chunk and ``[DONE]``. ``conversation`` is what the client sent (the
    critic judges answers to it); ``guided`` is what went upstream (continuations extend it)."""
    guard = _Guard(source, conversation=conversation, guided=guided, judge=judge,
                   reopen=reopen, strengthen=strengthen, config=config,
                   report=report or Report(config.mode))
    return guard.run()


async def guard_answer(answer: dict[str, Any], *, conversation: Messages, guided: Messages,
                       judge: Judge, regenerate: Callable[[list[dict[str, Any]]],
                                                          Awaitable[dict[str, Any]]],
                       strengthen: Strengthen, config: BacktrackConfig) -> Report:
    """Backtracking for a non-streaming answer, in place: judge the whole answer; when it is
    unsafe (enforce), regenerate once with strengthened guidelines, then end with the safe
    completion. The upstream's markers are applied first."""
    report = Report(config.mode)
    message = _message(answer)
    if message is None:
        return report
    text = message["content"]
    if config.marker is not None:
        text, removed = config.marker.apply(text)
        report.markers = len(removed)
    verdict = await judge(conversation, text)
    report.judged += 1
    if verdict.scores.get("unsafe", 0.0) >= config.threshold:
        report.add(unsafe_categories(verdict))
        if config.mode == "monitor":
            report.flagged = 1
        else:
            report.retractions = 1
            text = await _regenerate(report, conversation=conversation, guided=guided,
                                     judge=judge, regenerate=regenerate,
                                     strengthen=strengthen, config=config, answer=answer)
    message["content"] = text
    return report


async def _regenerate(report: Report, *, conversation: Messages, guided: Messages,
                      judge: Judge, regenerate: Callable[[list[dict[str, Any]]],
                                                         Awaitable[dict[str, Any]]],
                      strengthen: Strengthen, config: BacktrackConfig,
                      answer: dict[str, Any]) -> str:
    if config.max_retractions >= 1:
        block = await strengthen(report.categories)
        again = await regenerate(continuation_messages(guided, "", block=block,
                                                       how=config.continuation))
        message = _message(again)
        if message is not None:
            text = message["content"]
            if config.marker is not None:
                text, removed = config.marker.apply(text)
                report.markers += len(removed)
            verdict = await judge(conversation, text)
            report.judged += 1
            if verdict.scores.get("unsafe", 0.0) < config.threshold:
                for key in ("id", "created", "model", "usage"):
                    if key in again:
                        answer[key] = again[key]
                return str(text)
            report.retractions += 1
            report.add(unsafe_categories(verdict))
    report.closed = True
    return closing(conversation)


def _message(answer: dict[str, Any]) -> dict[str, Any] | None:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return None
    return message
