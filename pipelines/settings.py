"""One frozen settings object, read from ``STREAMWISE_*`` environment variables.

Every pipeline, CLI command and test builds from a :class:`Settings`; no other module reads
the environment. Nested groups use ``__`` in variable names, e.g.
``STREAMWISE_TOPICS__PARTITIONS=8`` or ``STREAMWISE_SECURITY__SASL_PASSWORD=...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.audio.settings import AudioSettings
from pipelines.fraud.settings import TransactionSettings
from pipelines.video.settings import VideoSettings

__all__ = [
    "LocalBrokerSettings",
    "PolicySettings",
    "SecuritySettings",
    "Settings",
    "TopicSettings",
    "TransactionSettings",
    "WorkerSettings",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(BaseModel):
    """Names and layout of every topic the pipelines use."""

    model_config = _FROZEN

    transactions: str = "transactions"
    transaction_labels: str = "transaction-labels"
    predictions: str = "predictions"
    alerts: str = "alerts"
    dead_letters: str = "dead-letters"
    model_metrics: str = "model-metrics"
    audio_chunks: str = "audio-chunks"
    video_frames: str = "video-frames"
    video_anonymized: str = "video-anonymized"
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    retention_hours: int = Field(default=24 * 7, ge=1)


class SecuritySettings(BaseModel):
    """How to reach a secured cluster (SASL and/or TLS). Defaults: plaintext, no auth."""

    model_config = _FROZEN

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class LocalBrokerSettings(BaseModel):
    """The single-node Apache Kafka (KRaft) that ``streamwise broker`` runs on loopback."""

    model_config = _FROZEN

    port: int = Field(default=19092, ge=1, le=65535)
    controller_port: int = Field(default=19093, ge=1, le=65535)
    heap: str = "1g"
    start_timeout_s: float = Field(default=90.0, gt=0)


class WorkerSettings(BaseModel):
    """How a worker process runs: web/metrics port, batching and log level."""

    model_config = _FROZEN

    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    batch_within_s: float = Field(default=0.05, gt=0)
    loglevel: Literal["crit", "error", "warn", "info", "debug"] = "warn"
    max_event_bytes: int = Field(default=64 * 1024, ge=64)
    session_timeout_s: float = Field(default=10.0, ge=6.0, le=300.0)
    # Python's thread switch interval in the worker (sys.setswitchinterval). A thread that
    # runs Python (the fraud learner, River scoring) keeps the GIL this long before the event
    # loop, back from a socket read, gets it: at Python's 5 ms the loop waited on it batch
    # after batch (see docs/operations.md).
    switch_interval_s: float = Field(default=0.0005, ge=0.0001, le=0.1)
    # The runtime reaches into faust-streaming and aiokafka internals (pipelines/runtime/
    # compat.py) checked on pinned versions only; a worker refuses others unless this is set.
    allow_unchecked_versions: bool = False


class PolicySettings(BaseModel):
    """What a step does with a failure; each policy is named and the same for every step.

    ``dead_letter`` (the default of each) sends the input's original bytes to
    ``dead-letters`` with the reason and goes on; ``drop`` counts and logs it and goes on;
    ``stop`` stops the worker without acking the batch, so it is read again after a restart.
    """

    model_config = _FROZEN

    # An event older than its window's grace period (a late payment).
    on_late: Literal["dead_letter", "drop"] = "dead_letter"
    # A batch whose handling raised (a bug, a failing model).
    on_processing_error: Literal["dead_letter", "drop", "stop"] = "dead_letter"
    # A batch whose outputs the broker refused.
    on_delivery_error: Literal["dead_letter", "stop"] = "dead_letter"


class Settings(BaseSettings):
    """Everything a streamwise process needs, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMWISE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    broker: str | None = Field(
        default=None,
        description="An existing cluster, e.g. kafka://host:9092; unset means the local broker.",
    )
    home: Path = Field(
        default=Path(".streamwise"),
        description="Where the local broker, its logs and worker state live.",
    )
    app_prefix: str = Field(
        default="streamwise",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Prefix of Faust app ids, hence of consumer groups and changelog topics.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    topics: TopicSettings = TopicSettings()
    security: SecuritySettings = SecuritySettings()
    local_broker: LocalBrokerSettings = LocalBrokerSettings()
    worker: WorkerSettings = WorkerSettings()
    policies: PolicySettings = PolicySettings()
    transactions: TransactionSettings = TransactionSettings()
    audio: AudioSettings = AudioSettings()
    video: VideoSettings = VideoSettings()

    @field_validator("broker")
    @classmethod
    def _valid_broker_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for part in value.split(";"):
            url = urlparse(part if "://" in part else f"kafka://{part}")
            if url.scheme != "kafka" or not url.hostname or not url.port:
                raise ValueError(f"broker URL {part!r} is not of the form kafka://host:port")
        return value

    @property
    def uses_local_broker(self) -> bool:
        """True when no external cluster is named, so ``streamwise broker`` manages one."""
        return self.broker is None

    @property
    def broker_url(self) -> str:
        """The Faust-style broker URL (``kafka://host:port``)."""
        if self.broker is not None:
            return self.broker
        return f"kafka://127.0.0.1:{self.local_broker.port}"

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` strings for kafka-python and aiokafka."""
        servers = []
        for part in self.broker_url.split(";"):
            url = urlparse(part if "://" in part else f"kafka://{part}")
            servers.append(f"{url.hostname}:{url.port}")
        return servers

    @property
    def state_dir(self) -> Path:
        """Per-worker RocksDB state lives below this folder."""
        return self.home / "state"

    @property
    def assets_dir(self) -> Path:
        """Fetched models and test media (``streamwise assets fetch``)."""
        return self.home / "assets"

    def to_env(self) -> dict[str, str]:
        """``STREAMWISE_*`` variables that rebuild these settings in another process."""
        env: dict[str, str] = {}

        def walk(prefix: str, data: dict[str, object]) -> None:
            for key, value in data.items():
                name = f"{prefix}{key.upper()}"
                if isinstance(value, dict):
                    walk(f"{name}__", value)
                elif isinstance(value, SecretStr):
                    env[name] = value.get_secret_value()
                elif isinstance(value, bool):
                    env[name] = "true" if value else "false"
                elif isinstance(value, list | tuple):
                    env[name] = json.dumps(value)  # complex values travel as JSON
                elif value is not None:
                    env[name] = str(value)

        walk("STREAMWISE_", dict(self.model_dump(mode="python")))
        return env

    def describe(self) -> list[tuple[str, str]]:
        """Flattened ``(name, value)`` pairs with secrets masked, for printing at start."""
        rows: list[tuple[str, str]] = []

        def walk(prefix: str, data: dict[str, object]) -> None:
            for key, value in data.items():
                name = f"{prefix}{key}"
                if isinstance(value, dict):
                    walk(f"{name}.", value)
                elif isinstance(value, SecretStr):
                    rows.append((name, "**********" if value.get_secret_value() else ""))
                else:
                    rows.append((name, "" if value is None else str(value)))

        walk("", dict(self.model_dump(mode="python", round_trip=False)))
        rows.append(("broker_url (resolved)", self.broker_url))
        return rows
