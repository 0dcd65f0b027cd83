"""Query refinement in the gateway: the refiner client and the stage before the guide step.

The refiner is any OpenAI-compatible endpoint; it rewrites the latest user turn
(``guide.refine.refiner_messages``) and its output is accepted by ``guide.refine.check_refined``.
A refiner that fails, times out or answers badly never fails a request: the original is used
and the outcome is counted. docs/refinement.md.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.side_model import SideModel, SideModelError
from guide.refine import check_refined, clean_refined, latest_user_index, refiner_messages
from guide.views import normalise_roles
from retriever.query import message_text

log = logging.getLogger("guide_align.refine")

Messages = list[dict[str, Any]]
# The local refiner `guide-align up` starts when no refine_base_url is set.
LOCAL_PORT = 8083
LOCAL_MODEL_FILE = Path("refiner") / "current.gguf"  # under var_dir
# Request fields that make a chat request more than plain chat text.
_TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call")


class RefinerError(SideModelError):
    """The refiner endpoint did not give a usable answer."""


def local_model(settings: Settings) -> Path:
    """Where the embedded refiner model is (it may not exist yet)."""
    return settings.var_dir / LOCAL_MODEL_FILE


def local_url(port: int = LOCAL_PORT) -> str:
    return f"http://127.0.0.1:{port}/v1"


def start_local_refiner(settings: Settings, *, port: int = LOCAL_PORT,
                        log_file: Path | None = None) -> subprocess.Popen[bytes] | None:
    """The embedded refiner as a second llama.cpp server process on loopback, started only
    when refinement is on, no ``refine_base_url`` is set and the refiner model exists.

    A second process rather than a second model of the same server: llama_cpp.server keeps one
    model loaded and reloads on every switch, and serves one completion at a time.
    """
    from app.launcher import start_llama_server

    model = local_model(settings)
    if settings.refine == "off" or settings.refine_base_url is not None or not model.is_file():
        return None
    return start_llama_server(model, port=port, n_ctx=1024, threads=1, log_file=log_file,
                              extra_args=["--model_alias", settings.refine_model])


class Refiner(SideModel):
    """A client of one OpenAI-compatible refiner endpoint."""

    error = RefinerError

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None,
                 timeout: float = 5.0, max_tokens: int = 160,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, model=model, api_key=api_key, timeout=timeout,
                         transport=transport)
        self.max_tokens = max_tokens

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      transport: httpx.AsyncBaseTransport | None = None) -> Refiner | None:
        """The configured refiner; without a URL, the local one when refinement is on and its
        model exists; None (refinement unavailable, said once in the log) otherwise."""
        url = settings.refine_base_url
        if url is None:
            if settings.refine == "off":  # the local refiner runs only when refinement is on
                return None
            if not local_model(settings).is_file():
                log.warning("query refinement is unavailable: no refine_base_url is set and "
                            "there is no refiner model at %s (guide-align refine sft makes "
                            "it); requests asking for it are not refined",
                            local_model(settings))
                return None
            url = local_url()
        key = settings.refine_api_key.get_secret_value() if settings.refine_api_key else None
        return cls(url, model=settings.refine_model, api_key=key,
                   timeout=settings.refine_timeout, max_tokens=settings.refine_max_tokens,
                   transport=transport)

    async def rewrite(self, conversation: Sequence[dict[str, Any]]) -> str:
        """The refiner's raw rewrite of the conversation's latest user turn; raises
        ``TimeoutError`` past ``timeout`` (the whole call) and ``RefinerError`` otherwise."""
        return await self.ask(refiner_messages(conversation), self.max_tokens)


@dataclass(frozen=True)
class Refinement:
    """What the stage did for one request."""

    mode: str  # the request's refine mode
    outcome: str  # one of guide.refine.OUTCOMES
    retrieval: Messages  # the conversation the guide step views (retrieval, prompt risk)
    upstream: Messages  # the conversation the upstream gets
    applied: str = "none"  # what the refined text was used for: none, retrieve or rewrite
    original: str = ""  # the latest user turn as the client wrote it
    refined: str | None = None  # the accepted rewrite
    latency_ms: float = 0.0
    risk: float | None = None  # auto: the original's prompt risk
    reason: str = ""  # why the original was kept, for the log

    def body_field(self) -> dict[str, Any]:
        """The ``guide_align.refine`` field: the original is repeated when the upstream got
        the rewrite."""
        out: dict[str, Any] = {"mode": self.mode, "outcome": self.outcome,
                               "applied": self.applied, "latency_ms": round(self.latency_ms, 1)}
        if self.refined is not None:
            out["refined"] = self.refined
        if self.applied == "rewrite":
            out["original"] = self.original
        if self.risk is not None:
            out["risk"] = round(self.risk, 4)
        return out

    def header(self) -> str:
        """The ``x-guide-align-refine`` header: mode, outcome and use."""
        return f"{self.mode};outcome={self.outcome};applied={self.applied}"


def plain_chat(messages: Sequence[dict[str, Any]], body: dict[str, Any] | None = None) -> bool:
    """Whether a request is plain chat text: no tools or functions, no tool or function
    messages or calls, no content part other than text."""
    if body is not None and any(body.get(f) not in (None, [], "none") for f in _TOOL_FIELDS):
        return False
    for m in normalise_roles(messages):
        if not isinstance(m, dict) or m.get("role") in ("tool", "function"):
            return False
        if m.get("tool_calls") or m.get("function_call"):
            return False
        content = m.get("content")
        if isinstance(content, list) and any(
                not (isinstance(p, str) or (isinstance(p, dict) and p.get("type") == "text"))
                for p in content):
            return False
    return True


def _replace_latest(messages: Sequence[dict[str, Any]], index: int, text: str) -> Messages:
    out = list(messages)
    turn = copy.copy(out[index])
    turn["content"] = text
    out[index] = turn
    return out


def _viewed_with(messages: Sequence[dict[str, Any]], index: int, text: str) -> Messages:
    """``messages`` with ``text`` as one more user turn after the turn at ``index``: retrieval
    and prompt risk see the user's own words and the rewrite, so a rewrite in milder words
    cannot hide what was asked from the gate and the safety guidelines."""
    out = list(messages)
    turn = copy.copy(out[index])
    turn["content"] = text
    out.insert(index + 1, turn)
    return out


# Why a rewrite was not used, for the log line.
_REJECTED = {"empty": "the refiner returned nothing", "refusal": "the refiner refused",
             "answer": "the refiner answered the request instead of rewriting it",
             "language": "the rewrite is in another language",
             "length": "the rewrite is far longer than the request"}

RiskOf = Callable[[Sequence[dict[str, Any]]], Awaitable[float | None]]


async def refine_request(
    messages: Sequence[dict[str, Any]],
    mode: str,
    refiner: Refiner | None,
    *,
    body: dict[str, Any] | None = None,
    risk: RiskOf | None = None,
    risk_threshold: float = 0.5,
    log_texts: bool = False,
) -> Refinement:
    """The refinement stage for one chat request.

    ``mode``: off, retrieve (the rewrite is viewed for retrieval and prompt risk, the upstream
    gets the client's words), auto (as rewrite when ``risk`` of the original is at or above
    ``risk_threshold``, else as retrieve) or rewrite (the upstream gets the rewrite too).
    ``body`` is the request (its tool fields skip refinement). Never raises for the
    refiner's sake: a failed, slow or bad rewrite keeps the original. ``log_texts``: the log
    line carries the original and refined texts.
    """
    conversation = list(messages)
    base = Refinement(mode, "skipped", conversation, conversation)
    if mode == "off":
        return base
    index = latest_user_index(conversation)
    if refiner is None or index < 0 or not plain_chat(conversation, body):
        why = ("no refiner is configured" if refiner is None else
               "no user text" if index < 0 else "not plain chat text")
        return _logged(_with(base, reason=why), log_texts)
    original = message_text(normalise_roles(conversation)[index].get("content")).strip()
    base = _with(base, original=original)
    started = time.perf_counter()
    pending_risk = asyncio.ensure_future(risk(conversation)) if (
        mode == "auto" and risk is not None) else None
    outcome, reason, refined = "refined", "", None
    try:
        refined = clean_refined(await refiner.rewrite(conversation))
        outcome = check_refined(original, refined)
        reason = _REJECTED.get(outcome, "")
    except TimeoutError:
        outcome, reason = "timeout", f"no answer within {refiner.timeout:g}s"
    except RefinerError as exc:
        outcome, reason = "failed", str(exc)
    except Exception as exc:  # a refiner never fails the request
        log.exception("the refiner call failed")
        outcome, reason = "failed", type(exc).__name__
    score = await _risk_or_none(pending_risk)
    latency = (time.perf_counter() - started) * 1000
    done = _with(base, outcome=outcome, latency_ms=latency, risk=score, reason=reason)
    if outcome != "refined" or refined is None:
        return _logged(done, log_texts)
    rewritten = _replace_latest(conversation, index, refined)
    use = "rewrite" if mode == "rewrite" or (
        mode == "auto" and score is not None and score >= risk_threshold) else "retrieve"
    return _logged(_with(done, refined=refined, applied=use,
                         retrieval=_viewed_with(conversation, index, refined),
                         upstream=rewritten if use == "rewrite" else conversation), log_texts)


async def _risk_or_none(pending: asyncio.Future[float | None] | None) -> float | None:
    if pending is None:
        return None
    try:
        return await pending
    except Exception:  # without a risk, auto keeps the upstream on the client's words
        log.exception("prompt risk for auto refinement failed")
        return None


def _with(r: Refinement, **changes: Any) -> Refinement:
    return Refinement(**{**r.__dict__, **changes})


def _logged(r: Refinement, log_texts: bool) -> Refinement:
    texts = f" original={r.original!r} refined={r.refined!r}" if log_texts else ""
    if r.outcome == "refined":
        log.info("refinement %s: used for %s in %.0f ms%s", r.mode, r.applied, r.latency_ms,
                 texts)
    elif r.outcome in ("skipped", "unchanged"):
        log.debug("refinement %s: %s (%s)", r.mode, r.outcome, r.reason or "same text")
    else:
        log.warning("refinement %s: %s, the original is used (%s)%s", r.mode, r.outcome,
                    r.reason, texts)
    return r


def record(metrics: Any, refinement: Refinement) -> None:
    """Count one refinement in ``guide_align_refinement_events_total{outcome}`` (mode off is
    not counted)."""
    if metrics is not None and refinement.mode != "off":
        metrics.refinements.labels(refinement.outcome).inc()
