"""Prompt templates (package data in prompts/), rendering, and asking with parse-retries."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from guideline_lib.llm import Completion
from guideline_lib.taxonomy import CATEGORY_HINTS, TAXONOMY

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PROMPT_NAMES = ("augment", "detect", "generate_risky", "generate_benign", "categorise")
_ROLE = re.compile(r"^\[(system|user|assistant)\]\s*$", re.MULTILINE)

T = TypeVar("T")

class ParseFailure(Exception):
    """The LLM's answer could not be parsed, even after retries."""

    def __init__(self, message: str, *, raw: list[str]):
        super().__init__(message)
        self.raw = raw


class ChatClient(Protocol):
    """What stages need from an LLM client (LLMClient satisfies it)."""

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Completion: ...


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A parsed answer with the raw text and how many calls it took."""

    value: T
    raw: str
    calls: int


@lru_cache(maxsize=16)
def load_prompt(name: str) -> str:
    """The text of ``prompts/<name>.txt``."""
    return (PROMPTS_DIR / f"{name}.txt").read_text("utf-8")


@lru_cache(maxsize=1)
def prompt_version() -> str:
    """'v1-' plus a short hash of every prompt file, recorded in provenance."""
    h = hashlib.sha256()
    for name in PROMPT_NAMES:
        h.update(name.encode())
        h.update(load_prompt(name).encode("utf-8"))
    return "v1-" + h.hexdigest()[:10]


def taxonomy_block(ids: list[str] | None = None) -> str:
    """'- id: hint' lines for the given (default: all) taxonomy ids."""
    return "\n".join(f"- {c}: {CATEGORY_HINTS.get(c, c)}" for c in (ids or list(TAXONOMY)))


def render(template: str, **values: str) -> list[dict[str, str]]:
    """Fill ``{{name}}`` slots and split ``[system]/[user]/[assistant]`` sections into messages."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    parts = _ROLE.split(template)
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": role, "content": content.strip()})
    if not messages:
        messages = [{"role": "user", "content": template.strip()}]
    return messages


async def ask(
    client: ChatClient,
    messages: list[dict[str, Any]],
    parse: Callable[[str], T | None],
    *,
    attempts: int = 3,
    max_tokens: int | None = None,
    retry_temperature: float = 0.7,
    salt: int = 0,
) -> Answer[T]:
    """Call the LLM until ``parse`` accepts the answer; raises ParseFailure after ``attempts``.

    Retries change temperature and seed, so the cache key changes and the model gets a new draw;
    ``salt`` > 0 (a later retry round of a failed item) starts from fresh seeds.
    """
    raws: list[str] = []
    attempts = max(1, attempts)
    for attempt in range(attempts):
        params: dict[str, Any] = {"max_tokens": max_tokens}
        draw = salt * attempts + attempt
        if draw:
            params.update(temperature=retry_temperature, seed=draw)
        completion = await client.chat(messages, **params)
        raws.append(completion.text)
        value = parse(completion.text)
        if value is not None:
            return Answer(value=value, raw=completion.text, calls=attempt + 1)
    preview = raws[-1][:120].replace("\n", " ") if raws else ""
    raise ParseFailure(f"unparseable answer after {len(raws)} calls (last: {preview!r})",
                       raw=raws)
