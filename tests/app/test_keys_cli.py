"""`guide-align keys create | list | revoke` against a key store the gateway then uses."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from app.keys import KeyStore
from cli.main import app


def _run(keys_db: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env={"GUIDE_ALIGN_KEYS_DB": keys_db})


def test_create_list_revoke(tmp_path: Path, gateway):
    keys_db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    made = _run(keys_db, "keys", "create", "--name", "nightly-eval", "--k", "2", "--model",
                "ok", "--model", "slow-stream", "--rpm", "30", "--allow-loosen")
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert token.startswith("ga-")
    record = KeyStore(keys_db, ttl=0).lookup(token)
    assert record is not None and record.name == "nightly-eval"
    assert record.policy.models == ("ok", "slow-stream") and record.policy.allow_loosen

    listed = _run(keys_db, "keys", "list")
    assert listed.exit_code == 0
    assert "nightly-eval" in listed.output and record.prefix in listed.output
    assert token not in listed.output

    with gateway(keys_db=keys_db, keys_cache_ttl=0) as c:
        auth = {"authorization": f"Bearer {token}"}
        body = {"model": "ok", "messages": [{"role": "user", "content": "hello"}]}
        assert c.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
        revoked = _run(keys_db, "keys", "revoke", record.prefix)
        assert revoked.exit_code == 0, revoked.output
        assert c.post("/v1/chat/completions", json=body, headers=auth).status_code == 401
    active = _run(keys_db, "keys", "list", "--active").output
    assert "0 gateway keys" in active and "nightly-eval" not in active
    assert "nightly-eval" in _run(keys_db, "keys", "list").output


def test_bad_input_is_an_error(tmp_path: Path):
    keys_db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    assert _run(keys_db, "keys", "create", "--name", "x", "--backtrack", "maybe").exit_code == 2
    assert _run(keys_db, "keys", "create", "--name", "x", "--k", "99").exit_code == 2
    missing = _run(keys_db, "keys", "revoke", "ga-missing")
    assert missing.exit_code == 2 and "no key" in missing.output


def test_serve_refuses_an_open_public_host(tmp_path: Path):
    keys_db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    result = _run(keys_db, "serve", "--host", "0.0.0.0", "--no-train")
    assert result.exit_code == 2
    assert "open relay" in result.output
