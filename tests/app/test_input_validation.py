"""Bad input gets a clear 4xx in the OpenAI error shape, never a 500 or a relayed 502: option
bounds, nesting depth, OpenAI field types, caps, content types; plus CORS and docs exposure."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.requests import json_depth

USER = [{"role": "user", "content": "how do i kill a python process that hangs"}]
CHAT = "/v1/chat/completions"
SEARCH = "/v1/guidelines/search"
POST_ROUTES = (CHAT, SEARCH, "/v1/moderations", "/v1/judgements")


def error_of(resp, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


# --- one limit per option, checked by the request model ------------------------------------

OUT_OF_RANGE = [("k", 51), ("k", -1), ("k", True), ("k", 6.0), ("min_score", 1.5),
                ("min_score", "0.5"), ("safety_margin", -2.0), ("risk_threshold", 1.1),
                ("backtrack_window", 201), ("backtrack_max_retractions", 11),
                ("backtrack", "sometimes"), ("enabled", "yes")]


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_options_out_of_range_are_422_on_chat_and_search(gateway, upstream_log, name, value):
    with gateway() as c:
        for path, body in ((CHAT, {"messages": USER}), (SEARCH, {"input": USER})):
            resp = c.post(path, json={**body, "guide_align": {name: value}})
            assert error_of(resp, 422)["param"] == f"guide_align.{name}"
    assert upstream_log.bodies == []


def test_search_top_level_options_share_the_option_limits(gateway):
    with gateway() as c:
        for bad in ({"k": 51}, {"k": 100}, {"k": True}, {"min_score": "0.5"},
                    {"min_score": -1.5}):
            (name,) = bad
            assert error_of(c.post(SEARCH, json={"input": "hi", **bad}), 422)["param"] == name
        # the largest k is served, with as many guidelines as the library has above the floor
        resp = c.post(SEARCH, json={"input": "write me a keylogger", "k": 50, "min_score": -1.0})
        assert resp.status_code == 200
        assert len(resp.json()["data"]) >= 6


# --- nesting depth ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", POST_ROUTES)
def test_deeply_nested_json_is_a_400_on_every_route(gateway, upstream_log, path):
    with gateway() as c:  # checked before anything else, a judge included
        for depth in (65, 300, 5000):
            raw = f'{{"messages": {json.dumps(USER)}, "input": "x", "extra": {nested(depth)}}}'
            resp = c.post(path, content=raw, headers={"content-type": "application/json"})
            assert "deeper than 64" in error_of(resp, 400)["message"]
    assert upstream_log.bodies == []


def test_nesting_within_the_limit_and_brackets_in_strings_pass(gateway, upstream_log):
    with gateway() as c:
        deep = json.loads(nested(60))
        text = "[{" * 400 + " how do i kill a python process"
        resp = c.post(CHAT, json={"messages": [{"role": "user", "content": text}],
                                  "vendor_extra": deep})
        assert resp.status_code == 200, resp.text
    assert upstream_log.bodies[-1]["vendor_extra"] == deep


# --- OpenAI fields are type-checked; unknown ones pass through --------------------------------

WRONG = [
    ("max_tokens", "lots"), ("max_tokens", 0), ("max_tokens", 1.5),
    ("max_completion_tokens", "64"), ("n", "2"), ("n", 0), ("temperature", "hot"),
    ("temperature", 3), ("top_p", 1.5), ("presence_penalty", -3), ("frequency_penalty", "0"),
    ("seed", "42"), ("stop", 7), ("stop", ["a", 1]), ("stop", ["x"] * 17), ("stream", "lots"),
    ("logprobs", "yes"), ("top_logprobs", 21), ("user", 12), ("model", 5),
    ("tools", {"type": "function"}), ("tools", ["f"]), ("tool_choice", 3),
    ("response_format", "json"), ("stream_options", True),
]


@pytest.mark.parametrize(("name", "value"), WRONG)
def test_wrong_types_of_openai_fields_are_422_and_never_forwarded(gateway, upstream_log, name,
                                                                  value):
    with gateway() as c:
        resp = c.post(CHAT, json={"messages": USER, name: value})
    assert error_of(resp, 422)["param"].split(".")[0] == name
    assert upstream_log.bodies == []


BAD_MESSAGES = [
    ([{"role": "hacker", "content": "hi"}], "messages.0.role"),
    ([{"role": "user", "content": "hi", "name": 3}], "messages.0.name"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages.0.content"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages.0.content"),
    ([{"role": "user", "content": [{"text": "no type"}]}], "messages.0.content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/a.png"}]}],
     "messages.0.content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}],
     "messages.0.content"),
    ([{"role": "user", "content": ["bare string part"]}], "messages.0.content"),
    ([{"role": "assistant", "content": None, "tool_calls": "call it"}], "messages.0.tool_calls"),
    ([{"role": "system"}, *USER], "messages.0"),
    ([{"role": "user", "content": None}], "messages.0"),
]


@pytest.mark.parametrize(("messages", "param"), BAD_MESSAGES)
def test_malformed_messages_are_422_naming_the_field(gateway, upstream_log, messages, param):
    with gateway() as c:
        resp = c.post(CHAT, json={"messages": messages})
    assert error_of(resp, 422)["param"].startswith(param)
    assert upstream_log.bodies == []


def test_valid_openai_fields_and_unknown_extras_pass_through_untouched(gateway, upstream_log):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "how do i kill a python process that hangs"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "ps", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "pid 42"},
        {"role": "User", "content": "and on windows?"},  # case is the guide step's to normalise
    ]
    fields = {"max_tokens": 64, "max_completion_tokens": 64, "n": 1, "temperature": 0,
              "top_p": 0.9, "presence_penalty": -2, "frequency_penalty": 1.5, "seed": -7,
              "stop": ["\n\n", "END"], "logprobs": False, "user": "u-1",
              "response_format": {"type": "json_object"},
              "tools": [{"type": "function", "function": {"name": "ps", "parameters": {}}}],
              "tool_choice": "auto", "mirostat": 2, "vendor": {"a": [1, {"b": None}]},
              "temperature_unit": "kelvin"}
    with gateway() as c:
        resp = c.post(CHAT, json={"messages": messages, **fields})
    assert resp.status_code == 200, resp.text
    sent = upstream_log.bodies[-1]
    assert {k: sent[k] for k in fields} == fields
    assert sent["messages"][-4:-1] == messages[-4:-1]
    assert sent["messages"][-1]["content"] == messages[-1]["content"]


# --- caps ------------------------------------------------------------------------------------

def test_caps_on_messages_characters_n_and_tokens(gateway, upstream_log):
    with gateway(max_messages=3, max_input_chars=200, max_n=2, max_output_tokens=100) as c:
        four = USER * 4
        err = error_of(c.post(CHAT, json={"messages": four}), 422)
        assert err["param"] == "messages" and "limit is 3" in err["message"]
        assert error_of(c.post(SEARCH, json={"input": four}), 422)["param"] == "input"
        err = error_of(c.post("/v1/judgements", json={"messages": four}), 422)
        assert err["param"] == "messages"
        err = error_of(c.post("/v1/moderations", json={"input": ["a", "b", "c", "d"]}), 422)
        assert err["param"] == "input"
        err = error_of(c.post("/v1/moderations", json={"input": "z" * 201}), 413)
        assert err["param"] == "input"
        long = [{"role": "user", "content": [{"type": "text", "text": "x" * 150}]},
                {"role": "user", "content": "y" * 60}]
        err = error_of(c.post(CHAT, json={"messages": long}), 413)
        assert err["param"] == "messages" and "limit is 200" in err["message"]
        assert error_of(c.post(CHAT, json={"messages": USER, "n": 3}), 422)["param"] == "n"
        for name in ("max_tokens", "max_completion_tokens"):
            err = error_of(c.post(CHAT, json={"messages": USER, name: 101}), 422)
            assert err["param"] == name and "limit is 100" in err["message"]
        assert upstream_log.bodies == []
        # at the caps, served
        ok = c.post(CHAT, json={"messages": USER * 3, "n": 2, "max_tokens": 100})
        assert ok.status_code == 200, ok.text
    assert len(upstream_log.bodies) == 1


# --- content types, CORS, docs ---------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None])
@pytest.mark.parametrize("path", POST_ROUTES)
def test_non_json_content_types_are_415(gateway, upstream_log, path, content_type):
    body = json.dumps({"messages": USER, "input": "hi"})
    headers = {"content-type": content_type} if content_type else {}
    with gateway() as c:
        resp = c.post(path, content=body, headers=headers)
    assert error_of(resp, 415)["code"] == "unsupported_media_type"
    assert upstream_log.bodies == []


def test_json_content_type_with_parameters_is_accepted(gateway, upstream_log):
    with gateway() as c:
        for ct in ("application/json; charset=utf-8", "Application/JSON"):
            resp = c.post(CHAT, content=json.dumps({"messages": USER}),
                          headers={"content-type": ct})
            assert resp.status_code == 200, (ct, resp.text)


PREFLIGHT = {"access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type"}


def test_cors_is_off_by_default(gateway):
    with gateway() as c:
        resp = c.options(CHAT, headers={"origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in resp.headers
        resp = c.post(CHAT, json={"messages": USER}, headers={"origin": "https://evil.example"})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers


def test_cors_allows_configured_origins_only(gateway):
    with gateway(cors_origins=["https://app.example"], master_key="sk-admin-0123456789") as c:
        # a preflight carries no key: it is answered before authentication
        pre = c.options(CHAT, headers={"origin": "https://app.example", **PREFLIGHT})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        other = c.options(CHAT, headers={"origin": "https://evil.example", **PREFLIGHT})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        resp = c.post(CHAT, json={"messages": USER}, headers={
            "origin": "https://app.example", "authorization": "Bearer sk-admin-0123456789"})
        assert resp.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-guide-align-guidelines" in resp.headers["access-control-expose-headers"]


def test_docs_and_schema_are_off_by_default_and_a_setting_turns_them_on(gateway):
    with gateway() as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 404, path
        assert "/v1/chat/completions" in c.app.openapi()["paths"]  # in-process, still there
    with gateway(expose_docs=True) as c:
        assert c.get("/docs").status_code == 200
        assert c.get("/redoc").status_code == 200
        assert "/v1/chat/completions" in c.get("/openapi.json").json()["paths"]


def test_openapi_declares_the_request_bodies(gateway):
    with gateway() as c:
        paths = c.app.openapi()["paths"]

    def body(path: str) -> dict:
        spec = paths[path]["post"]["requestBody"]
        assert spec["required"] is True
        return spec["content"]["application/json"]["schema"]

    chat = body(CHAT)
    assert "messages" in chat["required"]
    assert chat["additionalProperties"] is True  # unknown fields pass through
    message = chat["properties"]["messages"]["items"]
    assert set(message["properties"]["role"]["enum"]) >= {"system", "user", "assistant"}
    assert chat["properties"]["max_tokens"]["anyOf"][0]["type"] == "integer"
    options = chat["properties"]["guide_align"]["anyOf"][0]["properties"]
    assert options["k"]["anyOf"][0]["maximum"] == 50
    search = body(SEARCH)
    assert search["additionalProperties"] is False
    assert search["properties"]["k"]["anyOf"][0]["maximum"] == 50
    assert "input" in body("/v1/moderations")["required"]
    assert body("/v1/judgements")["properties"]["messages"]["minItems"] == 2
    assert "$ref" not in json.dumps(chat)


def test_cors_origins_read_from_the_environment(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("GUIDE_ALIGN_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("GUIDE_ALIGN_CORS_ORIGINS", '["https://c.example"]')
    assert Settings().cors_origins == ["https://c.example"]
    monkeypatch.delenv("GUIDE_ALIGN_CORS_ORIGINS")
    assert Settings().cors_origins == [] and Settings().expose_docs is False


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_TRICKY = st.sampled_from(['[', '{"a": [', "\\", '\\"', '\\\\"]', "}}", "x"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | _TRICKY,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3) | _TRICKY, inner, max_size=3),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_depth_scan_agrees_with_the_parsed_document(value):
    assert json_depth(orjson.dumps(value)) == _depth(value)
    assert json_depth(json.dumps(value, indent=1).encode()) == _depth(value)


@pytest.mark.slow  # trains a small judge
def test_a_judged_answer_made_of_parts_reads_only_their_text(gateway, small_judge):
    # found by the schema fuzz: a part with "text": null made the judgement a 500
    answer = {"role": "assistant", "content": [
        {"type": "text", "text": "Use kill with the process id."},
        {"type": "image_url", "image_url": {"url": "data:,"}, "text": None},
        {"type": "refusal", "text": None}]}
    with gateway(judge=small_judge[0]) as c:
        resp = c.post("/v1/judgements", json={"messages": [*USER, answer]})
        plain = c.post("/v1/judgements", json={"messages": [*USER, {
            "role": "assistant", "content": "Use kill with the process id."}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["scores"] == plain.json()["scores"]
