"""The HTTP API's routes and middleware (FastAPI; OpenAPI at ``/openapi.json``).

Every ``/v1`` route authenticates a bearer token (``workers.api.auth``), takes
one request from its identity's rate bucket, and does one thing with Temporal
(``workers.api.runs``); ``/healthz`` and ``/readyz`` are for probes. Request
bodies are read whole, up to ``FSMFLOW_API_MAX_BODY``, before any route sees
them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.api import (
    DecisionRecorded,
    DecisionRequest,
    ErrorBody,
    MessageReply,
    RunList,
    RunStarted,
    RunView,
    SendMessage,
    StartRun,
    TraceView,
)
from schemas.definition import AGENT_NAME_PATTERN
from schemas.run import Reply
from workers.api import console, events
from workers.api.auth import Identity, RateLimiter, Tokens, authenticate
from workers.api.errors import (
    ApiError,
    api_error,
    http_error,
    internal_error,
    validation_error,
)
from workers.api.runs import Runs
from workers.settings import Settings, parse_rate

log = structlog.get_logger("fsmflow.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_RUN_ID = 1_000
"""A run id in a path: Temporal's own bound (runs started elsewhere may have any id)."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "no token, or not a valid one",
        403: "the identity may not do this (another agent, not an approver)",
        413: "the body is over FSMFLOW_API_MAX_BODY",
        422: "invalid input; `field` names it",
        429: "over FSMFLOW_API_RATE (see Retry-After)",
        503: "Temporal unreachable, or no worker answered",
    }.items()
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such run"},
    409: {"model": ErrorBody, "description": "the run is not where the request needs it"},
}


class BodyLimit:
    """Reads a request's body whole, refusing (413) one over ``limit`` bytes.

    Before the app: a body FastAPI had begun to parse could not be refused
    cleanly, and the largest valid body is small (``FSMFLOW_API_MAX_BODY``).
    """

    def __init__(self, app: Asgi, limit: int) -> None:
        """Wrap ``app``."""
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body, then call the app with it replayed."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = ApiError(
            413, f"the request body is over {self.limit} bytes (FSMFLOW_API_MAX_BODY)"
        ).response()
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AccessLog:
    """One log line per request: method, path, status, milliseconds, identity.

    Never a header, a query string or a body: tokens and messages stay out of logs.
    """

    def __init__(self, app: Asgi) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app, noting the response's status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            log.info(
                "api.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.monotonic() - started) * 1000, 1),
                identity=scope.get("state", {}).get("identity"),
            )


