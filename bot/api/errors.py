"""Errors in OpenAI's shape, and what the queue's failures and the workers' error events become."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.errors import BotError
from chatbus import BusError, ErrorEvent, NotAnswering, WritesRefused


class ApiError(BotError):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return web.json_response(self.body(), status=self.status, headers=headers)


def unavailable(exc: BusError) -> ApiError:
    """503 naming why the queue cannot be used: down, not answering, or refusing writes."""
    why = "is not answering" if isinstance(exc, NotAnswering) else "is unreachable"
    if isinstance(exc, WritesRefused):  # the reason the relay and `kullm ask` name too
        why = f"refuses writes ({exc.reason})"
    return ApiError(503, f"the queue (Redis) {why}", "server_error", "service_unavailable", retry_after=5)


def error_of(event: ErrorEvent) -> ApiError:
    if event.code == "too_long":
        return ApiError(400, "the messages are longer than the model can read", code="context_length_exceeded")
    if event.code == "overloaded":
        return ApiError(503, "the service is overloaded", "server_error", "overloaded")
    if event.code == "expired":
        return ApiError(503, "the question waited past its expiry", "server_error", "timeout")
    if event.code == "unsupported":  # the worker's own words: what it cannot do and which setting decides it
        return ApiError(400, event.message or "this deployment cannot answer that request", code="unsupported")
    if event.code == "cancelled":
        return ApiError(499, "the question was cancelled", code="cancelled")
    return ApiError(500, "the answer failed", "server_error", "failed")
