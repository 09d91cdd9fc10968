"""OpenTelemetry: Temporal's plugin traces the run; the LLM activity adds its span."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import send, start
from workers.client import connect
from workers.telemetry import configure_tracing, tracing_enabled


def test_tracing_follows_the_otlp_endpoint_variables() -> None:
    assert not tracing_enabled({})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_enabled(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}
    )


async def test_a_turn_is_traced(
    temporal_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str
) -> None:
    exporter = InMemorySpanExporter()
    plugins = configure_tracing(processor=SimpleSpanProcessor(exporter))
    settings = make_settings(
        llm,
        model_name,
        "tq-" + model_name,
        temporal_address=temporal_env.client.service_client.config.target_host,
    )
    client = await connect(settings, plugins=plugins)
    llm.script(model_name, say("ask_email", "Hi Ada", name="Ada"))
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        await send(handle, "I'm Ada")
        await handle.terminate("test over")
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    llm_span = by_name["llm.turn"]
    assert llm_span.attributes is not None
    assert llm_span.attributes["gen_ai.request.model"] == model_name
    assert llm_span.attributes["fsmflow.where"] == "contact_form/ask_name"
    assert llm_span.attributes["gen_ai.usage.output_tokens"] > 0
    activity = by_name["RunActivity:fsmflow.llm_turn"]
    assert llm_span.parent is not None and llm_span.parent.span_id == activity.context.span_id
    assert llm_span.context.trace_id == activity.context.trace_id
    assert any(name.startswith("StartWorkflow:AgentWorkflow") for name in by_name)
