"""A guideline block the client cannot forge.

The injected block is wrapped in markers that carry an HMAC of the client's conversation and
the block under a server key: the same conversation gives the same bytes (upstream caches stay
deterministic; replicas sharing ``GUIDE_SECRET`` agree), and a block copied from another
conversation does not verify. Client text that imitates the block (the markers, or the block's
heading) is defanged before it is forwarded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from typing import Any

import orjson

from guideline_lib.render import PREAMBLE

# Used when no secret is configured: one per process, so markers still cannot be predicted.
PROCESS_KEY = os.urandom(32)

_OPEN, _CLOSE = "[[guide-align {mac}]]", "[[/guide-align {mac}]]"
# Anything that reads as a marker: "[[", optional "/", "guide-align" (any case and spacing).
_MARKER = re.compile(r"\[\s*\[\s*/?\s*guide[\s_-]*align", re.IGNORECASE)
# The block's heading, the first sentence of the preamble, with any spacing.
_HEADING = re.compile(r"\s+".join(map(re.escape, PREAMBLE.split(".")[0].split())),
                      re.IGNORECASE)
_SIGNED = re.compile(r"\A\[\[guide-align ([0-9a-f]{32})\]\]\n(.*)\n\[\[/guide-align \1\]\]\Z",
                     re.DOTALL)


def conversation_mac(messages: Sequence[dict[str, Any]], block: str, key: bytes) -> str:
    """The MAC binding ``block`` to the client conversation it was chosen for."""
    body = orjson.dumps(list(messages), option=orjson.OPT_SORT_KEYS,
                        default=str) + b"\x00" + block.encode("utf-8")
    return hmac.new(key, body, hashlib.sha256).hexdigest()[:32]


def sign_block(block: str, messages: Sequence[dict[str, Any]], key: bytes) -> str:
    """``block`` between markers carrying its MAC for ``messages`` ("" stays "")."""
    if not block:
        return ""
    mac = conversation_mac(messages, block, key)
    return f"{_OPEN.format(mac=mac)}\n{block}\n{_CLOSE.format(mac=mac)}"


def verify_block(signed: str, messages: Sequence[dict[str, Any]], key: bytes) -> bool:
    """Whether ``signed`` is a block this gateway made for ``messages`` under ``key``."""
    found = _SIGNED.match(signed)
    if found is None:
        return False
    return hmac.compare_digest(found.group(1), conversation_mac(messages, found.group(2), key))


def signed_block_of(text: str) -> str | None:
    """The signed block inside a system message's text, if there is one."""
    start = text.rfind("[[guide-align ")
    return text[start:] if start >= 0 else None


def _defang_text(text: str) -> tuple[str, int]:
    text, markers = _MARKER.subn("[ [forged-marker", text)
    text, headings = _HEADING.subn(lambda m: f"(quoted by the user) {m.group(0)}", text)
    return text, markers + headings


def defang(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Client messages with text that imitates the block neutralised, and how many
    imitations were found (0: the same message objects)."""
    out, found = [], 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            text, n = _defang_text(content)
            if n:
                m = {**m, "content": text}
                found += n
        elif isinstance(content, list):
            parts, changed = [], 0
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    text, n = _defang_text(part["text"])
                    if n:
                        part = {**part, "text": text}
                        changed += n
                parts.append(part)
            if changed:
                m = {**m, "content": parts}
                found += changed
        out.append(m)
    return out, found
