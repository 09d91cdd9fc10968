"""Credentials in endpoint URLs never reach a log line or the terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from structlog.testing import capture_logs
from temporalio.client import Client

from tests.conftest import free_port, make_settings
from tests.llm_server import ScriptedLlm
from workers.commands import ui_link
from workers.settings import Settings
from workers.telemetry import RedactEndpoints
from workers.worker import run_worker

CREDENTIALS = {
    "FSMFLOW_MODEL_CAPABLE": "gpt-big",
    "FSMFLOW_BASE_URL_CAPABLE": "https://tier:secret-1@capable.example/v1?api-key=secret-2",
    "FSMFLOW_API_KEY_CAPABLE": "sk-secret-3",
    "FSMFLOW_FALLBACK_MODEL_CAPABLE": "gpt-small",
    "FSMFLOW_FALLBACK_BASE_URL_CAPABLE": "https://fb:secret-4@fallback.example/v1?k=secret-5",
    "FSMFLOW_FALLBACK_MODEL": "gpt-any",
    "FSMFLOW_FALLBACK_BASE_URL": "https://any:secret-6@any.example/v1?key=secret-7",
}
OPENAI_BASE_URL = "https://user:secret@host.example/v1?key=s"


def test_the_settings_summary_has_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", OPENAI_BASE_URL)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-8")
    settings = Settings.load(environ=CREDENTIALS)
    assert settings.openai_base_url == OPENAI_BASE_URL  # read from the environment
    summary = json.dumps(settings.safe_summary())
    assert "secret" not in summary and "key=s" not in summary
    assert '"openai_base_url": "https://***@host.example/v1"' in summary


def test_ui_links_have_no_credentials() -> None:
    settings = Settings.load(environ={}, ui_url="https://ui:secret@ui.example/?token=secret")
    assert ui_link(settings, "run-1") == (
        "https://***@ui.example/namespaces/default/workflows/run-1"
    )


def test_otlp_exporter_lines_lose_the_endpoint_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens there: the exporter logs its retries and its failure.
    endpoint = f"http://otel:secret-9@127.0.0.1:{free_port()}/v1/traces?api-key=secret-10"
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=3)  # time for one retry
    # Where configure_tracing puts the filter.
    logger = logging.getLogger(OTLPSpanExporter.__module__)
    scrub = RedactEndpoints({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint})
    logger.addFilter(scrub)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            with provider.get_tracer("test").start_as_current_span("a span"):
                pass
            logger.error("Failed to export to %s", endpoint)
    finally:
        provider.shutdown()
        logger.removeFilter(scrub)
    assert "Max retries exceeded with url: /v1/traces " in caplog.text
    assert "Failed to export to http://***@127.0.0.1:" in caplog.text
    assert "secret" not in caplog.text


async def test_the_worker_start_line_has_no_credentials(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        llm,
        model_name,
        task_queue,
        openai_base_url=OPENAI_BASE_URL,
        models={"default": model_name, "capable": "gpt-big"},
        base_urls={"capable": CREDENTIALS["FSMFLOW_BASE_URL_CAPABLE"]},
        fallback_models={"capable": "gpt-small"},
        fallback_base_urls={"capable": CREDENTIALS["FSMFLOW_FALLBACK_BASE_URL_CAPABLE"]},
        fallback_model="gpt-any",
        fallback_base_url=CREDENTIALS["FSMFLOW_FALLBACK_BASE_URL"],
        health_port=0,
        temporal_address=client.service_client.config.target_host,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        with capture_logs() as logs, caplog.at_level(logging.DEBUG):
            await asyncio.wait_for(run_worker(settings, stop=stop, on_ready=stop.set), 60)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # run_worker's handlers, not the session's
            loop.remove_signal_handler(sig)
    (starting,) = [entry for entry in logs if entry["event"] == "worker_starting"]
    assert starting["openai_base_url"] == "https://***@host.example/v1"
    assert starting["fallback_models"] == {"default": "gpt-any", "capable": "gpt-small"}
    assert "secret" not in repr(logs) and "secret" not in caplog.text
