"""Wire models for the OpenAI-compatible API. Unknown fields are allowed: a proxy passes them on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GuideAlignOptions(BaseModel):
    """Per-request options, sent in the namespaced ``guide_align`` body field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    k: int | None = Field(None, ge=0, le=50)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
    safety_margin: float | None = Field(None, ge=-1.0, le=1.0)


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
    guide_align: GuideAlignOptions = Field(default_factory=GuideAlignOptions)


class SearchRequest(BaseModel):
    """Body of POST /v1/guidelines/search."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[ChatMessage]
    k: int | None = Field(None, ge=0, le=100)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
