"""Who may call: the admin (master) key guard. Gateway keys and per-key policy build on this."""

from __future__ import annotations

import secrets

from fastapi import Request

from app.errors import NotReady, Unauthorized


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    value = request.headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_admin(request: Request) -> None:
    """FastAPI dependency for `/admin/*` and the console: the master key, compared in constant
    time. Without a configured master key the admin surface does not exist (503)."""
    master = request.app.state.settings.master_key
    if master is None:
        raise NotReady("the admin API is off: set GUIDE_ALIGN_MASTER_KEY to enable it")
    token = bearer_token(request) or request.cookies.get("guide_align_admin")
    expected = master.get_secret_value().encode()
    if token is None or not secrets.compare_digest(token.encode(), expected):
        raise Unauthorized("a valid admin key is required")
