"""Every error the API returns: ``{"error": {"code", "message", "field"?}}``.

Messages are the CLI's one-liners (``workers.commands.explain``): a user reads
the same words whichever way they reached a run.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import (
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from schemas.api import ErrorBody, ErrorDetail
from workers.commands import explain
from workers.text import printable

log = structlog.get_logger("fsmflow.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    502: "temporal_error",
    503: "unavailable",
    504: "timeout",
}

# What the workflow's message validator says about the message itself (the rest
# is about the run: ended, autonomous, at a gate): those name the field.
_MESSAGE_PROBLEMS = ("the message is empty", "the message has ")


class ApiError(Exception):
    """An error response: HTTP status, code, one-line message, the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """An error; ``code`` defaults to the status's (``not_found``, ``invalid``...)."""
        super().__init__(message)
        self.status = status
        self.message = printable(message)
        self.code = code or _CODES.get(status, "error")
        self.field = field
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        """The JSON body."""
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message, field=self.field))

    def response(self) -> JSONResponse:
        """The response for this error."""
        content = self.body().model_dump(exclude_none=True)
        return JSONResponse(content, status_code=self.status, headers=self.headers)


def unreachable(address: str, detail: str) -> ApiError:
    """Temporal cannot be reached (503)."""
    return ApiError(503, f"cannot reach Temporal at {address}: {detail}")


def from_temporal(
    error: BaseException, workflow_id: str | None = None, *, doing: str = "", address: str = ""
) -> ApiError:
    """The API error for a failed Temporal call.

    Args:
        error: What the client raised.
        workflow_id: The run the call was about (named by "no workflow" errors).
        doing: A prefix like the CLI's (``message refused``, ``cannot start 'x'``).
        address: The Temporal address, for "cannot reach" errors.
    """
    prefix = f"{doing}: " if doing else ""
    said = explain(error, workflow_id)
    if isinstance(error, WorkflowAlreadyStartedError):
        return ApiError(409, f"{prefix}{said}", code="already_exists")
    if isinstance(error, WorkflowUpdateFailedError):
        # Refused by the run (its validator, or its handler once the run moved on).
        field = "text" if said.startswith(_MESSAGE_PROBLEMS) else None
        return ApiError(422 if field else 409, f"{prefix}{said}", field=field)
    if isinstance(error, WorkflowQueryFailedError):
        return ApiError(409, f"{prefix}{said}")
    if isinstance(error, WorkflowFailureError):
        return ApiError(409, f"{prefix}{said}")
    if isinstance(error, WorkflowUpdateRPCTimeoutOrCancelledError):
        return ApiError(504, f"{prefix}the run did not answer in time")
    if isinstance(error, RPCError):
        if "already completed" in error.message:
            return ApiError(409, f"{prefix}run {workflow_id!r} has ended", code="ended")
        if error.status == RPCStatusCode.NOT_FOUND:
            return ApiError(404, f"{prefix}{said}")
        if error.status == RPCStatusCode.ALREADY_EXISTS:
            return ApiError(409, f"{prefix}{said}", code="already_exists")
        if error.status == RPCStatusCode.INVALID_ARGUMENT:
            return ApiError(422, f"{prefix}{said}")
        if error.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.UNAUTHENTICATED,
            RPCStatusCode.PERMISSION_DENIED,
            RPCStatusCode.RESOURCE_EXHAUSTED,
        ):
            return unreachable(address, said)
        if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return ApiError(503, f"{prefix}no worker answered in time ({said})")
        return ApiError(502, f"{prefix}{said}")
    if isinstance(error, TimeoutError):
        return ApiError(504, f"{prefix}the run did not answer in time")
    return ApiError(500, f"{prefix}{said}")


def _field(loc: tuple[Any, ...]) -> str:
    """``("body", "context", "x")`` -> ``context.x``; the part of the request at the top."""
    return ".".join(str(part) for part in loc[1:]) or str(loc[0] if loc else "request")


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """A request FastAPI could not validate: 422 naming its first problem's field.

    The message reads like ``fsm.problems.validation_problem`` (``where: what``).
    """
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    if not problems:
        return ApiError(422, "invalid request").response()
    first = problems[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        message = f"body: not JSON{': ' + str(detail) if detail else ''}"
        return ApiError(422, message, field="body").response()
    field = _field(loc)
    message = f"{field}: {first.get('msg', 'invalid')}"
    return ApiError(422, message, field=field).response()


async def http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in the API's shape."""
    assert isinstance(error, StarletteHTTPException)
    message = str(error.detail) if error.detail else "error"
    if error.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return ApiError(error.status_code, message, headers=dict(error.headers or {})).response()


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback, answered without its details."""
    log.error(
        "api.internal_error",
        method=request.method,
        path=request.url.path,
        error=type(error).__name__,
        exc_info=error,
    )
    return ApiError(500, "internal error (the API's log has the details)").response()


async def api_error(request: Request, error: Exception) -> JSONResponse:
    """An ``ApiError`` raised by a route or a dependency."""
    assert isinstance(error, ApiError)
    return error.response()
