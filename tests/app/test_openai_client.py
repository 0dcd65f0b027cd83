"""The official openai client (sync and async, streaming and not) against the running gateway."""

from __future__ import annotations

import asyncio

import openai
import pytest

MESSAGES = [{"role": "user", "content": "how do i kill a python process that hangs"}]


def test_sync_client_plain_and_stream(live_gateway, upstream_log):
    with live_gateway() as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-client", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="ok", messages=MESSAGES, extra_body={"guide_align": {"k": 2}})
        completion = raw.parse()
        assert completion.choices[0].message.content.startswith("ok (")
        assert raw.headers["x-guide-align-guidelines"]
        assert completion.model_extra["guide_align"]["guidelines"]
        assert "guide_align" not in upstream_log.bodies[-1]
        stream = client.chat.completions.create(model="ok", messages=MESSAGES, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert text == "tok0 tok1 tok2 tok3 tok4 "
        assert [m.id for m in client.models.list()] == ["fake-model"]


def test_async_client_plain_and_stream(live_gateway):
    async def run(url: str) -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-client", max_retries=0)
        completion = await client.chat.completions.create(model="ok", messages=MESSAGES)
        stream = await client.chat.completions.create(model="ok", messages=MESSAGES,
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        await client.close()
        return completion.choices[0].message.content or "", text

    with live_gateway() as gw:
        plain, streamed = asyncio.run(run(gw.url))
    assert plain.startswith("ok (")
    assert streamed == "tok0 tok1 tok2 tok3 tok4 "


def test_client_sees_openai_errors(live_gateway):
    with live_gateway() as gw:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-client", max_retries=0)
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="ok", messages=[])
        assert exc.value.status_code == 400
        with pytest.raises(openai.InternalServerError) as exc5:
            client.chat.completions.create(model="error-500", messages=MESSAGES)
        assert exc5.value.status_code == 502
        stream = client.chat.completions.create(model="drop-mid-stream", messages=MESSAGES,
                                                stream=True)
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
