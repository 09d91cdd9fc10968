"""Payload encryption on a real dev server: with ``FSMFLOW_PAYLOAD_KEY`` the history
holds no secret, user message or model reply in clear; fsmflow's own clients read
everything; runs written before the key was set carry on."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHistory,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from schemas.workflow import AgentResult
from tests.conftest import (
    EXAMPLES,
    RESEARCH_TOOLS,
    ROOT,
    free_port,
    make_settings,
    running_worker,
)
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import decide, send, start
from workers import commands
from workers.binaries import temporal_cli
from workers.client import connect
from workers.codec import EncryptionCodec
from workers.codec_server import CodecServer
from workers.settings import Settings


def spec_of(key_id: str) -> str:
    """A new key as ``FSMFLOW_PAYLOAD_KEY`` takes it."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


KEY = spec_of("k1")

VAULT: dict[str, Any] = {
    "name": "vault",
    "initial_state": "greet",
    "context": {
        "name": {"type": "string", "maxLength": 40},
        "passphrase": {"type": "string", "secret": True, "pattern": "^sesame-[0-9a-f]{12}$"},
    },
    "states": {
        "greet": {
            "collects": ["name", "passphrase"],
            "transitions": [{"target": "review", "requires": ["name", "passphrase"]}],
        },
        "review": {"approval": {"on_approve": "done", "on_reject": "greet"}},
        "done": {"terminal": True},
    },
}


@dataclass
class Words:
    """Text that must never be readable in an encrypted history, unique per test."""

    passphrase: str
    name: str
    first_message: str
    message: str
    first_reply: str
    reply: str

    @classmethod
    def new(cls) -> Words:
        tag = uuid.uuid4().hex
        name = f"Zephyrine{tag[:8]}"
        passphrase = f"sesame-{tag[8:20]}"
        return cls(
            passphrase=passphrase,
            name=name,
            first_message=f"hello there, {tag[20:]}-first",
            message=f"I am {name} and my passphrase is {passphrase}",
            first_reply=f"Hi! Your name and passphrase, please ({tag[20:]}-ask)",
            reply=f"Welcome aboard, {name} ({tag[20:]}-reply)",
        )

    def all(self) -> list[str]:
        return [
            self.passphrase,
            self.name,
            self.first_message,
            self.message,
            self.first_reply,
            self.reply,
        ]


def target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def script(llm: ScriptedLlm, model: str, words: Words) -> None:
    llm.script(
        model,
        say("greet", words.first_reply),
        say("review", words.reply, name=words.name, passphrase=words.passphrase),
    )


def in_clear(history: WorkflowHistory, words: Words) -> list[str]:
    """The words readable in the history: in its JSON form, or in its raw protobuf
    bytes (where a payload's data is as written, not base64)."""
    text = history.to_json()
    raw = b"".join(event.SerializeToString() for event in history.events)
    return [w for w in words.all() if w in text or w.encode() in raw]


def key_settings(settings: Settings, env: WorkflowEnvironment) -> Settings:
    return settings.model_copy(
        update={"temporal_address": target(env), "payload_key": SecretStr(KEY)}
    )


@asynccontextmanager
async def converse(client: Client, settings: Settings, words: Words) -> AsyncIterator[str]:
    """A whole conversation; yields the workflow id while the worker still runs."""
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=VAULT)
        first = await send(handle, words.first_message)
        reply = await send(handle, words.message)
        await decide(handle, "approve", by="alice")
        result = await handle.result()
        assert (first.message, reply.message) == (words.first_reply, words.reply)
        assert reply.state == "review" and result.status == "completed"
        assert result.context["name"] == words.name
        yield handle.id


