"""Worker and CLI configuration, from environment variables (loaded once, in main).

Model tiers are open-ended: every ``FSMFLOW_MODEL_<TIER>`` names the model of a
tier (``FSMFLOW_MODEL_DEFAULT``, ``FSMFLOW_MODEL_CAPABLE``, ...), optionally with
its own ``FSMFLOW_BASE_URL_<TIER>`` and ``FSMFLOW_API_KEY_<TIER>``; a tier without
them uses ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.activity import RunLimits

DEFAULT_TASK_QUEUE = "fsmflow-agents"
DEFAULT_LOCAL_MODEL = "smollm2-135m-instruct"
DEFAULT_LOCAL_LLM_PORT = 8088


def split_modules(spec: str) -> list[str]:
    """Tool module entries of a comma-separated list (``FSMFLOW_TOOL_MODULES``)."""
    return [part.strip() for part in spec.split(",") if part.strip()]


class ModelTier(BaseModel):
    """Where one tier's requests go."""

    model_config = ConfigDict(frozen=True)

    model: str
    base_url: str
    api_key: SecretStr


class Settings(BaseSettings):
    """Every setting of a worker, with its environment variable."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    temporal_address: str = Field("127.0.0.1:7233", alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", alias="TEMPORAL_NAMESPACE")
    temporal_api_key: SecretStr | None = Field(None, alias="TEMPORAL_API_KEY")
    temporal_tls: bool = Field(False, alias="TEMPORAL_TLS")
    temporal_tls_cert: Path | None = Field(None, alias="TEMPORAL_TLS_CLIENT_CERT_PATH")
    temporal_tls_key: Path | None = Field(None, alias="TEMPORAL_TLS_CLIENT_KEY_PATH")
    temporal_tls_ca: Path | None = Field(None, alias="TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    task_queue: str = Field(DEFAULT_TASK_QUEUE, alias="FSMFLOW_TASK_QUEUE")
    ui_url: str = Field("http://127.0.0.1:8233", alias="FSMFLOW_UI_URL")
    """Where the CLI points run links (the Temporal Web UI)."""
    agents_dir: Path = Field(Path("examples"), alias="FSMFLOW_AGENTS_DIR")

    openai_base_url: str = Field(
        f"http://127.0.0.1:{DEFAULT_LOCAL_LLM_PORT}/v1", alias="OPENAI_BASE_URL"
    )
    openai_api_key: SecretStr = Field(SecretStr("sk-no-key"), alias="OPENAI_API_KEY")
    models: dict[str, str] = Field(default_factory=lambda: {"default": DEFAULT_LOCAL_MODEL})
    base_urls: dict[str, str] = Field(default_factory=dict)
    api_keys: dict[str, SecretStr] = Field(default_factory=dict)
    fallback_model: str | None = Field(None, alias="FSMFLOW_FALLBACK_MODEL")
    fallback_base_url: str | None = Field(None, alias="FSMFLOW_FALLBACK_BASE_URL")
    fallback_after: int = Field(2, alias="FSMFLOW_FALLBACK_AFTER", ge=1)
    """Failed attempts of a model call before the fallback model is used."""
    response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema", alias="FSMFLOW_RESPONSE_FORMAT"
    )
    temperature: float = Field(0.0, alias="FSMFLOW_TEMPERATURE")
    max_tokens: int = Field(1024, alias="FSMFLOW_MAX_TOKENS", ge=16)
    llm_timeout_seconds: float = Field(120.0, alias="FSMFLOW_LLM_TIMEOUT", gt=0)

    tool_modules_spec: str = Field("", alias="FSMFLOW_TOOL_MODULES")
    """Comma-separated tool modules: dotted module names or ``.py`` file paths."""
    tool_ledger: Path = Field(Path(".fsmflow/ledger.sqlite3"), alias="FSMFLOW_TOOL_LEDGER")
    """The SQLite effect ledger (idempotency keys of tool side effects)."""
    artifacts_dir: Path = Field(Path(".fsmflow/artifacts"), alias="FSMFLOW_ARTIFACTS_DIR")
    artifact_threshold: int = Field(2000, alias="FSMFLOW_ARTIFACT_THRESHOLD", ge=100)
    """Tool results longer than this (characters) are stored as artifacts."""
    artifact_summary_chars: int = Field(300, alias="FSMFLOW_ARTIFACT_SUMMARY", ge=20)
    """How much of a stored result the model sees, with its reference."""

    max_reasks: int = Field(2, alias="FSMFLOW_MAX_REASKS", ge=0)
    max_message_chars: int = Field(4000, alias="FSMFLOW_MAX_MESSAGE_CHARS", ge=1)
    continue_as_new_after: int = Field(100, alias="FSMFLOW_CONTINUE_AS_NEW_AFTER", ge=1)

    log_format: Literal["json", "console"] = Field("json", alias="FSMFLOW_LOG_FORMAT")
    log_level: str = Field("INFO", alias="FSMFLOW_LOG_LEVEL")
    max_concurrent_activities: int = Field(8, alias="FSMFLOW_MAX_CONCURRENT_ACTIVITIES", ge=1)
    graceful_shutdown_seconds: float = Field(20.0, alias="FSMFLOW_GRACEFUL_SHUTDOWN", ge=0)
    health_port: int = Field(8080, alias="FSMFLOW_HEALTH_PORT", ge=0, le=65535)
    """Port of /healthz, /readyz and /metrics (0 turns the endpoint off)."""
    health_host: str = Field("0.0.0.0", alias="FSMFLOW_HEALTH_HOST")  # noqa: S104 - probes
    metrics_bind: str = Field("127.0.0.1:9464", alias="FSMFLOW_METRICS_BIND")
    """Where the Temporal runtime serves Prometheus text; /metrics proxies it."""

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the settings from the environment; keyword overrides win.

        Args:
            environ: Where the per-tier variables are read (default: the process
                environment); the fixed variables are read by pydantic-settings.
            **overrides: Field values that take precedence (tests, CLI flags).
        """
        env = dict(os.environ if environ is None else environ)
        per_tier: dict[str, dict[str, Any]] = {"models": {}, "base_urls": {}, "api_keys": {}}
        prefixes = {
            "FSMFLOW_MODEL_": "models",
            "FSMFLOW_BASE_URL_": "base_urls",
            "FSMFLOW_API_KEY_": "api_keys",
        }
        for name, value in env.items():
            for prefix, field in prefixes.items():
                if name.startswith(prefix) and value:
                    per_tier[field][name.removeprefix(prefix).lower()] = value
        fields: dict[str, Any] = {
            "models": {"default": DEFAULT_LOCAL_MODEL, **per_tier["models"]},
            "base_urls": per_tier["base_urls"],
            "api_keys": {k: SecretStr(v) for k, v in per_tier["api_keys"].items()},
        }
        fields.update(overrides)
        return cls(**fields)

    @property
    def tool_modules(self) -> list[str]:
        """The tool modules to load, in order."""
        return split_modules(self.tool_modules_spec)

    def tier(self, name: str) -> ModelTier:
        """The model and endpoint of a tier.

        Raises:
            KeyError: If no ``FSMFLOW_MODEL_<TIER>`` configures the tier.
        """
        if name not in self.models:
            known = ", ".join(sorted(self.models))
            raise KeyError(
                f"model tier {name!r} is not configured (set FSMFLOW_MODEL_{name.upper()}; "
                f"configured: {known})"
            )
        return ModelTier(
            model=self.models[name],
            base_url=self.base_urls.get(name, self.openai_base_url),
            api_key=self.api_keys.get(name, self.openai_api_key),
        )

    def fallback(self) -> ModelTier | None:
        """The fallback model, when one is configured."""
        if not self.fallback_model:
            return None
        return ModelTier(
            model=self.fallback_model,
            base_url=self.fallback_base_url or self.openai_base_url,
            api_key=self.openai_api_key,
        )

    def limits(self) -> RunLimits:
        """The limits a run obeys; they reach the workflow through an activity result."""
        return RunLimits(
            max_reasks=self.max_reasks,
            max_message_chars=self.max_message_chars,
            continue_as_new_after=self.continue_as_new_after,
        )

    def safe_summary(self) -> dict[str, Any]:
        """Settings fit for logs: no secrets."""
        return {
            "temporal_address": self.temporal_address,
            "namespace": self.temporal_namespace,
            "task_queue": self.task_queue,
            "agents_dir": str(self.agents_dir),
            "openai_base_url": self.openai_base_url,
            "models": dict(self.models),
            "tool_modules": self.tool_modules,
            "response_format": self.response_format,
            "tls": self.temporal_tls or self.temporal_tls_cert is not None,
            "temporal_api_key": "set" if self.temporal_api_key else "unset",
        }
