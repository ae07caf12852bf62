"""The one HTTP error shape: `{"error": {"code", "message"}}` with the status of its code.

Every HTTP refusal of the gateway uses it: the API's errors, the 429 of the
per-address connection rate and the 503 of a draining pod.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from realtime.protocol import ErrorCode, GatewayError, HttpError, error_body

STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.AUTH_INVALID: 401,
    ErrorCode.AUTH_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNKNOWN_ASSET: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
# aiohttp's own refusals (no such route, wrong method) in the same shape.
HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    """The one mapping of a `GatewayError` to HTTP."""
    status = STATUS[error.code]
    body: HttpError = {"error": error_body(error.code, error.message)}
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return json_response(body, status, headers)


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (no route, wrong method, bad request) in the same shape."""
    code = HTTP_CODES.get(exc.status, "BAD_REQUEST")
    return json_response({"error": {"code": code, "message": exc.reason}}, exc.status)