async def test_encrypted_history_holds_no_secret_message_or_reply(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    settings = key_settings(make_settings(llm, model_name, task_queue), temporal_env)
    client = await connect(settings)  # the worker's, the CLI's and Python callers' client
    words = Words.new()
    script(llm, model_name, words)
    async with converse(client, settings, words) as workflow_id:
        # With the key, everything reads as usual: the result and queries.
        handle = client.get_workflow_handle(workflow_id, result_type=AgentResult)
        assert (await handle.result()).context["name"] == words.name
        assert (await handle.query("context"))["passphrase"] == "[redacted]"

    plain = temporal_env.client  # the pydantic converter, no codec
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    assert in_clear(history, words) == []
    assert b"binary/encrypted" in b"".join(e.SerializeToString() for e in history.events)
    # Without the key the payloads cannot be read.
    with pytest.raises(KeyError, match="Unknown payload encoding binary/encrypted"):
        await plain.get_workflow_handle(workflow_id).result()
    # The CLI's trace replays the encrypted history with no worker running.
    out = io.StringIO()
    assert await commands.trace(settings, workflow_id, out) == 0
    assert "greet -> review  ok" in out.getvalue()


async def test_without_a_key_the_same_words_are_in_clear(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    # The check above would pass on any history if it looked in the wrong place.
    settings = make_settings(llm, model_name, task_queue)
    words = Words.new()
    script(llm, model_name, words)
    async with converse(temporal_env.client, settings, words) as workflow_id:
        pass
    history = await temporal_env.client.get_workflow_handle(workflow_id).fetch_history()
    assert set(in_clear(history, words)) == set(words.all())


async def test_a_run_started_without_the_key_carries_on_with_it(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    plain_settings = make_settings(llm, model_name, task_queue)
    words = Words.new()
    script(llm, model_name, words)
    async with running_worker(temporal_env.client, plain_settings):
        before = await start(temporal_env.client, plain_settings, definition=VAULT)
        first = await send(before, words.first_message)
    assert first.message == words.first_reply
    # The key is turned on: a new worker replays the clear part of the history and
    # writes the rest encrypted.
    settings = key_settings(plain_settings, temporal_env)
    client = await connect(settings)
    async with running_worker(client, settings):
        handle = client.get_workflow_handle(before.id, result_type=AgentResult)
        reply = await send(handle, words.message)
        await decide(handle, "approve", by="alice")
        result = await handle.result()
    assert reply.message == words.reply and result.status == "completed"
    history = await client.get_workflow_handle(before.id).fetch_history()
    assert set(in_clear(history, words)) == {words.first_message, words.first_reply}


async def test_failure_messages_are_encrypted_and_read_back(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    # The failure's message quotes what the caller sent (here a key name; a secret
    # key's value is never quoted): with a key, messages and stack traces are
    # encrypted like payloads.
    settings = key_settings(make_settings(llm, model_name, task_queue), temporal_env)
    client = await connect(settings)
    wrong = f"typo_{uuid.uuid4().hex}"
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=VAULT, context={wrong: 1})
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "ContextRefused"
    message = failed.value.cause.message
    assert message.startswith("initial context refused: ") and wrong in message
    history = await temporal_env.client.get_workflow_handle(handle.id).fetch_history()
    text = history.to_json()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert wrong not in text and wrong.encode() not in raw
    assert "initial context refused" not in text
    closed = history.events[-1].workflow_execution_failed_event_attributes.failure
    assert closed.message == "Encoded failure"


async def test_fsmflow_worker_and_cli_share_the_key(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, tmp_path: Path
) -> None:
    # As users run them: `fsmflow worker`, `fsmflow run` and `fsmflow send` in
    # their own processes, all with the key (and an old one) in the environment.
    new, old = spec_of("k2"), spec_of("k1")
    environment = {
        **os.environ,
        "TEMPORAL_ADDRESS": target(temporal_env),
        "FSMFLOW_TASK_QUEUE": f"tq-{model_name}",
        "FSMFLOW_AGENTS_DIR": str(EXAMPLES),
        "FSMFLOW_PAYLOAD_KEY": new,
        "FSMFLOW_PAYLOAD_DECRYPT_KEYS": old,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "worker",
        cwd=ROOT,
        env={
            **environment,
            "FSMFLOW_TOOL_MODULES": str(RESEARCH_TOOLS),
            "FSMFLOW_TOOL_LEDGER": str(tmp_path / "ledger.sqlite3"),
            "FSMFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "OPENAI_BASE_URL": llm.url,
            "FSMFLOW_MODEL_DEFAULT": model_name,
            "FSMFLOW_HEALTH_PORT": "0",
            "FSMFLOW_GRACEFUL_SHUTDOWN": "1",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stderr is not None
    logged: list[str] = []
    try:
        while not logged or "worker_polling" not in logged[-1]:
            line = (await asyncio.wait_for(worker.stderr.readline(), 30)).decode()
            assert line, "".join(logged)
            logged.append(line)
        words = Words.new()
        llm.script(model_name, say("ask_email", words.reply, name=words.name))
        workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
        for args in (
            ["run", "contact_form", "--id", workflow_id],
            ["send", workflow_id, words.message],
        ):
            cli = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers",
                *args,
                cwd=ROOT,
                env=environment,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await cli.communicate()
            assert cli.returncode == 0, err.decode()
        # The reply streamed (publish signals and polls are encrypted too), then
        # where it left the run.
        assert out.decode().splitlines() == [f"< {words.reply}", "[ask_email · active · step 1]"]
        history = await temporal_env.client.get_workflow_handle(workflow_id).fetch_history()
        assert in_clear(history, words) == []
        await temporal_env.client.get_workflow_handle(workflow_id).terminate("test over")
    finally:
        worker.send_signal(signal.SIGTERM)
        logged.append((await worker.stderr.read()).decode())
        await worker.wait()
    log = "".join(logged)
    assert worker.returncode == 0, log
    assert '"payload_key": "set (id k2)"' in log and '"payload_decrypt_keys": "set (id k1)"' in log
    assert new.partition(":")[2] not in log and old.partition(":")[2] not in log


async def test_the_temporal_cli_reads_the_history_through_the_codec_server(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    settings = key_settings(make_settings(llm, model_name, task_queue), temporal_env)
    words = Words.new()
    script(llm, model_name, words)
    client = await connect(settings)
    async with converse(client, settings, words) as workflow_id:
        pass
    server = CodecServer(
        EncryptionCodec(settings.payload_keys()), port=free_port(), log_requests=False
    ).start()

    async def temporal(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(temporal_cli()),
            *args,
            "--address",
            target(temporal_env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode()

    show = ("workflow", "show", "-w", workflow_id, "--output", "json")
    started = f"cli-{uuid.uuid4().hex[:8]}"
    try:
        shown = await temporal(*show, "--codec-endpoint", server.url)
        hidden = await temporal(*show)
        # A run started from the Temporal CLI with the codec: its input is encrypted.
        await temporal(
            *("workflow", "start", "--type", "AgentWorkflow", "--workflow-id", started),
            *("--task-queue", f"nobody-{task_queue}", "--input", json.dumps(words.message)),
            *("--codec-endpoint", server.url),
        )
    finally:
        server.stop()
    first = (await temporal_env.client.get_workflow_handle(started).fetch_history()).events[0]
    [given] = first.workflow_execution_started_event_attributes.input.payloads
    assert given.metadata["encoding"] == b"binary/encrypted"
    assert await client.data_converter.decode([given]) == [words.message]
    await temporal_env.client.get_workflow_handle(started).terminate("test over")
    # `--output json` is the history in protobuf JSON: payload data is base64.
    decoded, encrypted = payload_data(shown), payload_data(hidden)
    assert words.message.encode() in decoded and words.reply.encode() in decoded
    assert words.message.encode() not in encrypted and words.reply.encode() not in encrypted


def payload_data(history_json: str) -> bytes:
    """The data of every payload in a history in protobuf JSON, joined."""
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict) and "data" in node:
                found.append(base64.b64decode(node["data"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return b"\n".join(found)


async def test_a_worker_without_the_key_leaves_the_run_to_one_with_it(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    plain_settings = make_settings(llm, model_name, task_queue)
    settings = key_settings(plain_settings, temporal_env)
    client = await connect(settings)
    words = Words.new()
    script(llm, model_name, words)
    async with running_worker(temporal_env.client, plain_settings):
        handle = await start(client, settings, definition=VAULT)
        failure = None
        for _ in range(100):
            history = await handle.fetch_history()
            failed = [
                e for e in history.events if e.HasField("workflow_task_failed_event_attributes")
            ]
            if failed:
                failure = failed[0].workflow_task_failed_event_attributes.failure
                break
            await asyncio.sleep(0.1)
    assert (
        failure is not None and "Unknown payload encoding binary/encrypted" in failure.cause.message
    )
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    async with running_worker(client, settings):
        reply = await send(handle, words.first_message)
        await handle.terminate("test over")
    assert reply.message == words.first_reply
