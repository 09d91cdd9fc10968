"""Settings from the environment: tiers, fallback, and no secrets in summaries."""

from __future__ import annotations

import json

import pytest

from workers.settings import DEFAULT_LOCAL_MODEL, Settings


def test_tiers_from_environment() -> None:
    settings = Settings.load(
        environ={
            "FSMFLOW_MODEL_CAPABLE": "gpt-big",
            "FSMFLOW_BASE_URL_CAPABLE": "https://api.example.com/v1",
            "FSMFLOW_API_KEY_CAPABLE": "sk-capable-secret",
        },
        openai_base_url="http://127.0.0.1:9/v1",
        openai_api_key="sk-default-secret",
    )
    default = settings.tier("default")
    assert (default.model, default.base_url) == (DEFAULT_LOCAL_MODEL, "http://127.0.0.1:9/v1")
    capable = settings.tier("capable")
    assert (capable.model, capable.base_url) == ("gpt-big", "https://api.example.com/v1")
    assert capable.api_key.get_secret_value() == "sk-capable-secret"
    with pytest.raises(KeyError, match="set FSMFLOW_MODEL_FAST"):
        settings.tier("fast")


def test_fixed_variables_are_read_by_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMFLOW_TASK_QUEUE", "agents-eu")
    monkeypatch.setenv("FSMFLOW_MAX_REASKS", "4")
    monkeypatch.setenv("TEMPORAL_API_KEY", "tmprl-secret")
    settings = Settings.load(environ={})
    assert settings.task_queue == "agents-eu"
    assert settings.limits().max_reasks == 4
    summary = json.dumps(settings.safe_summary())
    assert "tmprl-secret" not in summary and "sk-" not in summary
    assert "tmprl-secret" not in repr(settings)


def test_invalid_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMFLOW_MAX_REASKS", "many")
    with pytest.raises(ValueError, match="FSMFLOW_MAX_REASKS"):
        Settings.load(environ={})


def test_a_fallback_never_gets_a_key_meant_for_another_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FSMFLOW_FALLBACK_MODEL", "backup")
    monkeypatch.setenv("FSMFLOW_FALLBACK_BASE_URL", "https://provider-b.example/v1")
    settings = Settings.load(
        environ={
            "FSMFLOW_MODEL_CAPABLE": "gpt-big",
            "FSMFLOW_FALLBACK_BASE_URL_CAPABLE": "https://provider-c.example/v1",
            "FSMFLOW_FALLBACK_API_KEY_CAPABLE": "sk-c",
            "FSMFLOW_FALLBACK_REASONING_EFFORT_CAPABLE": "low",
        },
        openai_base_url="https://provider-a.example/v1",
        openai_api_key="sk-a-secret",
    )
    default = settings.fallback("default")
    assert default is not None and default.base_url == "https://provider-b.example/v1"
    assert default.api_key.get_secret_value() == "sk-no-key"
    # A tier's own fallback endpoint and key apply with the global fallback model.
    capable = settings.fallback("capable")
    assert capable is not None and (capable.model, capable.base_url) == (
        "backup",
        "https://provider-c.example/v1",
    )
    assert capable.api_key.get_secret_value() == "sk-c" and capable.reasoning_effort == "low"
    monkeypatch.delenv("FSMFLOW_FALLBACK_BASE_URL")
    same = Settings.load(environ={}, openai_api_key="sk-a-secret").fallback("default")
    assert same is not None and same.api_key.get_secret_value() == "sk-a-secret"
