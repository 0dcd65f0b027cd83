"""Credential scrubbing: what is masked in text and in log records."""

from __future__ import annotations

import base64
import logging
import sys

import pytest
from pydantic import SecretStr

from app.config import Settings
from app.scrub import Scrubber, ScrubFilter, redact_url, scrub_data, settings_secrets


@pytest.mark.parametrize(("text", "secret"), [
    ("POST http://alice:hunter22@10.0.0.5:8081/v1/chat/completions", "hunter22"),
    ("authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
    ("Authorization: Basic YWxpY2U6aHVudGVyMjI=", "YWxpY2U6aHVudGVyMjI="),
    ("GET /v1/models?api_key=k-778899&x=1", "k-778899"),
    ("https://host/path?token=t0k3n", "t0k3n"),
    ('{"api_key": "plain-value-1", "other": 1}', "plain-value-1"),
    ("the key sk-proj-Ab12Cd34Ef56 was refused", "Ab12Cd34Ef56"),
])
def test_credentials_are_masked(text: str, secret: str) -> None:
    clean = Scrubber()(text)
    assert secret not in clean
    assert "***" in clean


def test_ordinary_text_is_left_alone() -> None:
    text = "upstream answered 503 after 2.5 s for model smollm2 (http://llm:8081/v1)"
    assert Scrubber()(text) == text


def test_settings_secrets_cover_the_key_and_the_urls_credentials() -> None:
    settings = Settings(upstream_base_url="http://bob:s%40fe-pass@llm:8081/v1",
                        upstream_api_key=SecretStr("opaque-upstream-key-42"))
    scrub = Scrubber(settings_secrets(settings))
    basic = base64.b64encode(b"bob:s@fe-pass").decode()
    for secret in ("opaque-upstream-key-42", "s@fe-pass", basic):
        assert secret not in scrub(f"echo: {secret} !")
    assert redact_url(settings.upstream_base_url) == "http://***@llm:8081/v1"


def test_the_filter_masks_arguments_and_tracebacks() -> None:
    logger = logging.getLogger("tests.scrub")
    try:
        raise RuntimeError("could not reach http://u:p4ssw0rd@host/v1")
    except RuntimeError:
        record = logger.makeRecord("tests.scrub", logging.ERROR, __file__, 1,
                                   "calling %s with %s", ("http://u:p4ssw0rd@host/v1",
                                                          "Bearer sk-live-000111222"),
                                   exc_info=sys.exc_info())
    assert ScrubFilter().filter(record)
    line = logging.Formatter("%(message)s").format(record)
    assert "p4ssw0rd" not in line and "sk-live-000111222" not in line
    assert "http://***@host/v1" in line and "RuntimeError" in line


def test_json_is_scrubbed_string_by_string_and_stays_valid() -> None:
    body = {"error": {"message": 'echo {"api_key": "ab\\"cd"}', "param": None,
                      "Bearer tok-12345": [1, "Bearer tok-12345"]}}
    clean = scrub_data(body, Scrubber())
    assert "tok-12345" not in str(clean) and 'ab\\"cd' not in str(clean)
    assert clean["error"]["param"] is None and clean["error"]["Bearer ***"][0] == 1
