"""Kafka client configuration and topic administration, all derived from :class:`Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.settings import Settings

__all__ = ["TopicSpec", "client_config", "create_topics", "topic_specs"]

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    description: str


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipelines read or write (Faust creates its own changelogs)."""
    t = settings.topics
    retention = str(t.retention_hours * _HOUR_MS)
    keep = {"retention.ms": retention}
    frames = {"retention.ms": str(_HOUR_MS), "max.message.bytes": "8388608"}
    return [
        TopicSpec(t.transactions, t.partitions, keep, "transaction/1, key customer_id"),
        TopicSpec(t.transaction_labels, t.partitions, keep, "transaction-label/1, key customer_id"),
        TopicSpec(t.predictions, t.partitions, keep, "prediction/1, key entity"),
        TopicSpec(t.alerts, t.partitions, keep, "alert/1, key entity"),
        TopicSpec(t.model_metrics, 1, keep, "model-metrics/1, key pipeline:scope"),
        TopicSpec(t.audio_chunks, t.partitions, keep, "audio-chunk/1 (binary), key stream_id"),
        TopicSpec(t.video_frames, t.partitions, frames, "video-frame/1, key camera_id"),
        TopicSpec(t.video_anonymized, t.partitions, frames, "video-frame/1 with faces blurred"),
        TopicSpec(
            t.dead_letters,
            t.partitions,
            {"retention.ms": str(30 * 24 * _HOUR_MS), "max.message.bytes": "8388608"},
            "dead-letter/1, key: the original key",
        ),
    ]


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection and security keyword arguments shared by kafka-python and aiokafka."""
    sec = settings.security
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": sec.protocol,
    }
    if sec.protocol.startswith("SASL"):
        config["sasl_mechanism"] = sec.sasl_mechanism
        config["sasl_plain_username"] = sec.sasl_username
        config["sasl_plain_password"] = (
            sec.sasl_password.get_secret_value() if sec.sasl_password else None
        )
    if sec.protocol.endswith("SSL"):
        import ssl

        context = ssl.create_default_context(cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None)
        if sec.ssl_certfile:
            context.load_cert_chain(
                str(sec.ssl_certfile), str(sec.ssl_keyfile) if sec.ssl_keyfile else None
            )
        config["ssl_context"] = context
    return config


def create_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> dict[str, str]:
    """Create missing topics; returns ``{name: "created" | "exists"}``."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = topic_specs(settings) if specs is None else specs
    admin = KafkaAdminClient(**client_config(settings), client_id="streamwise-admin")
    try:
        existing = set(admin.list_topics())
        result = {s.name: "exists" for s in specs if s.name in existing}
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            new = NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.topics.replication_factor,
                topic_configs=spec.config,
            )
            try:
                admin.create_topics([new])
                result[spec.name] = "created"
            except TopicAlreadyExistsError:
                result[spec.name] = "exists"
        return result
    finally:
        admin.close()
