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
