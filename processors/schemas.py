"""Versioned wire schemas (JSON, UTF-8) and their codecs.

Decoding never raises on bad input: it returns a :class:`Rejected` value that says why, so
the caller can route the original bytes to ``dead-letters``. Every record carries a
``schema`` field such as ``"transaction/1"``; a consumer checks the name and the major
version, and ignores fields it does not know (new optional fields keep the version).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from processors.formatting import epoch_ms

__all__ = [
    "ALERT_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "LABEL_SCHEMA",
    "MODEL_METRICS_SCHEMA",
    "PREDICTION_SCHEMA",
    "TRANSACTION_SCHEMA",
    "Alert",
    "DeadLetter",
    "Label",
    "LabelRow",
    "ModelMetrics",
    "Prediction",
    "Rejected",
    "Transaction",
    "TransactionRow",
    "decode_dead_letter",
    "decode_label",
    "decode_label_row",
    "decode_transaction",
    "decode_transaction_checked",
    "decode_transaction_row",
    "encode",
    "format_time",
    "parse_time",
]

TRANSACTION_SCHEMA: Final = "transaction/1"
LABEL_SCHEMA: Final = "transaction-label/1"
PREDICTION_SCHEMA: Final = "prediction/1"
ALERT_SCHEMA: Final = "alert/1"
DEAD_LETTER_SCHEMA: Final = "dead-letter/1"
MODEL_METRICS_SCHEMA: Final = "model-metrics/1"

_MAX_AMOUNT: Final = 1e9


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an input could not be decoded: a short machine-readable reason and a detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Transaction:
    """A card payment as published on ``transactions`` (key: customer id)."""

    tx_id: int
    tx_time: datetime
    customer_id: int
    terminal_id: int
    amount: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TRANSACTION_SCHEMA,
            "tx_id": self.tx_id,
            "tx_time": format_time(self.tx_time),
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "amount": self.amount,
        }


@dataclass(frozen=True, slots=True)
class Label:
    """The fraud verdict for a transaction, known days later (``transaction-labels``)."""

    tx_id: int
    customer_id: int
    terminal_id: int
    is_fraud: bool
    label_time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": LABEL_SCHEMA,
            "tx_id": self.tx_id,
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "is_fraud": self.is_fraud,
            "label_time": format_time(self.label_time),
        }


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
class ModelMetrics:
    """Live model quality from labelled predictions (``model-metrics``, key: pipeline:scope).

    ``scope`` is ``"day"`` (one event day, once its labels are in) or ``"rolling"`` (the last
    ``days`` event days, published at an interval); ``models`` maps a model name to its
    metrics (``None`` where undefined).
    """

    pipeline: str
    scope: str
    day: str  # the (last) event day covered, YYYY-MM-DD
    days: int
    examples: int
    frauds: int
    alerts: int
    late_labels: int
    k: int
    threshold: float
    policies: dict[str, str | None]
    models: dict[str, dict[str, float | None]]
    model_versions: dict[str, str]
    emit_time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": MODEL_METRICS_SCHEMA,
            "pipeline": self.pipeline,
            "scope": self.scope,
            "day": self.day,
            "days": self.days,
            "examples": self.examples,
            "frauds": self.frauds,
            "alerts": self.alerts,
            "late_labels": self.late_labels,
            "k": self.k,
            "threshold": self.threshold,
            "policies": self.policies,
            "models": self.models,
            "model_versions": self.model_versions,
            "emit_time": format_time(self.emit_time),
        }


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


def encode(
    record: Transaction | Label | Prediction | Alert | DeadLetter | ModelMetrics,
) -> bytes:
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


def _load_object(raw: bytes, expected_schema: str) -> dict[str, Any] | Rejected:
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


def _int_field(data: dict[str, Any], name: str) -> int | Rejected:
    if name not in data:
        return Rejected("missing_field", f"field {name!r} is missing")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejected("bad_type", f"field {name!r} must be an integer, got {value!r:.40}")
    if value < 0:
        return Rejected("bad_value", f"field {name!r} must be >= 0, got {value}")
    return value


def _id_fields(data: dict[str, Any]) -> tuple[int, int, int] | Rejected:
    """``tx_id``, ``customer_id``, ``terminal_id``: the first bad one is the rejection."""
    values = []
    for name in ("tx_id", "customer_id", "terminal_id"):
        value = _int_field(data, name)
        if isinstance(value, Rejected):
            return value
        values.append(value)
    return values[0], values[1], values[2]


def _time_field(data: dict[str, Any], name: str) -> datetime | Rejected:
    if name not in data:
        return Rejected("missing_field", f"field {name!r} is missing")
    parsed = parse_time(data[name])
    if isinstance(parsed, Rejected):
        return Rejected(parsed.reason, f"field {name!r}: {parsed.detail}")
    return parsed


def decode_transaction(raw: bytes) -> Transaction | Rejected:
    """Decode and validate a ``transaction/1`` record.

    A well-formed record takes a short path (a few type checks in line: the general checks
    below cost about 4 µs a payment); anything else takes the checks that say what is wrong.
    Both give the same result, which a property test checks.
    """
    fields = _short_path(raw)
    if fields is None:
        return decode_transaction_checked(raw)
    return Transaction(*fields)


TransactionRow = tuple[int, int, int, int, float]
"""``(tx_id, tx_time_ms, customer_id, terminal_id, amount)``: :func:`decode_transaction_row`."""


def decode_transaction_row(raw: bytes) -> TransactionRow | Rejected:
    """:func:`decode_transaction` as a tuple with the time in epoch milliseconds, for a step
    that needs only the numbers: no :class:`Transaction` is made on the short path (a frozen
    dataclass costs about 1.5 µs to build). Same rejections, which a property test checks."""
    fields = _short_path(raw)
    if fields is not None:
        tx_id, tx_time, customer_id, terminal_id, amount = fields
    else:
        tx = decode_transaction_checked(raw)
        if isinstance(tx, Rejected):
            return tx
        tx_id, tx_time, customer_id, terminal_id, amount = (
            tx.tx_id,
            tx.tx_time,
            tx.customer_id,
            tx.terminal_id,
            tx.amount,
        )
    return tx_id, epoch_ms(tx_time), customer_id, terminal_id, amount


def _short_path(raw: bytes) -> tuple[int, datetime, int, int, float] | None:
    """The fields of a well-formed ``transaction/1`` record, or ``None``: check it in full."""
    data = _loaded(raw, TRANSACTION_SCHEMA)
    if data is None:
        return None
    ids, amount = _plain_ids(data), data.get("amount")
    if (
        ids is not None
        and (type(amount) is float or type(amount) is int)
        and 0 <= amount <= _MAX_AMOUNT  # False for NaN
    ):
        tx_time = _plain_utc(data.get("tx_time"))
        if tx_time is not None:
            return ids[0], tx_time, ids[1], ids[2], float(amount)
    return None


def _loaded(raw: bytes, schema: str) -> dict[str, Any] | None:
    """The JSON object of ``raw`` if it claims ``schema`` (or none), else ``None``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is dict and data.get("schema", schema) == schema:
        return data
    return None