_bearer = HTTPBearer(auto_error=False, description="A token of FSMFLOW_API_TOKENS(_FILE)")


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The authenticated identity of a request, which takes one from its rate bucket.

    Raises:
        ApiError: 401 without a valid token, 429 over the identity's rate.
    """
    return authenticate(request, credentials.credentials if credentials else None)


Caller = Annotated[Identity, Depends(caller)]
RunId = Annotated[str, Path(min_length=1, max_length=MAX_RUN_ID, description="workflow id")]


def create_app(settings: Settings, *, tokens: Tokens, runs: Runs | None = None) -> FastAPI:
    """The API application.

    Args:
        settings: ``FSMFLOW_API_*`` and how to reach Temporal.
        tokens: Who may call it.
        runs: The Temporal side (default: connected with ``workers.client.connect``).
    """
    runs = runs or Runs(settings)
    rate = parse_rate(settings.api_rate)
    limiter = RateLimiter(*rate) if rate is not None else None
    app = FastAPI(
        title="fsmflow API",
        version="1",
        summary="Start, talk to, approve and follow fsmflow runs (durable Temporal workflows).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(BodyLimit, limit=settings.api_max_body)
    app.add_middleware(AccessLog)
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.limiter = limiter
    v1 = APIRouter(prefix="/v1", tags=["runs"], responses=_ERRORS)

    @v1.post(
        "/runs",
        response_model=RunStarted,
        status_code=201,
        responses={
            202: {"model": RunStarted, "description": "started; no worker has taken it yet"},
            409: {"model": ErrorBody, "description": "a running run has that id"},
        },
    )
    async def start_run(body: StartRun, identity: Caller) -> JSONResponse:
        """Start a run of an agent; 201 once it took its first state, 202 before."""
        started, resolved = await runs.start(identity, body)
        return JSONResponse(started.model_dump(mode="json"), status_code=201 if resolved else 202)

    @v1.post(
        "/runs/{id}/messages",
        response_model=MessageReply,
        responses={
            **_NOT_FOUND,
            200: {
                "description": "the reply; with `Accept: text/event-stream`, SSE events "
                "`delta` ({text}), `reset`, then `reply` (this body) or `error`",
                "content": {"text/event-stream": {}},
            },
            504: {"model": ErrorBody, "description": "no reply in time; resend, same id"},
        },
    )
    async def send_message(id: RunId, body: SendMessage, identity: Caller, request: Request) -> Any:
        """One conversation turn, starting the conversation if ``agent`` is given.

        ``message_id`` is the turn's idempotency key: sent again, the message is
        answered once (the same reply), also after the run continued as new.
        """
        message_id = body.message_id or f"msg-{uuid.uuid4()}"

        def render(reply: Reply, created: bool) -> MessageReply:
            return MessageReply(id=id, message_id=message_id, created=created, **reply.model_dump())

        if "text/event-stream" not in request.headers.get("accept", ""):
            reply, created = await runs.send(identity, id, body, message_id)
            return render(reply, created)
        return await events.stream_message(runs, identity, id, body, message_id)

    @v1.get("/runs/{id}", response_model=RunView, responses=_NOT_FOUND)
    async def get_run(id: RunId, identity: Caller) -> RunView:
        """Where a run is, what it waits for, its open gate and who may decide there."""
        return await runs.view(identity, id)

    @v1.get("/runs/{id}/trace", response_model=TraceView, responses=_NOT_FOUND)
    async def get_trace(id: RunId, identity: Caller) -> TraceView:
        """Every judged turn, tool call and decision of the run."""
        return await runs.trace(identity, id)

    @v1.get("/runs", response_model=RunList)
    async def list_runs(
        identity: Caller,
        agent: Annotated[str | None, Query(max_length=100, pattern=AGENT_NAME_PATTERN)] = None,
        state: Annotated[str | None, Query(max_length=100)] = None,
        status: Annotated[str | None, Query(max_length=40, description="FsmStatus")] = None,
        awaiting_approval: bool | None = None,
        page_token: Annotated[str | None, Query(max_length=4096)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> RunList:
        """Runs from the visibility store, newest first, a page at a time."""
        return await runs.list(
            identity,
            agent=agent,
            state=state,
            status=status,
            awaiting_approval=awaiting_approval,
            page_token=page_token,
            limit=limit,
        )

    @v1.get(
        "/runs/{id}/events",
        responses={
            **_NOT_FOUND,
            200: {
                "description": "SSE: one event per RunEvent (`event`: its kind, `id`: its "
                "offset), then `end` once the run closed",
                "content": {"text/event-stream": {}},
            },
            501: {"model": ErrorBody, "description": "the run publishes no events"},
        },
    )
    async def run_events(
        id: RunId,
        identity: Caller,
        from_offset: Annotated[int, Query(ge=0)] = 0,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> EventSourceResponse:
        """The run's events from an offset; ``Last-Event-ID`` resumes after that event."""
        if last_event_id is not None:
            if not last_event_id.isdigit():
                raise ApiError(
                    422, "last-event-id: an event id is a stream offset", field="last-event-id"
                )
            from_offset = int(last_event_id) + 1
        return await events.follow(runs, identity, id, from_offset)

    @v1.post(
        "/runs/{id}/decision",
        response_model=DecisionRecorded,
        status_code=202,
        responses=_NOT_FOUND,
    )
    async def decide(id: RunId, body: DecisionRequest, identity: Caller) -> DecisionRecorded:
        """Approve or reject at the run's open gate, as the authenticated identity.

        The identity must be one of the gate's approvers (when it names any); the
        decision is signalled and the run applies it.
        """
        return await runs.decide(identity, id, body)

    app.include_router(v1)
    console.install(app, settings, runs)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, bool]:
        # Unauthenticated (probes): says whether, never where or why (that is logged).
        try:
            await runs.ready()
        except ApiError as exc:
            log.warning("api.not_ready", problem=exc.message)
            raise ApiError(503, "not ready: Temporal does not answer") from None
        return {"ok": True}

    app.state.runs = runs
    return app
