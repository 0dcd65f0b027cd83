"""The admin API for gateway keys: create, list, revoke and change a key's policy (master key)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from app.auth import require_admin
from app.errors import GatewayError, UnprocessableEntity
from app.keys import Backtrack, KeyPolicy, KeyStore, Refine, UnknownKey
from guide.options import K_MAX

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "key_not_found"


class PolicyFields(BaseModel):
    """A key's policy as the admin API takes it; a missing or null field keeps the
    deployment's value."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=0, le=K_MAX)
    risk_threshold: float | None = Field(None, ge=0.0, le=1.0)
    backtrack: Backtrack | None = None
    refine: Refine | None = None
    models: list[Annotated[str, Field(min_length=1)]] | None = None
    allow_loosen: bool | None = None
    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)
    max_concurrency: int | None = Field(None, ge=1)


class CreateKey(PolicyFields):
    name: str = Field(min_length=1, max_length=200)


class UpdateKey(PolicyFields):
    name: str | None = Field(None, min_length=1, max_length=200)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.keys
    return store


async def _body(request: Request, model: type[PolicyFields]) -> Any:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or None
        raise UnprocessableEntity(f"{loc or 'body'}: {first['msg']}", param=loc) from None


@router.post("/keys")
async def create_key(request: Request) -> Response:
    """A new gateway key; the answer's ``key`` is the only time it is shown."""
    body: CreateKey = await _body(request, CreateKey)
    policy = KeyPolicy.from_dict(body.model_dump(exclude={"name"}))
    record, token = await anyio.to_thread.run_sync(
        lambda: _store(request).create(body.name, policy))
    return _json({**record.as_dict(), "key": token}, status=201)


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    """Every key (never the key itself), oldest first."""
    records = await anyio.to_thread.run_sync(_store(request).list)
    return _json({"object": "list", "data": [r.as_dict() for r in records]})


@router.delete("/keys/{ref}")
async def revoke_key(request: Request, ref: str) -> Response:
    """Revoke a key by id or visible prefix; it stops working within the lookup cache TTL."""
    try:
        record = await anyio.to_thread.run_sync(_store(request).revoke, ref)
    except UnknownKey as exc:
        raise NotFound(str(exc)) from None
    return _json(record.as_dict())


@router.patch("/keys/{ref}")
async def update_key(request: Request, ref: str) -> Response:
    """Change a key's name or policy: the fields sent (null restores the deployment's)."""
    body: UpdateKey = await _body(request, UpdateKey)
    changes = body.model_dump(exclude_unset=True)
    try:
        record = await anyio.to_thread.run_sync(_store(request).update, ref, changes)
    except UnknownKey as exc:
        raise NotFound(str(exc)) from None
    return _json(record.as_dict())
