"""Journal records shaped like `finetune generate` writes them, for export and train tests."""

from __future__ import annotations

from typing import Any

BLOCK = "Guidelines for this conversation.\n1. Be careful: think first."


def record(key: str, text: str, answer: str | None = "An answer.", *, status: str = "ok",
           finish: str | None = "stop", system: str | None = None) -> dict[str, Any]:
    """A journal record shaped like `finetune generate` writes, with a guideline block sent."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}]
    sent = ([{"role": "system", "content": f"{system}\n\n{BLOCK}"}] if system
            else [{"role": "system", "content": BLOCK}]) + [{"role": "user", "content": text}]
    out: dict[str, Any] = {"key": key, "input": text, "messages": messages, "sent": sent,
                           "guideline_ids": ["g_1"], "status": status}
    if status == "ok":
        out.update({"answer": answer, "finish_reason": finish, "model": "m"})
    return out
