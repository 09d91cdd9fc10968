"""OpenTelemetry: Temporal's plugin traces the run; the LLM activity adds its span."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import research_to_the_gate, send, start, wait_for_status
from workers.client import connect
from workers.settings import Settings
from workers.telemetry import configure_tracing, tracing_enabled


def test_tracing_follows_the_otlp_endpoint_variables() -> None:
    assert not tracing_enabled({})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_enabled(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}
    )


@pytest.fixture(scope="module")
def traced() -> tuple[InMemorySpanExporter, list[Any]]:
    """Tracing configured once: OpenTelemetry's global tracer provider is set only once."""
    exporter = InMemorySpanExporter()
    return exporter, configure_tracing(processor=SimpleSpanProcessor(exporter))


async def traced_client(
    env: WorkflowEnvironment,
    llm: ScriptedLlm,
    model_name: str,
    traced: tuple[InMemorySpanExporter, list[Any]],
) -> tuple[Settings, Client]:
    """A worker's settings and a client with the tracing plugin; no spans recorded yet."""
    exporter, plugins = traced
    exporter.clear()
    target = env.client.service_client.config.target_host
    settings = make_settings(llm, model_name, "tq-" + model_name, temporal_address=target)
    return settings, await connect(settings, plugins=plugins)


async def test_a_turn_is_traced(
    temporal_env: WorkflowEnvironment,
    llm: ScriptedLlm,
    model_name: str,
    traced: tuple[InMemorySpanExporter, list[Any]],
) -> None:
    exporter, _ = traced
    settings, client = await traced_client(temporal_env, llm, model_name, traced)
    llm.script(model_name, say("ask_email", "Hi Ada", name="Ada"))
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        await send(handle, "I'm Ada")
        await handle.terminate("test over")
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    # The OpenTelemetry GenAI conventions, plus where the run is.
    llm_span = by_name[f"chat {model_name}"]
    attributes = llm_span.attributes
    assert attributes is not None
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == model_name
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.request.stream"] is True
    assert float(attributes["gen_ai.response.time_to_first_chunk"]) >= 0
    assert attributes["server.address"] == "127.0.0.1"
    assert (attributes["fsmflow.agent"], attributes["fsmflow.state"]) == (
        "contact_form",
        "ask_name",
    )
    assert attributes["fsmflow.reask"] == 0 and attributes["fsmflow.valid"] is True
    assert attributes["fsmflow.target_state"] == "ask_email"
    activity = by_name["RunActivity:fsmflow.llm_turn"]
    assert llm_span.parent is not None and llm_span.parent.span_id == activity.context.span_id
    assert llm_span.context.trace_id == activity.context.trace_id
    assert any(name.startswith("StartWorkflow:AgentWorkflow") for name in by_name)


async def test_a_tool_execution_is_traced_by_the_genai_conventions(
    temporal_env: WorkflowEnvironment,
    llm: ScriptedLlm,
    model_name: str,
    traced: tuple[InMemorySpanExporter, list[Any]],
) -> None:
    exporter, _ = traced
    settings, client = await traced_client(temporal_env, llm, model_name, traced)
    llm.script(model_name, *research_to_the_gate())
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="research", task="Durable execution")
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        await handle.terminate("test over")
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool ")]
    assert [s.name for s in spans] == [
        "execute_tool search_corpus",
        "execute_tool write_draft",
        "execute_tool review_draft",
    ]
    search = spans[0].attributes
    assert search is not None
    assert search["gen_ai.operation.name"] == "execute_tool"
    assert search["gen_ai.tool.name"] == "search_corpus"
    assert (search["fsmflow.agent"], search["fsmflow.state"]) == ("research", "research")
    assert str(search["gen_ai.tool.call.id"]).startswith(f"{handle.id}/")
