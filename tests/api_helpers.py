"""The HTTP API on a free port in this process, and a client speaking to it over HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from tests.conftest import EXAMPLES, free_port
from workers.api import Runs, server, tokens_of
from workers.settings import Settings

"""Whether ``AgentWorkflow`` hosts its run's event stream (``temporalio.contrib.workflow_streams``):
the tests of its events run then, those of a run without a stream until then."""

TOKENS = {
    "alice": "alice-token-0123456789abcdef",
    "bob": "bob-token-0123456789abcdef00",
    # Restricted to the research agent.
    "carol": "carol-token-0123456789abcdef",
}
TOKENS_SPEC = ",".join(
    f"{name}:{token}" + (":research" if name == "carol" else "") for name, token in TOKENS.items()
)


def gated(name: str, approvers: list[str] | None = None) -> dict[str, Any]:
    """An agent that starts at an approval gate: no model call before the decision."""
    return {
        "name": name,
        "initial_state": "review",
        "states": {
            "review": {
                "purpose": "A human decides.",
                "approval": {
                    "on_approve": "done",
                    "on_reject": "rejected",
                    "approvers": ["alice"] if approvers is None else approvers,
                },
            },
            "done": {"terminal": True},
            "rejected": {"terminal": True},
        },
    }


def agents_dir(tmp_path: Path, *definitions: dict[str, Any]) -> Path:
    """An agents directory: the examples and the given definitions."""
    directory = tmp_path / "agents"
    directory.mkdir()
    for name in ("form.yaml", "research.yaml"):
        shutil.copy(EXAMPLES / name, directory / name)
    for definition in definitions:
        (directory / f"{definition['name']}.json").write_text(json.dumps(definition))
    return directory


def api_settings(settings: Settings, client: Client, **overrides: Any) -> Settings:
    """The worker's settings plus the API's: a free port, the test tokens, no rate limit."""
    values: dict[str, Any] = {
        "api_port": free_port(),
        "api_tokens": TOKENS_SPEC,
        "api_rate": "off",
        "temporal_address": client.service_client.config.target_host,
        "ui_url": "http://ui.test",
    }
    values.update(overrides)
    return Settings.load(environ={}, **(settings.model_dump() | values))


@dataclass
class Sse:
    """One server-sent event."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class Api:
    """An HTTP client of the API, authenticating as one of ``TOKENS`` (or not at all)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=120)

    def headers(self, who: str | None, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if who is not None:
            headers["Authorization"] = f"Bearer {TOKENS.get(who, who)}"
        return headers

    async def get(self, path: str, *, who: str | None = "alice", **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.headers(who), **kwargs)

    async def post(
        self, path: str, body: Any = None, *, who: str | None = "alice", **kwargs: Any
    ) -> httpx.Response:
        return await self.http.post(path, json=body, headers=self.headers(who), **kwargs)

    async def events(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        who: str = "alice",
        headers: dict[str, str] | None = None,
        until: str | None = None,
        into: list[Sse] | None = None,
    ) -> tuple[httpx.Response, list[Sse]]:
        """A request for server-sent events, read to the end (or to an ``until`` event).

        ``into`` receives each event as it arrives (for a test acting mid-stream).
        """
        received: list[Sse] = into if into is not None else []
        request_headers = self.headers(who, Accept="text/event-stream", **(headers or {}))
        async with self.http.stream(method, path, json=body, headers=request_headers) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                fields: dict[str, str] = {}
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        continue  # a ping
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
                        continue
                    if "event" in fields or "data" in fields:
                        event = Sse(fields.get("event", "message"), fields.get("data", ""))
                        event.id = fields.get("id")
                        received.append(event)
                        if until is not None and event.event == until:
                            break
                    fields = {}
            else:
                await response.aread()
        return response, received

    async def wait_listed(
        self, query: str, count: int, *, who: str = "alice", timeout: float = 20.0
    ) -> dict[str, Any]:
        """``GET /v1/runs?...`` until it lists ``count`` runs (visibility lags a little)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.get(f"/v1/runs?{query}", who=who)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if len(body["runs"]) == count or asyncio.get_running_loop().time() > deadline:
                return body
            await asyncio.sleep(0.2)


@asynccontextmanager
async def serving(settings: Settings, *, runs: Runs | None = None) -> AsyncIterator[Api]:
    """The API on ``settings.api_port`` in this process, until the block ends."""
    uvicorn_server = server(settings, tokens_of(settings), runs=runs)
    task = asyncio.create_task(uvicorn_server.serve())
    try:
        while not uvicorn_server.started:
            if task.done():
                task.result()
                raise AssertionError("the API stopped before it started")
            await asyncio.sleep(0.02)
        api = Api(f"http://127.0.0.1:{settings.api_port}")
        try:
            yield api
        finally:
            await api.http.aclose()
    finally:
        uvicorn_server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
