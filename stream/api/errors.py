"""Every API error is JSON with a human-readable `reason`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException


def error_response(status: int, reason: str, **extra: Any) -> JSONResponse:
    """A JSON error body: `{"status": ..., "reason": ..., ...extra}`."""
    return JSONResponse({"status": status, "reason": reason, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Turn framework errors into the same JSON shape as our own."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, exc: RedisError) -> JSONResponse:
        response = error_response(503, f"Redis unavailable, retry: {type(exc).__name__}")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "; ".join(reasons))
