"""Worker and CLI configuration, from environment variables (loaded once, in main).

Model tiers are open-ended: every ``FSMFLOW_MODEL_<TIER>`` names the model of a
tier (``FSMFLOW_MODEL_DEFAULT``, ``FSMFLOW_MODEL_CAPABLE``, ...), optionally with
its own ``FSMFLOW_BASE_URL_<TIER>`` and ``FSMFLOW_API_KEY_<TIER>``; a tier without
them uses ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``. A tier's fallback is
``FSMFLOW_FALLBACK_MODEL_<TIER>`` (with ``FSMFLOW_FALLBACK_BASE_URL_<TIER>`` and
``FSMFLOW_FALLBACK_API_KEY_<TIER>``), else the global ``FSMFLOW_FALLBACK_MODEL``;
``FSMFLOW_REASONING_EFFORT_<TIER>`` marks a tier's model as a reasoning model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.llm import LlmConfig, ModelEndpoint, redact_url
from schemas.snapshot import RunLimits
from workers.codec import KEY_ID_PATTERN, KeyRing, parse_keys

DEFAULT_TASK_QUEUE = "fsmflow-agents"
DEFAULT_LOCAL_MODEL = "smollm2-135m-instruct"
DEFAULT_LOCAL_LLM_PORT = 8088
DEFAULT_API_PORT = 8000
DEFAULT_API_MAX_BODY = 128 * 1024
"""Bytes of a request body the API reads at most. The largest start input a run
accepts (a 64,000-byte context, a 16,000-character task, an agent name:
``schemas.workflow``) is about 80 KB as JSON; this leaves room for escapes."""

_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(spec: str) -> tuple[float, float] | None:
    """``FSMFLOW_API_RATE`` as (bucket size, tokens per second); None when it is off.

    ``20/s``, ``600/m`` or ``10000/h``: that many requests per unit, in bursts of
    up to that many; ``off`` (or ``0``) turns the limit off.

    Raises:
        ValueError: If the value has another form.
    """
    text = spec.strip().lower()
    if text in ("off", "0"):
        return None
    count, _, unit = text.partition("/")
    if not count.isdigit() or int(count) < 1 or unit not in _RATE_UNITS:
        raise ValueError("expected requests per unit, like 20/s, 600/m or 10000/h, or off")
    return float(count), int(count) / _RATE_UNITS[unit]


def split_modules(spec: str) -> list[str]:
    """Tool module entries of a comma-separated list (``FSMFLOW_TOOL_MODULES``)."""
    return [part.strip() for part in spec.split(",") if part.strip()]


_PER_TIER = {
    # Longest prefixes first: FSMFLOW_FALLBACK_MODEL_X is not a tier "FALLBACK_...".
    "FSMFLOW_FALLBACK_BASE_URL_": "fallback_base_urls",
    "FSMFLOW_FALLBACK_API_KEY_": "fallback_api_keys",
    "FSMFLOW_FALLBACK_MODEL_": "fallback_models",
    "FSMFLOW_FALLBACK_REASONING_EFFORT_": "fallback_reasoning_efforts",
    "FSMFLOW_REASONING_EFFORT_": "reasoning_efforts",
    "FSMFLOW_BASE_URL_": "base_urls",
    "FSMFLOW_API_KEY_": "api_keys",
    "FSMFLOW_MODEL_": "models",
}
"""Per-tier variables: prefix -> Settings field (a dict by lower-case tier name)."""


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
    reasoning_efforts: dict[str, str] = Field(default_factory=dict)
    fallback_models: dict[str, str] = Field(default_factory=dict)
    fallback_base_urls: dict[str, str] = Field(default_factory=dict)
    fallback_api_keys: dict[str, SecretStr] = Field(default_factory=dict)
    fallback_reasoning_efforts: dict[str, str] = Field(default_factory=dict)
    fallback_model: str | None = Field(None, alias="FSMFLOW_FALLBACK_MODEL")
    fallback_base_url: str | None = Field(None, alias="FSMFLOW_FALLBACK_BASE_URL")
    fallback_api_key: SecretStr | None = Field(None, alias="FSMFLOW_FALLBACK_API_KEY")
    fallback_reasoning_effort: str | None = Field(None, alias="FSMFLOW_FALLBACK_REASONING_EFFORT")
    fallback_after: int = Field(2, alias="FSMFLOW_FALLBACK_AFTER", ge=1)
    """Failed attempts of a model call (or failed calls and invalid replies in one
    turn) before the fallback model is used."""
    response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema", alias="FSMFLOW_RESPONSE_FORMAT"
    )
    temperature: float = Field(0.0, alias="FSMFLOW_TEMPERATURE")
    max_tokens: int = Field(1024, alias="FSMFLOW_MAX_TOKENS", ge=16)
    llm_timeout_seconds: float = Field(120.0, alias="FSMFLOW_LLM_TIMEOUT", gt=0)
    llm_stream: bool = Field(True, alias="FSMFLOW_LLM_STREAM")
    """Ask for replies as server-sent events; a conversation's reply then streams
    to the run's subscribers. Off for endpoints that cannot stream."""
    stream_interval_seconds: float = Field(0.15, alias="FSMFLOW_STREAM_INTERVAL", ge=0.01, le=10)
    """Least time between two publishes of a streaming reply's text: each is a
    signal (and a workflow task) in the run's history."""

    tool_modules_spec: str = Field("", alias="FSMFLOW_TOOL_MODULES")
    """Comma-separated tool modules: dotted module names or ``.py`` file paths."""
    store_url: SecretStr | None = Field(None, alias="FSMFLOW_STORE_URL")
    """``postgresql://...``: the effect ledger and artifacts in PostgreSQL, shared by
    every worker (docs/deploy.md). Unset: SQLite and files on this machine."""
    store_pool_max: int = Field(10, alias="FSMFLOW_STORE_POOL_MAX", ge=1, le=1000)
    """Connections a worker keeps to the store at most."""
    tool_ledger: Path = Field(Path(".fsmflow/ledger.sqlite3"), alias="FSMFLOW_TOOL_LEDGER")
    """The SQLite effect ledger (idempotency keys of tool side effects)."""
    artifacts_dir: Path = Field(Path(".fsmflow/artifacts"), alias="FSMFLOW_ARTIFACTS_DIR")
    artifact_max_bytes: int = Field(
        64 * 1024 * 1024, alias="FSMFLOW_ARTIFACT_MAX_BYTES", ge=1024, le=1024**3
    )
    """The largest artifact a store takes (a tool saving more gets an error)."""
    artifact_threshold: int = Field(2000, alias="FSMFLOW_ARTIFACT_THRESHOLD", ge=100)
    """Tool results longer than this (characters) are stored as artifacts."""
    artifact_summary_chars: int = Field(300, alias="FSMFLOW_ARTIFACT_SUMMARY", ge=20)
    """How much of a stored result the model sees, with its reference."""

    max_reasks: int = Field(2, alias="FSMFLOW_MAX_REASKS", ge=0)
    max_message_chars: int = Field(4000, alias="FSMFLOW_MAX_MESSAGE_CHARS", ge=1)
    continue_as_new_after: int = Field(100, alias="FSMFLOW_CONTINUE_AS_NEW_AFTER", ge=1)
    turn_timeout_seconds: float = Field(60.0, alias="FSMFLOW_TURN_TIMEOUT", gt=0)
    """How long a conversation turn waits for a valid reply before the fallback reply."""
    backoff_max_seconds: float = Field(300.0, alias="FSMFLOW_BACKOFF_MAX", ge=1)
    """Longest pause between model calls of a run waiting for its model."""
    deploy_grace_seconds: float = Field(600.0, alias="FSMFLOW_DEPLOY_GRACE", ge=0)
    """How long a run waits for a worker with its model tier or tool (rolling deploys)."""

    log_format: Literal["json", "console"] = Field("json", alias="FSMFLOW_LOG_FORMAT")
    log_level: str = Field("INFO", alias="FSMFLOW_LOG_LEVEL")
    max_concurrent_activities: int = Field(8, alias="FSMFLOW_MAX_CONCURRENT_ACTIVITIES", ge=1)
    graceful_shutdown_seconds: float = Field(20.0, alias="FSMFLOW_GRACEFUL_SHUTDOWN", ge=0)
    health_port: int = Field(8080, alias="FSMFLOW_HEALTH_PORT", ge=0, le=65535)
    """Port of /healthz, /readyz and /metrics (0 turns the endpoint off)."""
    health_host: str = Field("0.0.0.0", alias="FSMFLOW_HEALTH_HOST")  # noqa: S104 - probes
    metrics_bind: str = Field("127.0.0.1:9464", alias="FSMFLOW_METRICS_BIND")
    """Where the Temporal runtime serves Prometheus text; /metrics proxies it."""
    payload_key: SecretStr | None = Field(None, alias="FSMFLOW_PAYLOAD_KEY")
    """``<id>:<base64 of 32 bytes>``: encrypts every payload (see ``workers.codec``)."""
    payload_decrypt_keys: SecretStr | None = Field(None, alias="FSMFLOW_PAYLOAD_DECRYPT_KEYS")
    """Comma-separated keys, same form, that only decrypt (older keys, keys rolling out)."""
    codec_server_token: SecretStr | None = Field(None, alias="FSMFLOW_CODEC_SERVER_TOKEN")
    """When set, ``fsmflow codec-server`` wants ``Authorization: Bearer <token>``."""

    api_host: str = Field("127.0.0.1", alias="FSMFLOW_API_HOST")
    """Where ``fsmflow api`` listens (loopback unless told otherwise)."""
    api_port: int = Field(DEFAULT_API_PORT, alias="FSMFLOW_API_PORT", ge=1, le=65535)
    api_tokens: SecretStr | None = Field(None, alias="FSMFLOW_API_TOKENS")
    """Comma-separated ``identity:token`` (or ``identity:token:agent1|agent2``)."""
    api_tokens_file: Path | None = Field(None, alias="FSMFLOW_API_TOKENS_FILE")
    """One ``identity:token[:agent1|agent2]`` a line; read again when it changes."""
    api_max_body: int = Field(
        DEFAULT_API_MAX_BODY, alias="FSMFLOW_API_MAX_BODY", ge=1024, le=16 * 1024 * 1024
    )
    """Bytes of a request body the API reads at most (413 beyond)."""
    api_rate: str = Field("20/s", alias="FSMFLOW_API_RATE")
    """Requests per identity: ``20/s``, ``600/m``, ``10000/h`` or ``off`` (429 beyond)."""

    @field_validator("api_rate")
    @classmethod
    def _rate_parses(cls, value: str) -> str:
        parse_rate(value)
        return value

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the settings from the environment; keyword overrides win.

        Args:
            environ: Where the per-tier variables are read (default: the process
                environment); the fixed variables are read by pydantic-settings.
            **overrides: Field values that take precedence (tests, CLI flags).
        """
        env = dict(os.environ if environ is None else environ)
        per_tier: dict[str, dict[str, Any]] = {field: {} for field in _PER_TIER.values()}
        for name, value in env.items():
            for prefix, field in _PER_TIER.items():
                if name.startswith(prefix) and value:
                    per_tier[field][name.removeprefix(prefix).lower()] = value
                    break
        fields: dict[str, Any] = {
            **per_tier,
            "models": {"default": DEFAULT_LOCAL_MODEL, **per_tier["models"]},
            "api_keys": {k: SecretStr(v) for k, v in per_tier["api_keys"].items()},
            "fallback_api_keys": {
                k: SecretStr(v) for k, v in per_tier["fallback_api_keys"].items()
            },
        }
        fields.update(overrides)
        settings = cls(**fields)
        # Checked here, not in a pydantic validator: its error would quote the input.
        settings.payload_keys()
        return settings

    @property
    def tool_modules(self) -> list[str]:
        """The tool modules to load, in order."""
        return split_modules(self.tool_modules_spec)

    def payload_keys(self) -> KeyRing:
        """The payload encryption keys (an empty ring: no codec).

        Raises:
            PayloadKeyError: If a key is malformed; the message names the variable.
        """
        return parse_keys(
            self.payload_key.get_secret_value() if self.payload_key else None,
            self.payload_decrypt_keys.get_secret_value() if self.payload_decrypt_keys else None,
        )

    def tier(self, name: str) -> ModelEndpoint:
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
        return ModelEndpoint(
            model=self.models[name],
            base_url=self.base_urls.get(name, self.openai_base_url),
            api_key=self.api_keys.get(name, self.openai_api_key),
            reasoning_effort=self.reasoning_efforts.get(name),
        )

    def fallback(self, name: str) -> ModelEndpoint | None:
        """A tier's fallback model, or None when none is configured.

        Each part is the tier's own (``FSMFLOW_FALLBACK_*_<TIER>``), else the
        global one (``FSMFLOW_FALLBACK_*``); the endpoint defaults to the tier's.
        The key defaults to the tier's only on the tier's endpoint: a key is never
        sent to another endpoint than its own (without one, ``sk-no-key``).
        """
        model = self.fallback_models.get(name) or self.fallback_model
        if not model or name not in self.models:
            return None
        tier = self.tier(name)
        base_url = self.fallback_base_urls.get(name) or self.fallback_base_url or tier.base_url
        api_key = self.fallback_api_keys.get(name) or self.fallback_api_key
        if api_key is None:
            api_key = tier.api_key if base_url == tier.base_url else SecretStr("sk-no-key")
        effort = self.fallback_reasoning_efforts.get(name) or self.fallback_reasoning_effort
        return ModelEndpoint(
            model=model, base_url=base_url, api_key=api_key, reasoning_effort=effort
        )

    def llm_config(self) -> LlmConfig:
        """What the LLM activity needs: endpoints per tier, fallbacks, request options."""
        fallbacks = {name: self.fallback(name) for name in self.models}
        return LlmConfig(
            tiers={name: self.tier(name) for name in self.models},
            fallbacks={name: f for name, f in fallbacks.items() if f is not None},
            fallback_after=self.fallback_after,
            response_format=self.response_format,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            timeout_seconds=self.llm_timeout_seconds,
            stream=self.llm_stream,
            stream_interval=self.stream_interval_seconds,
        )

    def limits(self) -> RunLimits:
        """The limits a run obeys; they reach the workflow through an activity result."""
        return RunLimits(
            max_reasks=self.max_reasks,
            max_message_chars=self.max_message_chars,
            continue_as_new_after=self.continue_as_new_after,
            turn_timeout_seconds=self.turn_timeout_seconds,
            model_backoff_max_seconds=self.backoff_max_seconds,
            fallback_after=self.fallback_after,
            deploy_grace_seconds=self.deploy_grace_seconds,
        )

    def safe_summary(self) -> dict[str, Any]:
        """Settings fit for logs: no secrets."""
        return {
            "temporal_address": self.temporal_address,
            "namespace": self.temporal_namespace,
            "task_queue": self.task_queue,
            "agents_dir": str(self.agents_dir),
            "openai_base_url": redact_url(self.openai_base_url),
            "models": dict(self.models),
            "fallback_models": {
                name: f.model for name in self.models if (f := self.fallback(name)) is not None
            },
            "tool_modules": self.tool_modules,
            "response_format": self.response_format,
            "llm_stream": self.llm_stream,
            "tls": self.temporal_tls or self.temporal_tls_cert is not None,
            "temporal_api_key": "set" if self.temporal_api_key else "unset",
            "payload_key": _key_summary(self.payload_key),
            "payload_decrypt_keys": _key_summary(self.payload_decrypt_keys),
            "api_tokens": "set" if self.api_tokens else "unset",
            "api_tokens_file": str(self.api_tokens_file) if self.api_tokens_file else None,
        }


def _key_summary(keys: SecretStr | None) -> str:
    """``unset``, or ``set`` with the keys' ids (not secret: every payload carries its id)."""
    specs = [s.strip() for s in (keys.get_secret_value() if keys else "").split(",") if s.strip()]
    if not specs:
        return "unset"
    # Only an id before a ':': a spec without one may be bare key material.
    ids = [spec.partition(":")[0].strip() for spec in specs if ":" in spec]
    named = [key_id for key_id in ids if KEY_ID_PATTERN.fullmatch(key_id)]
    return f"set (id {', '.join(named)})" if named else "set"
