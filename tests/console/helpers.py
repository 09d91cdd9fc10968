"""What the console's tests share: agents with gates and secrets, a signed-in client."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.api_helpers import TOKENS

SECRET_VALUE = "sk-live-DO-NOT-SHOW-0123456789"


def secret_gated(name: str, approvers: list[str] | None = None) -> dict[str, Any]:
    """An agent that starts at an approval gate, with a secret and a plain context key."""
    return {
        "name": name,
        "initial_state": "review",
        "context": {
            "customer": {"type": "string", "description": "Who asks"},
            "api_key": {"type": "string", "description": "A credential", "secret": True},
        },
        "states": {
            "review": {
                "purpose": "A human checks the customer before the key is used.",
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


def csrf_of(html: str) -> str:
    """The CSRF token a console page carries (its meta tag)."""
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def signed_in(url: str, who: str) -> httpx.AsyncClient:
    """A client of the console at ``url`` with ``who``'s session cookie (signed in by the form)."""
    http = httpx.AsyncClient(base_url=url, timeout=60)
    response = await http.post(
        "/console/sign-in",
        data={"token": TOKENS[who], "next": "/console/"},
        headers={"Origin": url},
    )
    assert response.status_code == 303, response.text
    assert "fsmflow_console" in http.cookies
    return http
