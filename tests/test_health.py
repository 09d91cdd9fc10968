"""The probe endpoint against hostile clients: raw sockets on a real HealthServer."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from workers.health import HealthServer, Readiness


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    health = HealthServer(
        Readiness(ready=True),
        host="127.0.0.1",
        port=0,
        metrics_url=None,
        request_timeout=0.5,
    )
    await health.start()
    try:
        yield health
    finally:
        await health.stop()


def exchange(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    """Send ``data``, then read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


async def ask(server: HealthServer, data: bytes, *, half_close: bool = True) -> bytes:
    return await asyncio.to_thread(exchange, server.port, data, half_close=half_close)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + (b"X-Many: " + b"a" * 1000 + b"\r\n") * 40, 431),
        (b"\xff\xfe\x00\x01garbage\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS client hello
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 400),  # ends before the blank line
        (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (b"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405),
    ],
)
async def test_a_bad_request_gets_a_4xx_and_one_warning(
    server: HealthServer, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    with capture_logs() as logs:
        answer = await ask(server, request_bytes)
    assert status_of(answer) == status, answer
    assert b"Connection: close" in answer and b"Traceback" not in answer
    (warning,) = logs
    assert warning["event"] == "health_bad_request" and warning["log_level"] == "warning"
    assert warning["status"].startswith(str(status))
    assert not [r for r in caplog.records if r.exc_info or r.name == "asyncio"]
    # The server goes on serving.
    assert (await ask(server, b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\nok\n")


async def test_a_large_request_still_being_sent_gets_its_answer(server: HealthServer) -> None:
    # The client does not wait to finish sending: the server answers, then drains
    # what is still coming, so closing does not reset the connection under the answer.
    answer = await ask(server, b"GET /" + b"a" * 500_000 + b" HTTP/1.1\r\n\r\n", half_close=False)
    assert status_of(answer) == 414


async def test_a_slow_or_silent_client(
    server: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as logs:
        # Half a request, and then nothing (the connection stays open): 408.
        slow = await ask(server, b"GET /healthz HTTP/1.1\r\n", half_close=False)
        # A TCP probe connects and closes: nothing to answer, nothing to log.
        silent = await ask(server, b"")
    assert status_of(slow) == 408 and silent == b""
    assert [entry["status"] for entry in logs] == ["408 Request Timeout"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("request_bytes", "status", "body"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200 OK", b"ok\n"),
        # bare LF, a query
        (b"GET /readyz?probe=1 HTTP/1.0\n\n", b"200 OK", b'{\n  "status": "ready"\n}\n'),
        (b"GET http://x/healthz HTTP/1.1\r\n\r\n", b"200 OK", b"ok\n"),  # absolute form
        (b"HEAD /healthz HTTP/1.1\r\n\r\n", b"200 OK", b""),
        (b"GET /metrics HTTP/1.1\r\n\r\n", b"404 Not Found", b"metrics disabled\n"),
    ],
)
async def test_good_requests(
    server: HealthServer, request_bytes: bytes, status: bytes, body: bytes
) -> None:
    with capture_logs() as logs:
        answer = await ask(server, request_bytes)
    assert not logs
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n")
    assert answer.split(b"\r\n\r\n", 1)[1] == body
