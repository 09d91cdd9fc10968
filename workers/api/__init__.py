"""``fsmflow api``: the HTTP API for applications (docs/api.md).

A stateless Temporal client: start runs, send messages (streamed as server-sent
events), approve or reject as an authenticated identity, list and follow runs.
"""

from __future__ import annotations

import uvicorn

from workers.api.app import create_app
from workers.api.auth import Identity, TokenError, Tokens
from workers.api.runs import Runs
from workers.settings import Settings

__all__ = ["Identity", "Runs", "TokenError", "Tokens", "create_app", "server", "tokens_of"]

SHUTDOWN_GRACE = 10
"""Seconds a stopping API lets open requests (and event streams) finish."""


def tokens_of(settings: Settings) -> Tokens:
    """The tokens the settings name.

    Raises:
        TokenError: If there is none, or one is malformed (the message says where).
    """
    return Tokens(
        inline=settings.api_tokens.get_secret_value() if settings.api_tokens else None,
        path=settings.api_tokens_file,
    )


def server(settings: Settings, tokens: Tokens, *, runs: Runs | None = None) -> uvicorn.Server:
    """A uvicorn server for the API on ``FSMFLOW_API_HOST``:``FSMFLOW_API_PORT``.

    Logging is left to ``workers.logging`` (structlog); uvicorn's own access log
    is off: ``AccessLog`` writes one line per request, without headers.
    """
    config = uvicorn.Config(
        create_app(settings, tokens=tokens, runs=runs),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    return uvicorn.Server(config)
