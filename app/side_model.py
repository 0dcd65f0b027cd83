"""A client of one side model behind an OpenAI-compatible endpoint (the refiner, the guard of
backtracking): a non-streaming chat call at temperature 0 with a timeout on the whole call and
failures turned into one exception type, so that a side model never fails a request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.scrub import redact_url


class SideModelError(Exception):
    """The side model's endpoint did not give a usable answer."""


class SideModel:
    """``await model.ask(messages, max_tokens)`` -> the reply's text."""

    error: type[Exception] = SideModelError  # what a subclass's callers catch

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None,
                 timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                         timeout=httpx.Timeout(timeout), transport=transport)

    async def ask(self, messages: list[dict[str, Any]], max_tokens: int) -> str:
        """The reply's text; raises ``TimeoutError`` past ``timeout`` (the whole call) and
        ``self.error`` for any other failure."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": 0, "stream": False}
        where = redact_url(self.base_url)
        try:
            async with asyncio.timeout(self.timeout):
                r = await self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise self.error(f"{type(exc).__name__} from {where}") from None
        if r.status_code != 200:
            raise self.error(f"status {r.status_code} from {where}")
        try:
            text = r.json()["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            raise self.error("the answer is not a chat completion") from None
        if not isinstance(text, str):
            raise self.error("the answer has no text content")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()
