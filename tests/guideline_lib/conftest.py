"""Fixtures for the builder tests: a scripted OpenAI-compatible server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from guideline_lib.llm import LLMConfig
from tests.fakes.scripted_llm import ScriptedLLM
from tests.fakes.server import ServerThread


@dataclass
class Scripted:
    """A running scripted server and a client config pointing at it."""

    llm: ScriptedLLM
    base_url: str

    def config(self, **overrides: Any) -> LLMConfig:
        """Client settings for this server: fast backoff, short timeout."""
        values: dict[str, Any] = {"base_url": self.base_url, "model": "scripted",
                                  "backoff": 0.01, "timeout": 5.0, "max_retries": 2,
                                  "concurrency": 2}
        values.update(overrides)
        return LLMConfig(**values)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    llm = ScriptedLLM()
    with ServerThread(llm.app()) as server:
        yield Scripted(llm=llm, base_url=server.url + "/v1")
