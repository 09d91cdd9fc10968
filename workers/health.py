"""The worker's probe and metrics endpoint: ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` answers while the process runs; ``/readyz`` only while the worker is
connected to Temporal and polling (not while starting or draining), so a
Kubernetes readiness probe takes a draining pod out of rotation; its JSON body
says which stores the worker uses and what that means for several replicas. ``/metrics``
serves the Temporal runtime's Prometheus text: the SDK's own metrics and
fsmflow's (turns, re-asks, rejections by reason, tokens by state and model),
which the workflow and activities record through Temporal's metric meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger("fsmflow.health")

MAX_LINE = 8192
"""Longest request line, and longest header line, in bytes (as common servers)."""
MAX_HEAD = 32768
"""Longest request head (request line and headers), in bytes."""
LINGER_BYTES = 1 << 20
"""How much of what a client still sends is read (and dropped) after its answer."""
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


@dataclass
class Readiness:
    """Whether the worker is polling (set by the worker's lifecycle), and what it uses."""

    ready: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    """Shown by ``/readyz`` (the task queue, the stores and what they mean); no secrets."""


class _Refused(Exception):
    """A request answered with a 4xx before routing; the message is the log's reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


async def _line(reader: asyncio.StreamReader, *, too_long: _Refused) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # the line outgrew the reader's limit (MAX_LINE)
        raise too_long from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """The method and path of a request (None if the client sent nothing at all).

    Raises:
        _Refused: For anything but a small, well-formed HTTP/1.x GET or HEAD head.
    """
    request = await _line(
        reader, too_long=_Refused("414 URI Too Long", f"request line over {MAX_LINE} bytes")
    )
    if not request:
        return None  # a TCP probe: connected and closed
    parts = request.rstrip(b"\r\n").split(b" ")
    if (
        not request.endswith(b"\n")
        or len(parts) != 3
        or not parts[2].startswith(b"HTTP/1.")
        or not request.isascii()
    ):
        raise _Refused("400 Bad Request", "malformed request line")
    method, target = parts[0].decode(), parts[1].decode()
    size = len(request)
    while True:
        header = await _line(
            reader,
            too_long=_Refused(
                "431 Request Header Fields Too Large", f"header line over {MAX_LINE} bytes"
            ),
        )
        size += len(header)
        if size > MAX_HEAD:
            raise _Refused("431 Request Header Fields Too Large", f"head over {MAX_HEAD} bytes")
        if header in (b"\r\n", b"\n"):
            break
        if not header.endswith(b"\n"):
            raise _Refused("400 Bad Request", "incomplete request head")
        if b":" not in header:
            raise _Refused("400 Bad Request", "malformed header line")
    if method not in ("GET", "HEAD"):
        raise _Refused("405 Method Not Allowed", f"method {method[:20]!r}")
    return method, urlsplit(target).path or "/"


class HealthServer:
    """A minimal HTTP/1.1 server on asyncio for probes and scraping.

    Only small GET and HEAD requests are served. Anything else is answered with a
    4xx (400 malformed, 405 method, 408 too slow, 414 and 431 too large) and one
    warning log line, never a traceback; a connection that sends nothing (a TCP
    probe) is closed silently.
    """

    def __init__(
        self,
        readiness: Readiness,
        *,
        host: str,
        port: int,
        metrics_url: str | None,
        request_timeout: float = 10.0,
    ) -> None:
        """Serve ``readiness`` on host:port; proxy ``/metrics`` from ``metrics_url``.

        Args:
            readiness: What ``/readyz`` reports.
            host: The address to listen on.
            port: The port (0: any free one, see ``port``).
            metrics_url: Where the Prometheus text is fetched (None: no ``/metrics``).
            request_timeout: How long a client has to send its request head.
        """
        self._readiness = readiness
        self._host = host
        self._port = port
        self._metrics_url = metrics_url
        self._request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=MAX_LINE
        )

    async def stop(self) -> None:
        """Stop listening; requests in progress are dropped."""
        if self._server is not None:
            self._server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away, or lingered too long after its answer
        except asyncio.CancelledError:
            # Stopped (only stop() cancels a handler): end quietly. Python 3.11 logs a
            # traceback for a connection handler that ends cancelled.
            pass
        except Exception as exc:  # noqa: BLE001 - a probe endpoint never dies of a request
            log.warning("health_request_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head: tuple[str, str] | _Refused | None
        try:
            async with asyncio.timeout(self._request_timeout):
                head = await _read_head(reader)
        except TimeoutError:
            head = _Refused("408 Request Timeout", "request head too slow")
        except _Refused as exc:
            head = exc
        if head is None:
            return
        if isinstance(head, _Refused):
            peer = writer.get_extra_info("peername")
            log.warning("health_bad_request", status=head.status, reason=str(head), peer=peer)
            method = "GET"
            status, body, kind = head.status, f"{head.status[4:].lower()}\n".encode(), _TEXT
        else:
            method, path = head
            status, body, kind = await self._route(path)
        response = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer.write(response + (body if method != "HEAD" else b""))
        await writer.drain()
        # Closing with unread input would reset the connection, and the client could
        # lose the answer: say we are done, then drop what it still sends (bounded).
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1):
            dropped = 0
            while dropped < LINGER_BYTES and (chunk := await reader.read(65536)):
                dropped += len(chunk)

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        text = _TEXT
        if path == "/healthz":
            return "200 OK", b"ok\n", text
        if path == "/readyz":
            ready = self._readiness.ready
            body = {"status": "ready" if ready else "not polling", **self._readiness.details}
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, json.dumps(body, indent=2).encode() + b"\n", _JSON
        if path == "/metrics":
            if self._metrics_url is None:
                return "404 Not Found", b"metrics disabled\n", text
            try:
                body = await asyncio.get_running_loop().run_in_executor(
                    None, _fetch, self._metrics_url
                )
            except Exception as exc:  # noqa: BLE001 - URLError, IncompleteRead, ...
                return "503 Service Unavailable", f"metrics unavailable: {exc}\n".encode(), text
            return "200 OK", body, "text/plain; version=0.0.4; charset=utf-8"
        return "404 Not Found", b"not found\n", text
