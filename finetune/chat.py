"""Chat-template encoding with assistant-only labels, for any tokenizer with a chat template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE = -100  # label of tokens that do not count in the loss


class TemplateError(Exception):
    """The tokenizer has no chat template, or one that does not render turns as prefixes."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of a rendered conversation and labels (-100 outside assistant turns)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        """How many tokens count in the loss."""
        return sum(label != IGNORE for label in self.labels)


def render(tokenizer: Any, messages: Sequence[dict[str, Any]], *, generation_prompt: bool) -> str:
    """The conversation as text under the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"{type(tokenizer).__name__} has no chat template")
    text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=generation_prompt)
    return str(text)


def assistant_spans(tokenizer: Any, messages: Sequence[dict[str, Any]]
                    ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn.

    A turn's span runs from the end of the generation prompt before it to the end of the turn,
    so it holds the answer and the template's end-of-turn marker (the model must learn to stop).
    """
    text = render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (text.startswith(through) and through.startswith(before)):
            raise TemplateError("the chat template does not render earlier turns as a prefix of "
                                "later ones; assistant tokens cannot be located")
        spans.append((len(before), len(through)))
    return text, spans


def masked_spans(text: str, spans: Sequence[tuple[int, int]],
                 messages: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """Where the assistant turns' ``masked`` content spans (backtracking data: the injected
    unsafe text) lie in the rendered conversation."""
    out = []
    turns = [m for m in messages if m.get("role") == "assistant"]
    for message, (start, _) in zip(turns, spans, strict=True):
        if not message.get("masked"):
            continue
        content = str(message.get("content") or "")
        at = text.find(content, start)
        if at < 0:
            raise TemplateError("the chat template changes assistant text; masked spans "
                                "cannot be located")
        out += [(at + int(a), at + int(b)) for a, b in message["masked"]]
    return out


def encode_conversation(tokenizer: Any, messages: Sequence[dict[str, Any]], *,
                        max_length: int | None = None) -> Encoded:
    """Token ids with labels on assistant tokens only (a token counts if it overlaps a turn),
    less any token that overlaps a ``masked`` span of its turn."""
    text, spans = assistant_spans(tokenizer, messages)
    masked = masked_spans(text, spans, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = []
    for token, (start, end) in zip(ids, enc["offset_mapping"], strict=True):
        inside = any(end > s and start < e for s, e in spans) and \
            not any(end > s and start < e for s, e in masked)
        labels.append(token if inside else IGNORE)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(input_ids=ids, labels=labels)


def encode_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> list[int]:
    """Token ids of the prompt up to and including the assistant generation prompt."""
    text = render(tokenizer, messages, generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
