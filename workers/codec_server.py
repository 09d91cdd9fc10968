"""``fsmflow codec-server``: Temporal's remote codec protocol for the Web UI and CLI.

With ``FSMFLOW_PAYLOAD_KEY`` set, histories hold only ciphertext; the Temporal Web
UI and the ``temporal`` CLI show payloads by sending them here. The protocol is
Temporal's (see the samples' ``codec-server/protocol.md``): ``POST .../encode``
and ``POST .../decode`` (only the last path segment counts) with a ``Payloads``
message in protobuf JSON, ``{"payloads": [...]}``, answered the same way; an
invalid body or a payload that does not decrypt is a 400. The browser calls it
from the Web UI's origin, so CORS answers that origin (and only it).

Whoever reaches this server reads every payload it is shown: serve it on
loopback, or behind something that lets only people who may read payloads in.
With ``FSMFLOW_CODEC_SERVER_TOKEN`` set, ``/encode`` and ``/decode`` want
``Authorization: Bearer <token>`` (the ``temporal`` CLI sends it with
``--codec-auth``; the Web UI can only pass a signed-in user's access token).

Standard library only (``http.server`` on threads): nothing to install.
"""

from __future__ import annotations

import hmac
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from workers.codec import EncryptionCodec, PayloadDecryptionError

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Larger requests are refused (Temporal's own limit is 2 MiB per payload by default)."""
ALLOWED_HEADERS = "authorization,content-type,x-namespace"


def origin_of(url: str) -> str:
    """The origin (scheme://host[:port]) of a URL, as a browser sends it."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an origin: {url!r} (expected e.g. http://127.0.0.1:8233)")
    return f"{parts.scheme}://{parts.netloc}"


class _BadRequest(Exception):
    """A request answered 400 with this one-line message."""


class CodecServer:
    """Serve ``codec`` over HTTP on a thread until ``stop`` (or forever, ``serve``)."""

    def __init__(
        self,
        codec: EncryptionCodec,
        *,
        host: str = "127.0.0.1",
        port: int = 8081,
        origins: tuple[str, ...] = ("http://127.0.0.1:8233",),
        token: str | None = None,
        log_requests: bool = True,
    ) -> None:
        """Listen on host:port (bound at once: a busy port raises ``OSError`` here).

        Args:
            codec: The codec whose keys encode and decode.
            host: Interface to listen on; loopback unless others may read payloads.
            port: Port (0: any free one, see ``port``).
            origins: Web UI origins that browsers may call from (CORS).
            token: If given, requests need ``Authorization: Bearer <token>``.
            log_requests: Print one line per request on stderr.
        """
        self._codec = codec
        self._origins = frozenset(origin_of(o) for o in origins)
        self._token = token
        self._log_requests = log_requests
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for ``--ui-codec-endpoint`` and ``--codec-endpoint``."""
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> CodecServer:
        """Serve on a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fsmflow-codec-server", daemon=True
        )
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve on this thread until interrupted."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _apply(self, operation: str, body: bytes) -> bytes:
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _BadRequest(
                f"the body is not a Payloads message in protobuf JSON: {first}"
            ) from None
        if operation == "encode":
            result = [self._codec.encrypt(p) for p in payloads.payloads]
        else:
            try:
                result = [self._codec.decrypt(p) for p in payloads.payloads]
            except PayloadDecryptionError as exc:
                raise _BadRequest(str(exc)) from None
        return json_format.MessageToJson(Payloads(payloads=result)).encode()

    def _authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        expected = f"Bearer {self._token}".encode()
        return hmac.compare_digest((header or "").strip().encode(), expected)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "fsmflow-codec"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                if server._log_requests:
                    super().log_message(format, *args)

            def _cors(self) -> None:
                origin = self.headers.get("Origin")
                if origin and origin in server._origins:
                    self.send_header("Access-Control-Allow-Origin", origin)
                    self.send_header("Access-Control-Allow-Credentials", "true")
                    self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                    self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
                    self.send_header("Access-Control-Max-Age", "600")
                self.send_header("Vary", "Origin")

            def _answer(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self._cors()
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: HTTPStatus, message: str) -> None:
                self._answer(status, (message + "\n").encode(), "text/plain; charset=utf-8")

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
                # A preflight carries no credentials: it is answered without the token.
                self.send_response(HTTPStatus.NO_CONTENT)
                self._cors()
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                operation = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
                if operation not in ("encode", "decode"):
                    self._error(HTTPStatus.NOT_FOUND, "POST .../encode or .../decode")
                    return
                if not server._authorized(self.headers.get("Authorization")):
                    self._error(HTTPStatus.UNAUTHORIZED, "a bearer token is required")
                    return
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
                    return
                if length < 0 or length > MAX_BODY_BYTES:
                    self._error(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the body is limited to {MAX_BODY_BYTES} bytes",
                    )
                    return
                body = self.rfile.read(length)
                try:
                    answer = server._apply(operation, body)
                except _BadRequest as exc:
                    self._error(HTTPStatus.BAD_REQUEST, str(exc))
                    return
                except Exception as exc:  # noqa: BLE001 - one line, never a traceback with data
                    self.log_error("%s failed: %s", operation, type(exc).__name__)
                    self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{operation} failed")
                    return
                self._answer(HTTPStatus.OK, answer, "application/json")

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST .../encode or .../decode")

        return Handler


def describe(server: CodecServer, codec: EncryptionCodec, origins: tuple[str, ...]) -> str:
    """What ``fsmflow codec-server`` prints when it is ready: where, which keys, how to use it."""
    keys = ", ".join(
        f"{key_id} (encrypts)" if key_id == codec.key_id else key_id for key_id in codec.key_ids
    )
    if codec.key_id is None:
        keys += " (none encrypts: /encode returns payloads as they are)"
    return (
        f"codec server on {server.url} (POST /encode, /decode); keys {keys}; "
        f"Web UI origins {', '.join(origins)}\n"
        f"  dev server Web UI: temporal server start-dev --ui-codec-endpoint {server.url}\n"
        f"  other Web UIs: Data Encoder settings, Remote Codec Endpoint {server.url}\n"
        f"  Temporal CLI: temporal workflow show -w ID --codec-endpoint {server.url}\n"
    )
