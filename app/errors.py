"""OpenAI-shaped errors: one exception hierarchy and the handlers that render it."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base: an error the client sees with ``status`` and an OpenAI error body."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "bad_request"


class Unauthorized(GatewayError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class Forbidden(GatewayError):
    status, type, code = 403, "invalid_request_error", "forbidden"


class UnsupportedMediaType(GatewayError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class RateLimited(GatewayError):
    """429 with ``retry-after`` and ``x-ratelimit-*`` headers in the OpenAI style."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None,
                 code: str | None = None):
        super().__init__(message, code=code)
        self.headers = headers or {}


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class UnprocessableEntity(GatewayError):
    status, type, code = 422, "invalid_request_error", "invalid_type"


class UpstreamError(GatewayError):
    status, type, code = 502, "upstream_error", "bad_gateway"


class UpstreamTimeout(GatewayError):
    status, type, code = 504, "upstream_error", "upstream_timeout"


class UpstreamClientError(GatewayError):
    """An upstream 4xx, relayed with its own status and (sanitised) body."""

    type = "invalid_request_error"

    def __init__(self, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None):
        super().__init__(str(body.get("error", {}).get("message", "upstream rejected request")))
        self.status = status
        self.body = body
        self.headers = headers or {}  # retry-after, x-ratelimit-*: what clients back off by


class ClientClosedRequest(GatewayError):
    """The client went away before the answer (nginx's 499); nothing reaches it."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


class NotReady(GatewayError):
    status, type, code = 503, "server_error", "not_ready"


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None)\
        -> dict[str, Any]:
    """The OpenAI error JSON object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: GatewayError) -> Response:
    """Render a GatewayError as a JSON response."""
    headers: dict[str, str] = {}
    if isinstance(exc, UpstreamClientError):
        body, headers = exc.body, exc.headers
    else:
        body = error_body(exc.message, exc.type, param=exc.param, code=exc.code)
        headers = dict(getattr(exc, "headers", None) or {})
    return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json",
                    headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Make every error, including framework ones, use the OpenAI shape."""

    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(
            UnprocessableEntity(f"{loc or 'body'}: {first.get('msg', 'invalid')}", param=loc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = error_body(str(exc.detail), type_, code=str(exc.status_code))
        return Response(orjson.dumps(body), status_code=exc.status_code,
                        media_type="application/json", headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        body = error_body("internal error", "server_error", code="internal_error")
        return Response(orjson.dumps(body), status_code=500, media_type="application/json")
