"""Splitting an LLM answer into atomic 'Title: instruction' guidelines."""

from __future__ import annotations

import re
from dataclasses import dataclass

from guideline_lib.schema import MAX_GUIDELINE_CHARS, guideline_id, normalise_text

_BULLET = re.compile(r"^\s*(?:[-*•·>#]+|\(?\d{1,2}[.):\]]|\(?[a-zA-Z][.)]|guideline\s*\d*[:.])\s*",
                     re.IGNORECASE)
_TITLED = re.compile(r"^(?P<title>[^:]{2,80}?)\s*(?::|\s[-–—]\s)\s*(?P<body>.*)$")
_MARKUP = re.compile(r"[*_`]{1,3}")
_ENDS_SENTENCE = re.compile(r"[.!?)\"']\s*$")
# Guidelines must be general: these point back at the one message that produced them.
_SELF_REFERENCE = re.compile(
    r"\b(the|this|given|above|provided|user'?s?)\s+(input|message|prompt|request|query|question)"
    r"\s+(above|provided|given|you were shown)\b|\bthe above\b|\bas an ai language model\b",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(r"^(here (are|is)|sure|certainly|of course|okay|ok\b|guidelines?\b)",
                       re.IGNORECASE)


@dataclass(frozen=True)
class SplitConfig:
    """What counts as one usable guideline."""

    min_body_words: int = 4
    max_title_words: int = 8
    max_chars: int = MAX_GUIDELINE_CHARS
    max_guidelines: int = 8


def _clean(line: str) -> str:
    line = _BULLET.sub("", line.strip())
    line = _MARKUP.sub("", line)
    return re.sub(r"\s+", " ", line).strip().strip('"').strip()


def _titled(line: str, config: SplitConfig) -> tuple[str, str] | None:
    match = _TITLED.match(line)
    if not match:
        return None
    title = match.group("title").strip().rstrip(".")
    if not title or len(title.split()) > config.max_title_words or _PREAMBLE.match(title):
        return None
    return title, match.group("body").strip()


def split_guidelines(
    text: str, *, config: SplitConfig | None = None, source_input: str | None = None
) -> list[str]:
    """Atomic 'Title: instruction' guidelines found in ``text``, de-duplicated, in order.

    Bullets, numbering and markdown are stripped; an instruction continued on the next line is
    joined; preambles, untitled prose, over-long lines and lines that refer back to (or quote)
    ``source_input`` are dropped.
    """
    config = config or SplitConfig()
    pairs: list[list[str]] = []  # [title, body]
    open_title: str | None = None
    for raw in text.splitlines():
        line = _clean(raw)
        if not line:
            continue
        titled = _titled(line, config)
        if titled is not None:
            title, body = titled
            if body:
                pairs.append([title, body])
                open_title = None
            else:
                open_title = title  # "Title:" alone; the instruction follows on the next line
        elif open_title is not None:
            pairs.append([open_title, line])
            open_title = None
        elif pairs and not _ENDS_SENTENCE.search(pairs[-1][1]):
            pairs[-1][1] = f"{pairs[-1][1]} {line}"  # a wrapped instruction
    quoted = normalise_text(source_input) if source_input else ""
    out: list[str] = []
    seen: set[str] = set()
    for title, body in pairs:
        guideline = f"{title}: {body}"
        if len(body.split()) < config.min_body_words or len(guideline) > config.max_chars:
            continue
        if _SELF_REFERENCE.search(guideline):
            continue
        if len(quoted) >= 24 and quoted in normalise_text(guideline):
            continue
        gid = guideline_id(guideline)
        if gid in seen:
            continue
        seen.add(gid)
        out.append(guideline)
        if len(out) >= config.max_guidelines:
            break
    return out
