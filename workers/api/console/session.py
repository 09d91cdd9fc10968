"""Signing in to the console: the API's own token, kept in a cookie, and CSRF checks.

A browser cannot attach ``Authorization: Bearer`` to a page it navigates to, so
the person pastes their token once (the sign-in page) and it is kept in an
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
sends it) cookie, ``Secure`` when the console is served over https. Every request
presents it to the same table and rate buckets as ``/v1`` (``auth.authenticate``):
there is no second kind of session, and removing a token from the table signs
its holder out at the next request.

State-changing requests (forms, the chat's ``fetch``) must also carry a CSRF
token (a form field or the ``X-CSRF-Token`` header) and must not come from
another origin (``Origin`` / ``Sec-Fetch-Site``). The CSRF token is an HMAC of
the session's token, so it needs no server-side store and any replica of the
API accepts it; a page of another site can neither read it nor compute it.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from workers.api.auth import Identity, authenticate
from workers.api.errors import ApiError

COOKIE = "fsmflow_console"
"""The cookie that holds the signed-in person's API token."""
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_MAX_AGE = 12 * 3600
"""Seconds a sign-in lasts in the browser (the token itself stays valid)."""
_CSRF_LABEL = b"fsmflow console csrf v1"


class SignInRequired(Exception):
    """No valid token in the request's cookie: the console answers with its sign-in page."""

    def __init__(self, message: str) -> None:
        """Why (no cookie, or a token the table no longer knows)."""
        super().__init__(message)
        self.message = message


def csrf_token(token: str) -> str:
    """The CSRF token of a session (an HMAC of its API token)."""
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()[:40]


def session_token(request: Request) -> str | None:
    """The API token the request's cookie holds, if any."""
    value = request.cookies.get(COOKIE)
    return value or None


def signed_in(request: Request) -> Identity:
    """The identity of the request's cookie (one request from its rate bucket).

    Raises:
        SignInRequired: Without a cookie, or with a token that is not valid.
        ApiError: 429 over the identity's rate.
    """
    token = session_token(request)
    if token is None:
        raise SignInRequired("Sign in with your API token to use the console.")
    try:
        return authenticate(request, token)
    except ApiError as exc:
        if exc.status == 401:
            raise SignInRequired("That token is no longer valid: sign in again.") from None
        raise


def same_origin(request: Request) -> bool:
    """Whether the request may come from this console's own pages.

    ``Sec-Fetch-Site`` (sent by every current browser) must not say
    ``cross-site``/``same-site``; an ``Origin`` header, when present, must be
    this server's (scheme, host and port).
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    expected = urlsplit(str(request.base_url))
    found = urlsplit(origin)
    return (found.scheme, found.netloc) == (expected.scheme, expected.netloc)


def check_csrf(request: Request, presented: str | None) -> None:
    """Refuse (403) a state-changing request from another origin or without the CSRF token.

    Raises:
        ApiError: 403, saying which check failed.
    """
    if not same_origin(request):
        raise ApiError(403, "refused: the request came from another site", code="csrf")
    token = session_token(request)
    if token is None or not presented or not hmac.compare_digest(presented, csrf_token(token)):
        raise ApiError(
            403,
            "refused: the form is stale or was not sent by the console (reload the page)",
            code="csrf",
        )


def set_session(request: Request, response: Response, token: str) -> None:
    """Keep ``token`` in the session cookie (``Secure`` over https)."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session(request: Request, response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(
        COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
