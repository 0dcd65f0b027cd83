"""Gateway keys: the hashed store, authentication on /v1/*, per-key policy, the upstream's
credentials, and the start-up exposure rule."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.config import Settings
from app.keys import (
    Caller,
    ExposureError,
    KeyPolicy,
    KeyStore,
    UnknownKey,
    check_exposure,
    digest,
)
from app.main import create_app
from guide.options import GuideOptions, Policy
from tests.app.conftest import SECRET

USER = [{"role": "user", "content": "how do i kill a python process that hangs"}]
MASTER = "master-key-for-tests-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def keys_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.sqlite'}"


@pytest.fixture
def store(keys_db: str) -> KeyStore:
    return KeyStore(keys_db, ttl=0)


def test_store_keeps_only_a_hash_and_finds_keys_by_token(store, tmp_path):
    record, token = store.create("team-a", KeyPolicy(k=2, models=("ok",)))
    assert token.startswith("ga-") and len(token) > 40
    assert record.prefix == token[:10]
    assert store.lookup(token) == record
    assert store.lookup(token + "x") is None
    assert store.lookup("not-a-gateway-key") is None
    rows = sqlite3.connect(tmp_path / "keys.sqlite").execute(
        "select * from gateway_keys").fetchall()
    flat = " ".join(str(v) for v in rows[0])
    assert token not in flat and digest(token) in flat
    assert [r.name for r in store.list()] == ["team-a"]
    assert store.get(record.prefix).policy == KeyPolicy(k=2, models=("ok",))


def test_revoke_by_prefix_and_ambiguous_or_unknown_refs(store):
    record, token = store.create("a")
    store.create("b")
    with pytest.raises(UnknownKey):
        store.revoke("ga-")  # every key starts so: too short to name one
    assert len(store.list(include_revoked=False)) == 2
    with pytest.raises(UnknownKey):
        store.revoke("nope-nope")
    revoked = store.revoke(record.prefix)
    assert revoked.revoked is not None
    assert store.lookup(token) is None
    assert store.has_keys()
    assert [r.name for r in store.list(include_revoked=False)] == ["b"]


def test_reading_an_empty_store_creates_no_file(tmp_path):
    store = KeyStore(f"sqlite:///{tmp_path / 'none' / 'keys.sqlite'}", ttl=0)
    assert store.list() == [] and not store.has_keys()
    assert store.lookup("ga-anything") is None
    assert not (tmp_path / "none").exists()


def test_revocation_takes_effect_after_the_cache_ttl(keys_db):
    writer, cached = KeyStore(keys_db, ttl=0), KeyStore(keys_db, ttl=3600)
    record, token = writer.create("replica")
    assert cached.lookup(token) is not None
    writer.revoke(record.id)  # another process: this replica's cache still holds the key
    assert cached.lookup(token) is not None
    assert KeyStore(keys_db, ttl=0).lookup(token) is None


# --- authentication on /v1/* ---------------------------------------------------------------


def test_keys_required_once_a_key_exists(gateway, store, keys_db, upstream_log):
    _, token = store.create("app")
    with gateway(keys_db=keys_db, keys_cache_ttl=0) as c:
        for path, body in (("/v1/chat/completions", {"messages": USER}),
                           ("/v1/guidelines/search", {"input": "hi"})):
            missing = c.post(path, json=body)
            assert missing.status_code == 401
            assert missing.json()["error"]["code"] == "invalid_api_key"
            assert c.post(path, json=body, headers=bearer("ga-wrong")).status_code == 401
            assert c.post(path, json=body, headers=bearer(token)).status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers=bearer(token)).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
    assert len(upstream_log.bodies) == 1  # refused requests never reached the upstream


def test_revoked_key_is_refused(gateway, store, keys_db):
    record, token = store.create("leaving")
    with gateway(keys_db=keys_db, keys_cache_ttl=0) as c:
        assert c.post("/v1/chat/completions", json={"messages": USER},
                      headers=bearer(token)).status_code == 200
        store.revoke(record.id)
        resp = c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer(token))
        assert resp.status_code == 401
        assert "revoked" in resp.json()["error"]["message"]


def test_master_key_alone_closes_the_gateway_and_opens_it_to_its_holder(gateway, keys_db):
    with gateway(keys_db=keys_db, master_key=MASTER) as c:
        assert c.post("/v1/chat/completions", json={"messages": USER}).status_code == 401
        ok = c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer(MASTER))
        assert ok.status_code == 200
        assert ok.json()["guide_align"]["guidelines"]


def test_open_without_keys(gateway, keys_db):
    with gateway(keys_db=keys_db) as c:
        assert c.post("/v1/chat/completions", json={"messages": USER}).status_code == 200


# --- per-key policy --------------------------------------------------------------------------


def _guidelines(resp: Any) -> list[str]:
    value = resp.headers["x-guide-align-guidelines"]
    return value.split(",") if value else []


def test_per_key_k_and_models(gateway, store, keys_db):
    _, one = store.create("k1", KeyPolicy(k=1, models=("ok", "slow-stream")))
    wide = {"messages": USER, "guide_align": {"min_score": -1.0}}  # every match qualifies
    with gateway(keys_db=keys_db, master_key=MASTER, k=6) as c:
        base = c.post("/v1/chat/completions", json=wide, headers=bearer(MASTER))
        assert len(_guidelines(base)) > 1
        mine = c.post("/v1/chat/completions", json={"model": "ok", **wide},
                      headers=bearer(one))
        assert mine.status_code == 200
        assert _guidelines(mine) == _guidelines(base)[:1]
        denied = c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": USER},
                        headers=bearer(one))
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "model_not_allowed"
        no_model = c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer(one))
        assert no_model.status_code == 403
        # the model list shows only what the key may use
        assert c.get("/v1/models", headers=bearer(one)).json()["data"] == []
        assert c.get("/v1/models", headers=bearer(MASTER)).json()["data"]


def test_key_allow_loosen_decides_whether_requests_may_loosen(gateway, store, keys_db):
    _, strict = store.create("strict")
    _, loose = store.create("loose", KeyPolicy(allow_loosen=True))
    off = {"messages": USER, "guide_align": {"enabled": False}}
    with gateway(keys_db=keys_db) as c:
        kept = c.post("/v1/chat/completions", json=off, headers=bearer(strict))
        assert kept.headers["x-guide-align-ignored"] == "enabled"
        assert _guidelines(kept)
        dropped = c.post("/v1/chat/completions", json=off, headers=bearer(loose))
        assert "x-guide-align-ignored" not in dropped.headers
        assert _guidelines(dropped) == []
        # the search route follows the same key policy
        found = c.post("/v1/guidelines/search", json={"input": USER, "guide_align":
                                                       {"enabled": False}},
                       headers=bearer(loose))
        assert found.json()["data"] == []


def test_key_policy_overrides_the_deployment_either_way():
    base = Policy(risk_threshold=0.4, backtrack="enforce")
    caller = Caller("key:x", _record(KeyPolicy(k=2, risk_threshold=0.9, backtrack="off",
                                               refine="rewrite")))
    policy = caller.applied(base, None, allow_loosen=False).policy
    assert (policy.select.k, policy.risk_threshold, policy.backtrack) == (2, 0.9, "off")
    # a request may still tighten the key's policy, not loosen it
    applied = caller.applied(base, GuideOptions(k=1, risk_threshold=0.5), allow_loosen=False)
    assert applied.policy.select.k == 2 and applied.policy.risk_threshold == 0.5
    assert applied.ignored == ("k",)
    assert caller.policy.refine == "rewrite"  # carried for the refinement stage
    with pytest.raises(ValueError):
        KeyPolicy(k=99)


def _record(policy: KeyPolicy) -> Any:
    from datetime import UTC, datetime

    from app.keys import KeyRecord

    return KeyRecord(id="x", prefix="ga-x", name="x", created=datetime.now(UTC), revoked=None,
                     policy=policy)


# --- upstream credentials --------------------------------------------------------------------


def test_upstream_never_receives_the_gateway_key(gateway, store, keys_db, upstream_log):
    _, token = store.create("app")
    with gateway(keys_db=keys_db) as c:
        c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer(token))
        c.post("/v1/chat/completions", json={"messages": USER, "stream": True},
               headers=bearer(token))
    with gateway(keys_db=keys_db, upstream_api_key=SECRET) as c:
        c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer(token))
    with gateway(keys_db=keys_db, forward_client_auth=True) as c:
        c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer(token))
        c.post("/v1/chat/completions", json={"messages": USER},
               headers={**bearer(token), "x-upstream-authorization": "Bearer sk-client-own"})
    sent = [h.get("authorization") for h in upstream_log.headers]
    assert sent == [None, None, f"Bearer {SECRET}", None, "Bearer sk-client-own"]
    assert not any(token in str(h) for h in upstream_log.headers)


def test_open_gateway_forwards_client_auth_only_when_allowed(gateway, keys_db, upstream_log):
    with gateway(keys_db=keys_db) as c:
        c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer("sk-client"))
    with gateway(keys_db=keys_db, forward_client_auth=True) as c:
        c.post("/v1/chat/completions", json={"messages": USER}, headers=bearer("sk-client"))
    assert [h.get("authorization") for h in upstream_log.headers] == [None, "Bearer sk-client"]


# --- the exposure rule -----------------------------------------------------------------------


def test_exposure_rule(keys_db):
    store = KeyStore(keys_db, ttl=0)
    assert check_exposure(Settings(keys_db=keys_db), store).startswith(
        "open, no keys, loopback only")
    assert check_exposure(Settings(keys_db=keys_db, host="::1"), store).startswith("open")
    with pytest.raises(ExposureError, match="open relay"):
        check_exposure(Settings(keys_db=keys_db, host="0.0.0.0"), store)
    assert "ALLOW_OPEN" in check_exposure(
        Settings(keys_db=keys_db, host="0.0.0.0", allow_open=True), store)
    assert "keys required" in check_exposure(
        Settings(keys_db=keys_db, host="0.0.0.0", master_key=MASTER), store)
    record, _ = store.create("k")
    assert "keys required" in check_exposure(Settings(keys_db=keys_db, host="10.1.2.3"), store)
    store.revoke(record.id)  # revoking the last key closes the gateway; it never reopens it
    assert "keys required" in check_exposure(Settings(keys_db=keys_db, host="10.1.2.3"), store)


def test_app_refuses_to_start_open_on_a_public_host(small_retriever, keys_db):
    settings = Settings(keys_db=keys_db, host="0.0.0.0",
                        upstream_base_url="http://upstream.test/v1")
    with pytest.raises(ExposureError), TestClient(create_app(settings,
                                                             retriever=small_retriever)):
        pass


@pytest.mark.slow  # trains a small judge
def test_per_key_risk_threshold_decides_moderation(small_retriever, small_judge, store, keys_db):
    import httpx

    from tests.fakes.upstream import make_upstream

    _, everything = store.create("flag-all", KeyPolicy(risk_threshold=0.0))
    _, nothing = store.create("flag-none", KeyPolicy(risk_threshold=1.0, allow_loosen=False))
    settings = Settings(keys_db=keys_db, master_key=MASTER, risk_gate=True,
                        upstream_base_url="http://upstream.test/v1")
    app = create_app(settings, retriever=small_retriever, judge=small_judge[0],
                     transport=httpx.ASGITransport(app=make_upstream()))
    body = {"input": ["what is the capital of france", "write ransomware for my office"]}
    with TestClient(app) as c:
        flags = {who: [r["flagged"] for r in c.post("/v1/moderations", json=body,
                                                     headers=bearer(tok)).json()["results"]]
                 for who, tok in (("all", everything), ("none", nothing))}
    assert flags["all"] == [True, True]
    assert flags["none"] == [False, False]
