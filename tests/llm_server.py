"""A scripted OpenAI-compatible chat completions server on 127.0.0.1.

Tests talk to it through the real ``openai`` client over real HTTP. Each test
scripts the replies for its own model name (the worker under test is configured
with that name), so tests sharing one server never see each other's replies.

A step is one of:
- ``{"turn": {...}}``: reply with that JSON object as the content;
- ``{"content": "..."}``: reply with raw text (e.g. invalid JSON);
- ``{"status": 500}``: answer with that HTTP status;
- ``{"finish_reason": "length", "content": "..."}``: a cut-off reply;
- ``{"drop": True}``: close the connection without answering (a transport error);
- any of those with ``"delay": seconds``: wait first (timeouts, crash tests);
- a callable taking the request body and returning a step (endless scripts).

A request with ``"stream": true`` gets the same answers as server-sent events,
as OpenAI sends them: the content in pieces of ``"chunk"`` characters (default
8), each after ``"chunk_delay"`` seconds (default 0), the finish reason in the
last chunk, a usage chunk when ``stream_options.include_usage`` asks for one,
then ``data: [DONE]``. ``"drop_after": n`` closes the connection after ``n``
pieces (a transport error mid-stream). Statuses, drops and delays happen before
the stream starts, as they would on a real endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


class ScriptedLlm:
    """The server and its scripts; ``url`` is the OpenAI base URL (``.../v1``)."""

    def __init__(self, port: int = 0) -> None:
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        self._requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._last_prompt: dict[str, str] = {}
        self._lock = threading.Lock()
        self.started = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload = server._respond(self.path, body)
                if status == 0:
                    self.close_connection = True
                    self.connection.close()
                    return
                if status == 200 and body.get("stream"):
                    self._stream(body, payload)
                    return
                payload.pop("_step", None)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test, killed worker)

            def _stream(self, body: dict[str, Any], answer: dict[str, Any]) -> None:
                step = answer.pop("_step")
                size = max(1, int(step.get("chunk", 8)))
                pause = float(step.get("chunk_delay", 0))
                drop_after = step.get("drop_after")
                choice = answer["choices"][0]
                content = choice["message"]["content"]
                base = {k: answer[k] for k in ("id", "created", "model")}
                base["object"] = "chat.completion.chunk"

                def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                    return {
                        **base,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }

                pieces = [content[i : i + size] for i in range(0, len(content), size)]
                try:
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("cache-control", "no-cache")
                    self.end_headers()
                    self._event(chunk({"role": "assistant", "content": ""}))
                    for index, piece in enumerate(pieces):
                        if drop_after is not None and index >= int(drop_after):
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.connection.close()
                            return
                        if pause:
                            time.sleep(pause)
                        self._event(chunk({"content": piece}))
                    self._event(chunk({}, choice["finish_reason"]))
                    if (body.get("stream_options") or {}).get("include_usage"):
                        self._event({**base, "choices": [], "usage": answer["usage"]})
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client gave up (timeout test, killed worker)

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                self.wfile.flush()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> ScriptedLlm:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, model: str, *steps: Step) -> None:
        """Queue replies for requests naming ``model``."""
        with self._lock:
            self._scripts[model].extend(steps)

    def requests(self, model: str) -> list[dict[str, Any]]:
        """Bodies of the requests received for ``model``, oldest first."""
        with self._lock:
            return list(self._requests[model])

    def remaining(self, model: str) -> int:
        """Steps not yet consumed for ``model``."""
        with self._lock:
            return len(self._scripts[model])

    def _respond(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not path.endswith("/chat/completions"):
            return 404, {"error": {"message": f"no route {path}"}}
        model = str(body.get("model"))
        with self._lock:
            self._requests[model].append(body)
            script = self._scripts[model]
            step = script.popleft() if script else None
        if step is None:
            # 400 is not retried: a test that runs out of script fails fast and loudly.
            return 400, {"error": {"message": f"scripted server: no reply left for {model!r}"}}
        if callable(step):
            step = step(body)
        if step.get("delay"):
            time.sleep(float(step["delay"]))
        if step.get("drop"):
            return 0, {}
        if "status" in step:
            return int(step["status"]), {"error": {"message": step.get("message", "scripted")}}
        content = json.dumps(step["turn"]) if "turn" in step else str(step.get("content", ""))
        prompt = "".join(
            f"{m.get('role')}:{m.get('content', '')}\n" for m in body.get("messages", [])
        )
        with self._lock:
            # Like a server's prefix cache: what this prompt shares with the last one.
            shared = len(os.path.commonprefix([self._last_prompt.get(model, ""), prompt]))
            self._last_prompt[model] = prompt
        usage: dict[str, Any] = {
            "prompt_tokens": len(prompt) // 4,
            "completion_tokens": max(1, len(content) // 4),
            "prompt_tokens_details": {"cached_tokens": shared // 4},
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return 200, {
            "_step": step,
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": step.get("finish_reason", "stop"),
                }
            ],
            "usage": usage,
        }


def say(target: str, message: str = "ok", **update: Any) -> dict[str, Any]:
    """A conversation turn step."""
    return {
        "turn": {
            "reasoning": "scripted",
            "context_update": update,
            "target_state": target,
            "message": message,
        }
    }


def reply(target: str, message: str = "ok", **update: Any) -> dict[str, Any]:
    """A conversation turn step without reasoning (a state with ``reasoning: none``)."""
    turn: dict[str, Any] = {"target_state": target, "message": message}
    return {"turn": {"context_update": update, **turn} if update else turn}


def move(target: str, **update: Any) -> dict[str, Any]:
    """An autonomous transition step."""
    return {
        "turn": {
            "reasoning": "scripted",
            "action": {"kind": "transition", "target_state": target, "context_update": update},
        }
    }


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    """An autonomous tool-call step."""
    return {
        "turn": {
            "reasoning": "scripted",
            "action": {"kind": "call_tool", "tool": tool, "arguments": arguments},
        }
    }
