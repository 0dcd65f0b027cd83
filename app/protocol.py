"""Wire models for the OpenAI-compatible API. Unknown fields are allowed: a proxy passes them on.

The well-known OpenAI fields are type-checked strictly (``"max_tokens": "lots"`` is a 422 here,
not a 502 from the upstream); the routes still forward the body exactly as the client sent it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guide.options import GuideOptions, KOption, ScoreOption

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Bounds of the lists a request may carry (the counts and sizes that settings cap are checked
# by app/requests.py, since a deployment chooses them).
MAX_PARTS = 256
MAX_STOP = 16
MAX_TOOLS = 256


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    """One typed part of a message's content; text and image_url parts are checked, other types
    (audio, files) pass on to the upstream."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _has_its_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs a 'text' string")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs an 'image_url' object with a 'url'")
        return self


class ChatMessage(BaseModel):
    """One chat message; content may be text, typed parts, or absent (tool calls)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: str = Field(json_schema_extra={"enum": list(ROLES)})
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        # case and spacing are the guide step's to normalise; other roles are an error
        if v.strip().lower() not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        return v

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        # only an assistant turn (calling tools) or a legacy function turn may omit it
        if self.content is None and self.role.strip().lower() not in ("assistant", "function"):
            raise ValueError(f"a {self.role.strip().lower()} message needs content")
        return self

    def text_length(self) -> int:
        """Characters of text in the content."""
        if isinstance(self.content, str):
            return len(self.content)
        return sum(len(p.text or "") for p in self.content or ())


class ChatCompletionRequest(BaseModel):
    """The fields the gateway reads or checks; everything else travels upstream untouched."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    # null means false, as in OpenAI's API; a lax "true" is forwarded as true
    stream: bool | None = Field(False, strict=False)
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    guide_align: GuideOptions | None = None


class SearchRequest(BaseModel):
    """Body of POST /v1/guidelines/search: what a chat request with the same messages (or one
    user turn of ``input`` text) would get. ``k`` and ``min_score`` are guide options too."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[ChatMessage]
    k: KOption | None = None
    min_score: ScoreOption | None = None
    guide_align: GuideOptions | None = None

    def options(self) -> GuideOptions:
        """The top-level ``k`` / ``min_score`` folded into the ``guide_align`` options."""
        opts = self.guide_align or GuideOptions()
        top = {n: v for n, v in (("k", self.k), ("min_score", self.min_score)) if v is not None}
        return opts.model_copy(update=top) if top else opts


class ModerationPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class ModerationRequest(BaseModel):
    """Body of POST /v1/moderations (OpenAI's shape): one text, or a list of texts or of
    ``{"type": "text", "text": ...}`` parts."""

    model_config = ConfigDict(extra="allow", strict=True)

    input: str | list[str] | list[ModerationPart]
    model: str | None = None
    guide_align: GuideOptions | None = None  # risk_threshold: lower flags more


class JudgementRequest(BaseModel):
    """Body of POST /v1/judgements: a conversation whose last message is the answer to judge."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=2)
