"""Versioned wire schemas (JSON, UTF-8) shared by every pipeline, and their codecs.

Decoding never raises on bad input: it returns a :class:`Rejected` value that says why, so
the caller can route the original bytes to ``dead-letters``. Every record carries a
``schema`` field such as ``"prediction/1"``; a consumer checks the name and the major
version, and ignores fields it does not know (new optional fields keep the version). The
decoders every pipeline's schemas build on (:func:`load_object`, :func:`int_field`,
:func:`time_field`, :func:`parse_time`) are here; the fraud pipeline's own inputs and
metrics are in :mod:`processors.fraud.schemas`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

__all__ = [
    "ALERT_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "PREDICTION_SCHEMA",
    "Alert",
    "DeadLetter",
    "Prediction",
    "Record",
    "Rejected",
    "decode_dead_letter",
    "encode",
    "format_time",
    "int_field",
    "load_object",
    "parse_time",
    "prediction_dict",
    "time_field",
]

PREDICTION_SCHEMA: Final = "prediction/1"
ALERT_SCHEMA: Final = "alert/1"
DEAD_LETTER_SCHEMA: Final = "dead-letter/1"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an input could not be decoded: a short machine-readable reason and a detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Prediction:
    """One score per input event (``predictions``, key: the entity id)."""

    pipeline: str
    event_id: str
    entity: str
    score: float
    threshold: float
    model_versions: dict[str, str]
    event_time: datetime
    emit_time: datetime
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``prediction/1`` wire form, JSON-ready."""
        return prediction_dict(
            self.pipeline,
            self.event_id,
            self.entity,
            self.score,
            self.threshold,
            self.model_versions,
            self.features,
            format_time(self.event_time),
            format_time(self.emit_time),
        )


def prediction_dict(
    pipeline: str,
    event_id: str,
    entity: str,
    score: float,
    threshold: float,
    model_versions: dict[str, str],
    features: dict[str, float],
    event_time: str,
    emit_time: str,
) -> dict[str, Any]:
    """:meth:`Prediction.to_dict` with the times already formatted (:func:`format_time`):
    the scorer encodes this with ``orjson`` instead of making a dataclass per event (and a
    batch shares its ``emit_time``)."""
    return {
        "schema": PREDICTION_SCHEMA,
        "pipeline": pipeline,
        "event_id": event_id,
        "entity": entity,
        "score": score,
        "threshold": threshold,
        "is_alert": score >= threshold,
        "model_versions": model_versions,
        "features": features,
        "event_time": event_time,
        "emit_time": emit_time,
    }


