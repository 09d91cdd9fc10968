"""The web console of ``fsmflow api`` (docs/console.md): runs, a run live, chat, approvals.

Pages are rendered on the server (Jinja2 templates under ``templates/``) from
what the API itself reads (``workers.api.runs``); one small script
(``static/console.js``) streams chat replies and follows a run's events. Nothing
is fetched from another site: the console works offline.

Who is signed in is the API token in the session cookie (``session``), checked
by the same table and rate buckets as ``/v1``; what they may see and do is
decided by the same rules (``Runs.authorize``, ``Runs.decide``).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import structlog
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from schemas.api import MAX_ID_CHARS, DecisionRequest, RunSummary, SendMessage
from schemas.definition import AGENT_NAME_PATTERN, AgentDefinition
from schemas.snapshot import FSM_STATUSES
from workers.api import events
from workers.api.auth import Identity
from workers.api.console import diagram, session, views
from workers.api.console.session import SignInRequired
from workers.api.errors import ApiError, api_error
from workers.api.runs import Runs
from workers.commands import ui_link
from workers.settings import Settings

__all__ = ["install"]

log = structlog.get_logger("fsmflow.api")

HERE = Path(__file__).parent
PREFIX = "/console"
INBOX_LIMIT = 50
"""Runs awaiting approval the inbox looks at (newest first)."""
LAST_TURNS = 4
"""Trace entries the inbox shows of each run."""

templates = Jinja2Templates(directory=str(HERE / "templates"))


def _json_routes(request: Request) -> bool:
    """Routes a script calls: they answer errors as JSON, like ``/v1``."""
    accept = request.headers.get("accept", "")
    return "text/event-stream" in accept or "application/json" in accept


def _owned(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def _next_path(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each); the body is bounded by the app."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}


class Console:
    """The console's pages over one ``Runs`` and the API's settings."""

    def __init__(self, settings: Settings, runs: Runs) -> None:
        """Pages for the runs ``runs`` reaches."""
        self.settings = settings
        self.runs = runs

    # -------------------------------------------------------------- rendering

    def page(
        self,
        request: Request,
        template: str,
        identity: Identity | None,
        *,
        status_code: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        """A page with the header (who is signed in, sign-out) and ``values``."""
        token = session.session_token(request)
        context = {
            "identity": identity,
            "csrf": session.csrf_token(token) if token and identity else "",
            "prefix": PREFIX,
            "path": request.url.path,
            **values,
        }
        response = templates.TemplateResponse(request, template, context, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def error_page(self, request: Request, exc: ApiError) -> Response:
        """An ``ApiError`` met by a page: the same message, on a page (or JSON for scripts)."""
        if _json_routes(request):
            return exc.response()
        identity = None
        token = session.session_token(request)
        if token is not None:
            identity = request.app.state.tokens.identify(token)
        response = self.page(
            request,
            "error.html",
            identity,
            status_code=exc.status,
            error=exc,
        )
        response.headers.update(exc.headers)
        return response

    def sign_in_redirect(self, request: Request, exc: SignInRequired) -> Response:
        """To the sign-in page, coming back here after (scripts get a 401)."""
        if _json_routes(request):
            return ApiError(401, exc.message).response()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = PREFIX + "/"  # a form sent without a session: start again from the list
        query = urlencode({"next": target, "why": exc.message})
        return RedirectResponse(f"{PREFIX}/sign-in?{query}", status_code=303)

    # -------------------------------------------------------------- the routes

    def router(self) -> APIRouter:  # noqa: C901 - one closure per route
        """The console's routes, under ``/console``."""
        router = APIRouter(prefix=PREFIX, include_in_schema=False)
        runs = self.runs

        @router.get("/sign-in", response_class=HTMLResponse)
        async def sign_in_page(
            request: Request,
            next: Annotated[str | None, Query(max_length=2000)] = None,
            why: Annotated[str | None, Query(max_length=200)] = None,
        ) -> Response:
            return self.page(
                request, "sign_in.html", None, next=_next_path(next), why=why or "", error=""
            )

        @router.post("/sign-in", response_class=HTMLResponse)
        async def sign_in(request: Request) -> Response:
            if not session.same_origin(request):
                raise ApiError(403, "refused: the request came from another site", code="csrf")
            form = await _form(request)
            token = form.get("token", "").strip()
            target = _next_path(form.get("next"))
            identity = request.app.state.tokens.identify(token) if token else None
            if identity is None:
                return self.page(
                    request,
                    "sign_in.html",
                    None,
                    status_code=401,
                    next=target,
                    why="",
                    error="That token is not valid. Paste the token of your identity "
                    "(e.g. from .fsmflow/api-tokens: the part after 'name:').",
                )
            log.info("console.signed_in", identity=identity.name)
            response = RedirectResponse(target, status_code=303)
            session.set_session(request, response, token)
            return response

        @router.post("/sign-out")
        async def sign_out(request: Request) -> Response:
            form = await _form(request)
            session.check_csrf(request, form.get(session.CSRF_FIELD))
            response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
            session.clear_session(request, response)
            return response

        @router.get("", response_class=HTMLResponse)
        @router.get("/", response_class=HTMLResponse)
        async def run_list(
            request: Request,
            agent: Annotated[str | None, Query(max_length=100)] = None,
            state: Annotated[str | None, Query(max_length=100)] = None,
            status: Annotated[str | None, Query(max_length=40)] = None,
            awaiting: Annotated[str | None, Query(max_length=10)] = None,
            page_token: Annotated[str | None, Query(max_length=4096)] = None,
        ) -> Response:
            identity = session.signed_in(request)
            filters = {
                "agent": agent or "",
                "state": state or "",
                "status": status or "",
                "awaiting": awaiting or "",
            }
            if agent and not _valid_agent(agent):
                raise ApiError(422, f"invalid agent {agent!r}", field="agent")
            listed = await runs.list(
                identity,
                agent=agent or None,
                state=state or None,
                status=status or None,
                awaiting_approval={"yes": True, "no": False}.get(awaiting or ""),
                page_token=page_token or None,
                limit=25,
            )
            following = None
            if listed.next_page_token:
                kept = {key: value for key, value in filters.items() if value}
                following = urlencode({**kept, "page_token": listed.next_page_token})
            return self.page(
                request,
                "runs.html",
                identity,
                rows=[(row, ui_link(self.settings, row.id)) for row in listed.runs],
                filters=filters,
                statuses=FSM_STATUSES,
                agents=self._agent_names(identity),
                following=following,
            )

        @router.get("/runs/{id}", response_class=HTMLResponse)
        async def run_page(request: Request, id: str) -> Response:
            identity = session.signed_in(request)
            _check_id(id)
            facts = await runs.facts(id)
            await runs.authorize(identity, facts)
            # The stream's end first: events after it are followed live; the page
            # below may already show some of them (the script skips those by step).
            offset = None
            if facts.running:
                offset = await events.message_offset(events.stream_of(await runs.client(), id))
            view = await runs.view(identity, id)
            try:
                trace = (await runs.trace(identity, id)).entries
                trace_error = ""
            except ApiError as exc:
                trace, trace_error = [], exc.message
            context = await runs.context(identity, id)
            definition = await runs.definition(facts)
            svg = ""
            keys: list[str] = []
            if definition is not None:
                svg = diagram.svg(
                    definition,
                    current=view.state,
                    counts=views.path_counts(trace),
                    visited=views.visited(definition.initial_state, trace),
                    link=lambda state: f"{PREFIX}/agents/{quote(definition.name)}#state-{state}",
                )
                keys = [k for k, spec in definition.context.items() if spec.secret]
            detail = view.detail
            return self.page(
                request,
                "run.html",
                identity,
                view=view,
                detail=detail,
                definition=definition,
                svg=svg,
                timeline=views.timeline(trace),
                trace_error=trace_error,
                context=context,
                secret_keys=keys,
                shown=views.shown_value,
                offset=offset,
                step=detail.step if detail is not None else 0,
                may_decide=_may_decide(identity, view.gate.approvers if view.gate else None),
                purpose=_purpose(definition, view.state),
                decided=request.query_params.get("decided", ""),
            )

        @router.get("/runs/{id}/events")
        async def run_events(
            request: Request, id: str, from_offset: Annotated[int, Query(ge=0)] = 0
        ) -> Response:
            identity = session.signed_in(request)
            _check_id(id)
            return await events.follow(runs, identity, id, from_offset)

        @router.post("/runs/{id}/messages")
        async def message(request: Request, id: str) -> Response:
            identity = session.signed_in(request)
            session.check_csrf(request, request.headers.get(session.CSRF_HEADER))
            _check_id(id)
            try:
                raw = json.loads(await request.body())
                body = SendMessage.model_validate(raw)
            except (ValueError, ValidationError) as exc:
                errors = exc.errors() if isinstance(exc, ValidationError) else []
                where = str(errors[0]["loc"][-1]) if errors else None
                text = errors[0]["msg"] if errors else "the body is not JSON"
                raise ApiError(422, f"message refused: {text}", field=where) from None
            message_id = body.message_id or f"msg-{uuid.uuid4()}"
            return await events.stream_message(runs, identity, id, body, message_id)

        @router.post("/runs/{id}/decision")
        async def decide(request: Request, id: str) -> Response:
            identity = session.signed_in(request)
            form = await _form(request)
            session.check_csrf(request, form.get(session.CSRF_FIELD))
            _check_id(id)
            try:
                body = DecisionRequest.model_validate(
                    {"decision": form.get("decision", ""), "comment": form.get("comment", "")}
                )
            except ValidationError as exc:
                raise ApiError(
                    422, f"decision refused: {exc.errors()[0]['msg']}", field="decision"
                ) from None
            recorded = await runs.decide(identity, id, body)
            back = _next_path(form.get("next")) if form.get("next") else f"{PREFIX}/runs/{id}"
            separator = "&" if "?" in back else "?"
            return RedirectResponse(
                f"{back}{separator}decided={recorded.decision}", status_code=303
            )

        @router.get("/chat", response_class=HTMLResponse)
        async def chat(
            request: Request,
            run: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
            agent: Annotated[str | None, Query(max_length=100)] = None,
        ) -> Response:
            identity = session.signed_in(request)
            conversations = [
                file.definition
                for file in self._agent_files(identity)
                if file.definition is not None and file.definition.mode == "conversation"
            ]
            view = None
            if run:
                _check_id(run)
                view = await runs.view(identity, run)
                agent = view.agent
            elif agent:
                if not _valid_agent(agent) or not identity.may_use(agent):
                    raise ApiError(403, f"{identity.describe()} may not use agent {agent!r}")
            new_id = f"{agent}-{uuid.uuid4().hex[:8]}" if agent and not run else None
            # What the agent said last: a new conversation's greeting, or where a
            # run's dialogue stands.
            if view is not None:
                said = view.detail.last_reply if view.detail is not None else ""
            else:
                said = next((d.greeting for d in conversations if d.name == agent), "")
            return self.page(
                request,
                "chat.html",
                identity,
                run=run,
                view=view,
                agent=agent,
                new_id=new_id,
                conversations=conversations,
                said=said,
            )

        @router.get("/inbox", response_class=HTMLResponse)
        async def inbox(request: Request) -> Response:
            identity = session.signed_in(request)
            listed = await runs.list(
                identity,
                agent=None,
                state=None,
                status=None,
                awaiting_approval=True,
                page_token=None,
                limit=INBOX_LIMIT,
            )
            found = await asyncio.gather(*(self._inbox_item(identity, row) for row in listed.runs))
            return self.page(
                request,
                "inbox.html",
                identity,
                items=[item for item in found if item is not None],
                decided=request.query_params.get("decided", ""),
                shown=views.shown_value,
            )

        @router.get("/agents", response_class=HTMLResponse)
        async def agents(request: Request) -> Response:
            identity = session.signed_in(request)
            return self.page(
                request,
                "agents.html",
                identity,
                files=self._agent_files(identity),
                directory=self.settings.agents_dir,
            )

        @router.get("/agents/{name}", response_class=HTMLResponse)
        async def agent(request: Request, name: str) -> Response:
            identity = session.signed_in(request)
            match = [
                file for file in self._agent_files(identity) if name in (file.name, file.path.stem)
            ]
            if not match:
                raise ApiError(
                    404, f"no agent {name!r} in {self.settings.agents_dir} (or not yours)"
                )
            file = match[0]
            svg = ""
            if file.definition is not None:
                svg = diagram.svg(file.definition, link=lambda state: f"#state-{state}")
            return self.page(
                request,
                "agent.html",
                identity,
                file=file,
                definition=file.definition,
                svg=svg,
                edges=diagram.edges_of(file.definition) if file.definition else [],
            )

        return router

    # ----------------------------------------------------------------- helpers

    def _agent_files(self, identity: Identity) -> list[views.AgentFile]:
        files = views.agent_files(self.settings.agents_dir, tiers=sorted(self.settings.models))
        return [file for file in files if identity.may_use(file.name)]

    def _agent_names(self, identity: Identity) -> list[str]:
        return sorted({file.name for file in self._agent_files(identity)})

    async def _inbox_item(self, identity: Identity, row: RunSummary) -> dict[str, Any] | None:
        """A run waiting at a gate ``identity`` may decide, with what deciding needs."""
        try:
            facts = await self.runs.facts(row.id)
            gate = await self.runs.gate(facts)
            if gate is None or not _may_decide(identity, gate.approvers):
                return None
            definition = await self.runs.definition(facts)
            context = await self.runs.context(identity, row.id)
            trace = (await self.runs.trace(identity, row.id)).entries
        except ApiError as exc:
            log.info("console.inbox_skipped", workflow_id=row.id, problem=exc.message)
            return None
        keys = views.gate_keys(definition, gate.state)
        if context is not None and keys is not None:
            context = {key: context[key] for key in keys if key in context}
        return {
            "row": row,
            "gate": gate,
            "purpose": _purpose(definition, gate.state),
            "context": context,
            "turns": views.timeline(trace[-LAST_TURNS:]),
        }


def _valid_agent(name: str) -> bool:
    return re.fullmatch(AGENT_NAME_PATTERN, name) is not None


def _check_id(workflow_id: str) -> None:
    if not workflow_id or len(workflow_id) > MAX_ID_CHARS * 5:
        raise ApiError(422, "not a run id", field="id")


def _may_decide(identity: Identity, approvers: list[str] | None) -> bool:
    """Whether ``identity`` is among a gate's approvers (any identity when it names none)."""
    return approvers is not None and (not approvers or identity.name in approvers)


def _purpose(definition: AgentDefinition | None, state: str | None) -> str:
    if definition is None or state is None or state not in definition.states:
        return ""
    found = definition.states[state]
    return found.purpose or found.description


def install(app: FastAPI, settings: Settings, runs: Runs) -> None:
    """Serve the console on ``app``: ``/console`` (``/`` leads there) and its static files.

    Errors met by its pages are shown on a page (scripts get the API's JSON).
    """
    console = Console(settings, runs)
    app.include_router(console.router())
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="console")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if _owned(request):
            return console.error_page(request, exc)
        return await api_error(request, exc)

    async def on_sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return console.sign_in_redirect(request, exc)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(SignInRequired, on_sign_in)
