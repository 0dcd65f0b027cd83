"""Wire models for the OpenAI-compatible API. Unknown fields are allowed: a proxy passes them on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from guide.options import K_MAX, GuideOptions


class ChatMessage(BaseModel):
    """One chat message; content may be text, typed parts, or absent (tool calls)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[Any] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields the gateway reads; everything else travels upstream untouched."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage]
    stream: bool | None = False  # null means false, as in OpenAI's API
    guide_align: GuideOptions | None = None


class SearchRequest(BaseModel):
    """Body of POST /v1/guidelines/search: what a chat request with the same messages (or one
    user turn of ``input`` text) would get. ``k`` and ``min_score`` are guide options too."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[ChatMessage]
    k: int | None = Field(None, ge=0, le=K_MAX)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
    guide_align: GuideOptions | None = None

    def options(self) -> GuideOptions:
        """The top-level ``k`` / ``min_score`` folded into the ``guide_align`` options."""
        opts = self.guide_align or GuideOptions()
        top = {n: v for n, v in (("k", self.k), ("min_score", self.min_score)) if v is not None}
        return opts.model_copy(update=top) if top else opts


class ModerationRequest(BaseModel):
    """Body of POST /v1/moderations (OpenAI's shape): one text, or a list of texts or of
    ``{"type": "text", "text": ...}`` parts."""

    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[dict[str, Any]]
    model: str | None = None


class JudgementRequest(BaseModel):
    """Body of POST /v1/judgements: a conversation whose last message is the answer to judge."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=2)
