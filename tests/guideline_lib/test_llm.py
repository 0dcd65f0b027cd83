"""The LLM client against a scripted OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from guideline_lib.llm import (
    LLMClient,
    LLMConfig,
    LLMError,
    LLMUnreachable,
    ResponseCache,
    retry_after_seconds,
)
from tests.fakes.scripted_llm import Reply
from tests.fakes.server import free_port

HELLO = [{"role": "user", "content": "hello"}]


def chat(config: LLMConfig, messages=HELLO, cache: ResponseCache | None = None, **params):
    async def go():
        async with LLMClient(config, cache=cache) as client:
            return await client.chat(messages, **params), client.stats

    return asyncio.run(go())


def test_answer_text_and_request_shape(scripted) -> None:
    scripted.llm.push("hi there")
    done, _ = chat(scripted.config(api_key="sk-test", temperature=0.2, max_tokens=33))
    assert done.text == "hi there" and done.finish_reason == "stop" and not done.cached
    body = scripted.llm.requests[0]
    assert body["messages"] == HELLO and body["model"] == "scripted"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 33 and body["stream"] is False
    assert scripted.llm.headers[0]["authorization"] == "Bearer sk-test"


def test_per_call_params_override_config(scripted) -> None:
    scripted.llm.push("ok")
    chat(scripted.config(), max_tokens=7, seed=3)
    assert scripted.llm.requests[0]["max_tokens"] == 7 and scripted.llm.requests[0]["seed"] == 3


@pytest.mark.parametrize("failure", [
    Reply(status=429, headers={"retry-after": "0"}),
    Reply(status=503),
    Reply(status=500, body="<html>gateway down</html>"),
    Reply(body="not json at all"),
    Reply(text="too late", delay=1.5),
], ids=["429", "503", "500-html", "200-not-json", "timeout"])
def test_transient_failures_are_retried(scripted, failure) -> None:
    scripted.llm.push(failure, "recovered")
    done, stats = chat(scripted.config(timeout=0.5))
    assert done.text == "recovered"
    assert stats.retries == 1 and len(scripted.llm.requests) == 2


def test_retry_after_sets_the_wait() -> None:
    seconds = httpx.Response(429, headers={"retry-after": "7"})
    date = httpx.Response(503, headers={"retry-after": format_datetime(
        datetime.now(UTC) + timedelta(seconds=30), usegmt=True)})
    assert retry_after_seconds(seconds) == 7.0
    assert 25 <= (retry_after_seconds(date) or 0) <= 30
    assert retry_after_seconds(httpx.Response(429)) is None
    client = LLMClient(LLMConfig(backoff=0.01, max_backoff=60))
    assert client.backoff_delay(0, 7.0) >= 7.0
    assert client.backoff_delay(0, 600.0) == 60  # capped


def test_backoff_grows_exponentially_with_jitter() -> None:
    client = LLMClient(LLMConfig(backoff=1.0, max_backoff=100))
    for attempt in range(4):
        delays = {client.backoff_delay(attempt) for _ in range(20)}
        assert all(0.5 * 2**attempt <= d <= 2**attempt for d in delays)
        assert len(delays) > 1  # jitter spreads parallel retries apart


def test_gives_up_after_max_retries(scripted) -> None:
    scripted.llm.push(*[Reply(status=502)] * 3)
    with pytest.raises(LLMError, match="gave up after 3 attempts: HTTP 502"):
        chat(scripted.config(max_retries=2))
    assert len(scripted.llm.requests) == 3


def test_client_errors_are_not_retried(scripted) -> None:
    scripted.llm.push(Reply(status=400), "never sent")
    with pytest.raises(LLMError) as info:
        chat(scripted.config())
    assert info.value.status == 400 and len(scripted.llm.requests) == 1


def test_unreachable_endpoint_is_its_own_error() -> None:
    config = LLMConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", backoff=0.0, max_retries=1)
    with pytest.raises(LLMUnreachable):
        chat(config)


def test_cache_answers_repeated_prompts_across_clients(scripted, tmp_path) -> None:
    scripted.llm.push("first answer", "second answer")
    cache = ResponseCache(tmp_path / "cache.sqlite")
    chat(scripted.config(), cache=cache)
    cache.close()
    reopened = ResponseCache(tmp_path / "cache.sqlite")  # as a resumed build would
    again, stats = chat(scripted.config(), cache=reopened)
    assert again.text == "first answer" and again.cached and stats.cache_hits == 1
    assert len(scripted.llm.requests) == 1


def test_cache_key_covers_model_messages_and_sampling(scripted, tmp_path) -> None:
    scripted.llm.default = lambda body: f"t={body['temperature']} m={body['model']}"
    cache = ResponseCache(tmp_path / "cache.sqlite")
    chat(scripted.config(), cache=cache)
    chat(scripted.config(temperature=0.9), cache=cache)
    chat(scripted.config(model="other"), cache=cache)
    chat(scripted.config(), messages=[{"role": "user", "content": "bye"}], cache=cache)
    assert len(scripted.llm.requests) == 4 and len(cache) == 4


def test_failures_are_not_cached(scripted, tmp_path) -> None:
    scripted.llm.push(Reply(status=400), "fine now")
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with pytest.raises(LLMError):
        chat(scripted.config(), cache=cache)
    assert chat(scripted.config(), cache=cache)[0].text == "fine now"


def test_concurrency_is_bounded(scripted) -> None:
    scripted.llm.default = Reply(text="slow", delay=0.1)

    async def go() -> None:
        async with LLMClient(scripted.config(concurrency=3)) as client:
            await asyncio.gather(*(client.chat([{"role": "user", "content": str(i)}])
                                   for i in range(10)))

    asyncio.run(go())
    assert len(scripted.llm.requests) == 10
    assert scripted.llm.max_in_flight == 3


def test_upstream_dying_mid_answer_is_unreachable_not_a_failed_input() -> None:
    # First attempt: the connection drops while reading; then nothing listens any more.
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not attempts:
            attempts.append("read")
            raise httpx.ReadError("connection reset", request=request)
        attempts.append("connect")
        raise httpx.ConnectError("connection refused", request=request)

    async def go() -> None:
        config = LLMConfig(base_url="http://upstream.test/v1", backoff=0.0, max_retries=2)
        async with LLMClient(config, transport=httpx.MockTransport(handler)) as client:
            await client.chat(HELLO)

    with pytest.raises(LLMUnreachable):
        asyncio.run(go())
    assert attempts == ["read", "connect", "connect"]


def test_a_server_that_answers_errors_is_not_unreachable() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(503, text="busy")

    async def go() -> None:
        config = LLMConfig(base_url="http://upstream.test/v1", backoff=0.0, max_retries=1)
        async with LLMClient(config, transport=httpx.MockTransport(handler)) as client:
            await client.chat(HELLO)

    with pytest.raises(LLMError) as info:
        asyncio.run(go())
    assert not isinstance(info.value, LLMUnreachable)