def _plain_ids(data: dict[str, Any]) -> tuple[int, int, int] | None:
    """``tx_id``, ``customer_id``, ``terminal_id`` if each is an int >= 0 (not a bool)."""
    tx_id, customer_id, terminal_id = (
        data.get("tx_id"),
        data.get("customer_id"),
        data.get("terminal_id"),
    )
    if (
        type(tx_id) is int
        and type(customer_id) is int
        and type(terminal_id) is int
        and tx_id >= 0
        and customer_id >= 0
        and terminal_id >= 0
    ):
        return tx_id, customer_id, terminal_id
    return None


def _plain_utc(value: object) -> datetime | None:
    """An RFC 3339 string in UTC (``Z`` or ``+00:00``) as a datetime, else ``None``."""
    if type(value) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is UTC else None


def decode_transaction_checked(raw: bytes) -> Transaction | Rejected:
    """:func:`decode_transaction` through the checks that name what is wrong."""
    data = _load_object(raw, TRANSACTION_SCHEMA)
    if isinstance(data, Rejected):
        return data
    ids = _id_fields(data)
    if isinstance(ids, Rejected):
        return ids
    tx_id, customer_id, terminal_id = ids
    tx_time = _time_field(data, "tx_time")
    if isinstance(tx_time, Rejected):
        return tx_time
    if "amount" not in data:
        return Rejected("missing_field", "field 'amount' is missing")
    amount = data["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return Rejected("bad_type", f"field 'amount' must be a number, got {amount!r:.40}")
    amount = float(amount)
    if not math.isfinite(amount) or amount < 0 or amount > _MAX_AMOUNT:
        return Rejected("bad_amount", f"amount must be finite, >= 0 and <= 1e9, got {amount}")
    return Transaction(tx_id, tx_time, customer_id, terminal_id, amount)


def decode_label(raw: bytes) -> Label | Rejected:
    """Decode and validate a ``transaction-label/1`` record."""
    data = _load_object(raw, LABEL_SCHEMA)
    if isinstance(data, Rejected):
        return data
    ids = _id_fields(data)
    if isinstance(ids, Rejected):
        return ids
    tx_id, customer_id, terminal_id = ids
    label_time = _time_field(data, "label_time")
    if isinstance(label_time, Rejected):
        return label_time
    is_fraud = data.get("is_fraud")
    if not isinstance(is_fraud, bool):
        return Rejected("bad_type", f"field 'is_fraud' must be true or false, got {is_fraud!r:.40}")
    return Label(tx_id, customer_id, terminal_id, is_fraud, label_time)


LabelRow = tuple[int, int, int, int]
"""``(tx_id, terminal_id, is_fraud as 0/1, label_time_ms)``: :func:`decode_label_row`."""


def decode_label_row(raw: bytes) -> LabelRow | Rejected:
    """:func:`decode_label` as the numbers a router needs, the time in epoch milliseconds.

    A well-formed ``transaction-label/1`` record takes a short path (about 2 µs instead of
    5: a few checks in line, no :class:`Label`); anything else goes through
    :func:`decode_label`, whose checks say what is wrong. Both give the same result, which a
    property test checks."""
    data = _loaded(raw, LABEL_SCHEMA)
    if data is not None:
        ids, is_fraud = _plain_ids(data), data.get("is_fraud")
        label_time = _plain_utc(data.get("label_time"))
        if ids is not None and type(is_fraud) is bool and label_time is not None:
            return ids[0], ids[2], int(is_fraud), epoch_ms(label_time)
    label = decode_label(raw)
    if isinstance(label, Rejected):
        return label
    return label.tx_id, label.terminal_id, int(label.is_fraud), epoch_ms(label.label_time)


def decode_dead_letter(raw: bytes) -> DeadLetter | Rejected:
    """Decode a ``dead-letter/1`` record (for consumers and tests)."""
    data = _load_object(raw, DEAD_LETTER_SCHEMA)
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
