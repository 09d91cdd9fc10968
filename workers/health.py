"""The worker's probe and metrics endpoint: ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` answers while the process runs; ``/readyz`` only while the worker is
connected to Temporal and polling (not while starting or draining), so a
Kubernetes readiness probe takes a draining pod out of rotation. ``/metrics``
serves the Temporal runtime's Prometheus text: the SDK's own metrics and
fsmflow's (turns, re-asks, rejections by reason, tokens by state and model),
which the workflow and activities record through Temporal's metric meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from dataclasses import dataclass


@dataclass
class Readiness:
    """Whether the worker is polling; set by the worker's lifecycle."""

    ready: bool = False


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


class HealthServer:
    """A minimal HTTP/1.1 server on asyncio for probes and scraping."""

    def __init__(
        self, readiness: Readiness, *, host: str, port: int, metrics_url: str | None
    ) -> None:
        """Serve ``readiness`` on host:port; proxy ``/metrics`` from ``metrics_url``."""
        self._readiness = readiness
        self._host = host
        self._port = port
        self._metrics_url = metrics_url
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b""):
                pass
            parts = request.decode(errors="replace").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, body, kind = await self._route(path)
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            return "200 OK", b"ok\n", text
        if path == "/readyz":
            if self._readiness.ready:
                return "200 OK", b"ready\n", text
            return "503 Service Unavailable", b"not polling\n", text
        if path == "/metrics":
            if self._metrics_url is None:
                return "404 Not Found", b"metrics disabled\n", text
            try:
                body = await asyncio.get_running_loop().run_in_executor(
                    None, _fetch, self._metrics_url
                )
            except OSError as exc:
                return "503 Service Unavailable", f"metrics unavailable: {exc}\n".encode(), text
            return "200 OK", body, "text/plain; version=0.0.4; charset=utf-8"
        return "404 Not Found", b"not found\n", text
