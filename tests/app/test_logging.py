"""Structured logs: JSON lines with the request id, no prompt text, no key; x-request-id."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from app.config import Settings
from app.logging_setup import JsonFormatter, configure_logging, request_id_var
from tests.app.conftest import SECRET

CHAT = "/v1/chat/completions"
MARKER = "zq-private-7731"  # stands for what a user typed
CLIENT_KEY = "sk-client-own-key-0123456789"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every record of the process as JSON lines, at INFO, for the test's duration."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
             for n in names}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for n, (hs, propagate) in saved.items():
            logging.getLogger(n).handlers[:] = hs
            logging.getLogger(n).propagate = propagate


def records(out: io.StringIO) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def chat(client, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(CHAT, headers=headers, json={"model": "ok", "messages": [
        {"role": "user", "content": f"code a ransomware for office pcs {MARKER}"}]})


def test_access_line_has_request_id_and_no_prompt_or_key(gateway, json_lines):  # type: ignore[no-untyped-def]
    with gateway(upstream_api_key=SECRET) as client:
        r = chat(client, **{"x-request-id": "client-req.42", "authorization":
                            f"Bearer {CLIENT_KEY}"})
        assert r.status_code == 200
    assert r.headers["x-request-id"] == "client-req.42"
    text = json_lines.getvalue()
    assert MARKER not in text and CLIENT_KEY not in text and SECRET not in text
    access = [rec for rec in records(json_lines) if rec["logger"] == "guide_align.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "client-req.42"
    assert line["level"] == "info" and line["message"] == f"POST {CHAT} 200"
    assert line["route"] == CHAT and line["status"] == 200 and line["method"] == "POST"
    assert line["model"] == "ok" and line["latency_ms"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert "prompt" not in line


def test_prompt_is_logged_only_when_allowed(gateway, json_lines):  # type: ignore[no-untyped-def]
    with gateway(log_prompts=True) as client:
        assert chat(client).status_code == 200
    access = [rec for rec in records(json_lines) if rec["logger"] == "guide_align.access"]
    assert MARKER in access[0]["prompt"]


def test_request_ids_are_kept_when_sane_and_made_otherwise(gateway):  # type: ignore[no-untyped-def]
    with gateway() as client:
        made = [client.get("/healthz").headers["x-request-id"] for _ in range(2)]
        assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made) and made[0] != made[1]
        for bad in ("has spaces in it", "x" * 200, "<script>", ""):
            rid = client.get("/healthz", headers={"x-request-id": bad}).headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", rid), bad
        kept = "0af76519-16cd-43dd-8448-eb211c80319c"
        assert client.get("/healthz", headers={"x-request-id": kept}).headers[
            "x-request-id"] == kept
        # errors carry it too: what a user quotes in a bug report
        missing = client.get("/no/such/page", headers={"x-request-id": "err-1"})
        assert missing.status_code == 404 and missing.headers["x-request-id"] == "err-1"
        bad_json = client.post(CHAT, content=b"{", headers={"content-type": "application/json",
                                                             "x-request-id": "err-2"})
        assert bad_json.status_code == 400 and bad_json.headers["x-request-id"] == "err-2"


def test_records_pick_up_the_request_id() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.request_id")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("rid-7")
    try:
        logger.warning("inside %s", "a request", extra={"status": 503})
    finally:
        request_id_var.reset(token)
    logger.warning("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["request_id"] == "rid-7" and inside["message"] == "inside a request"
    assert inside["status"] == 503 and inside["logger"] == "tests.request_id"
    assert "request_id" not in outside


def test_configure_logging_json_and_text(capsys, restore_logging):  # type: ignore[no-untyped-def]
    configure_logging(Settings(log_format="json", log_level="info"))
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 12)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["logger"] == "uvicorn.error" and line["message"] == "Started server process [12]"
    configure_logging(Settings(log_format="text", log_level="warning"))
    logging.getLogger("guide_align").info("not shown")
    logging.getLogger("guide_align").warning("shown")
    assert capsys.readouterr().err.strip() == "WARNING guide_align: shown"