@dataclass(frozen=True, slots=True)
class Alert:
    """A score over its threshold, with the reasons a person can check (``alerts``)."""

    pipeline: str
    kind: str
    event_id: str
    entity: str
    score: float
    threshold: float
    model_versions: dict[str, str]
    reasons: list[str]
    event_time: datetime
    emit_time: datetime
    evidence: dict[str, Any] | None = None  # structured evidence (model alerts), optional

    @classmethod
    def about(cls, prediction: Prediction, kind: str, reasons: list[str]) -> Alert:
        """The alert for ``prediction``: same event, entity, score, models and times."""
        return cls(
            pipeline=prediction.pipeline,
            kind=kind,
            event_id=prediction.event_id,
            entity=prediction.entity,
            score=prediction.score,
            threshold=prediction.threshold,
            model_versions=prediction.model_versions,
            reasons=reasons,
            event_time=prediction.event_time,
            emit_time=prediction.emit_time,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``alert/1`` wire form, JSON-ready."""
        evidence = {} if self.evidence is None else {"evidence": self.evidence}
        return {
            "schema": ALERT_SCHEMA,
            "alert_id": f"{self.pipeline}:{self.kind}:{self.event_id}",
            "pipeline": self.pipeline,
            "kind": self.kind,
            "event_id": self.event_id,
            "entity": self.entity,
            "score": self.score,
            "threshold": self.threshold,
            "model_versions": self.model_versions,
            "reasons": self.reasons,
            "event_time": format_time(self.event_time),
            "emit_time": format_time(self.emit_time),
        } | evidence


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed, with its original bytes and where it came from."""

    reason: str
    detail: str
    step: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    failed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The ``dead-letter/1`` wire form, JSON-ready."""
        return {
            "schema": DEAD_LETTER_SCHEMA,
            "reason": self.reason,
            "detail": self.detail,
            "step": self.step,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "key_b64": None if self.key is None else base64.b64encode(self.key).decode(),
            "value_b64": None if self.value is None else base64.b64encode(self.value).decode(),
            "failed_at": format_time(self.failed_at),
        }


class Record(Protocol):
    """A wire record: anything with a ``to_dict`` of JSON-ready values."""

    def to_dict(self) -> dict[str, Any]: ...


def encode(record: Record) -> bytes:
    """Serialize a record to its JSON wire form."""
    return orjson.dumps(record.to_dict())


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2018-04-01T00:07:56.000Z``."""
    v = value if value.tzinfo is UTC else value.astimezone(UTC)
    return v.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def parse_time(value: object) -> datetime | Rejected:
    """Parse an RFC 3339 string (a zone is required) into an aware UTC datetime."""
    if not isinstance(value, str):
        return Rejected("bad_time", f"expected an RFC 3339 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return Rejected("bad_time", f"unparseable time {value[:64]!r}")
    if parsed.tzinfo is None:
        return Rejected("bad_time", f"time {value[:64]!r} has no zone")
    return parsed.astimezone(UTC)


def load_object(raw: bytes, expected_schema: str) -> dict[str, Any] | Rejected:
    """The JSON object of ``raw`` if it is one of ``expected_schema`` (a record without a
    ``schema`` field is taken as one), else why not."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("invalid_json", str(exc)[:200])
    if not isinstance(data, dict):
        return Rejected("invalid_json", f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", expected_schema)
    if not isinstance(schema, str) or schema.split("/")[0] != expected_schema.split("/")[0]:
        return Rejected("wrong_schema", f"expected {expected_schema}, got {schema!r}")
    if schema != expected_schema:
        return Rejected("unsupported_version", f"expected {expected_schema}, got {schema!r}")
    return data


def int_field(data: dict[str, Any], name: str) -> int | Rejected:
    """The field ``name`` of ``data`` if it is an integer >= 0 (not a bool), else why not."""
    if name not in data:
        return Rejected("missing_field", f"field {name!r} is missing")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejected("bad_type", f"field {name!r} must be an integer, got {value!r:.40}")
    if value < 0:
        return Rejected("bad_value", f"field {name!r} must be >= 0, got {value}")
    return value


def time_field(data: dict[str, Any], name: str) -> datetime | Rejected:
    """The field ``name`` of ``data`` as an aware UTC datetime (:func:`parse_time`), else why
    not, naming the field."""
    if name not in data:
        return Rejected("missing_field", f"field {name!r} is missing")
    parsed = parse_time(data[name])
    if isinstance(parsed, Rejected):
        return Rejected(parsed.reason, f"field {name!r}: {parsed.detail}")
    return parsed


def decode_dead_letter(raw: bytes) -> DeadLetter | Rejected:
    """Decode a ``dead-letter/1`` record (for consumers and tests)."""
    data = load_object(raw, DEAD_LETTER_SCHEMA)
    if isinstance(data, Rejected):
        return data
    try:
        source = data["source"]
        key = data.get("key_b64")
        value = data.get("value_b64")
        failed_at = parse_time(data["failed_at"])
        if isinstance(failed_at, Rejected):
            return failed_at
        return DeadLetter(
            reason=str(data["reason"]),
            detail=str(data["detail"]),
            step=str(data["step"]),
            topic=str(source["topic"]),
            partition=int(source["partition"]),
            offset=int(source["offset"]),
            key=None if key is None else base64.b64decode(key),
            value=None if value is None else base64.b64decode(value),
            failed_at=failed_at,
        )
    except (KeyError, TypeError, ValueError) as exc:
        return Rejected("bad_dead_letter", str(exc)[:200])
