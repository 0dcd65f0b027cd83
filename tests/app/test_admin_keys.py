"""The admin API for gateway keys: /admin/keys behind the master key."""

from __future__ import annotations

from pathlib import Path

USER = [{"role": "user", "content": "how do i kill a python process that hangs"}]
MASTER = "admin-master-key-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}


def _chat(c, token: str, **extra):  # type: ignore[no-untyped-def]
    return c.post("/v1/chat/completions", json={"messages": USER, **extra},
                  headers={"authorization": f"Bearer {token}"})


def test_create_list_patch_revoke(gateway, tmp_path: Path):
    keys_db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    with gateway(keys_db=keys_db, master_key=MASTER, keys_cache_ttl=0) as c:
        made = c.post("/admin/keys", json={"name": "ci", "k": 1, "models": ["ok"], "rpm": 100},
                      headers=ADMIN)
        assert made.status_code == 201
        key = made.json()
        token = key["key"]
        assert token.startswith(key["prefix"])
        assert key["policy"]["k"] == 1 and key["policy"]["models"] == ["ok"]
        listed = c.get("/admin/keys", headers=ADMIN).json()["data"]
        assert [k["name"] for k in listed] == ["ci"]
        assert token not in c.get("/admin/keys", headers=ADMIN).text
        assert _chat(c, token, model="ok").status_code == 200
        assert _chat(c, token, model="other").status_code == 403
        # widen the model list and drop k back to the deployment's
        patched = c.patch(f"/admin/keys/{key['id']}", json={"models": ["ok", "other"],
                                                            "k": None}, headers=ADMIN)
        assert patched.status_code == 200
        assert patched.json()["policy"]["models"] == ["ok", "other"]
        assert patched.json()["policy"]["k"] is None
        assert patched.json()["policy"]["rpm"] == 100  # untouched fields stay
        assert _chat(c, token, model="other").status_code == 200
        revoked = c.delete(f"/admin/keys/{key['prefix']}", headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["revoked"]
        assert _chat(c, token, model="ok").status_code == 401
        assert c.delete("/admin/keys/ga-nothing-like-it", headers=ADMIN).status_code == 404


def test_admin_needs_the_master_key_and_valid_bodies(gateway, tmp_path: Path):
    keys_db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    with gateway(keys_db=keys_db, master_key=MASTER) as c:
        assert c.get("/admin/keys").status_code == 401
        made = c.post("/admin/keys", json={"name": "x"}, headers=ADMIN).json()
        # a gateway key is not an admin key
        refused = c.get("/admin/keys", headers={"authorization": f"Bearer {made['key']}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "invalid_request_error"
        for bad in ({}, {"name": "x", "k": 99}, {"name": "x", "backtrack": "sometimes"},
                    {"name": "x", "rpm": -1}, {"name": "x", "max_concurrency": 0},
                    {"name": "x", "unknown": 1}):
            resp = c.post("/admin/keys", json=bad, headers=ADMIN)
            assert resp.status_code == 422, bad
            assert resp.json()["error"]["message"]
        assert c.post("/admin/keys", content=b"not json", headers=ADMIN).status_code == 422
        assert c.patch("/admin/keys/nope-nope", json={"k": 1}, headers=ADMIN).status_code == 404
    with gateway(keys_db=keys_db) as c:  # no master key: the admin API is off
        assert c.get("/admin/keys").status_code == 503
