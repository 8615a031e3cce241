"""The fraud pipeline's wire schemas: ``transaction/1``, ``transaction-label/1`` and
``model-metrics/1`` (JSON, UTF-8), decoded without raising: bad input is a
:class:`~processors.common.schemas.Rejected`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from processors.common.formatting import epoch_ms
from processors.common.schemas import Rejected, format_time, int_field, load_object, time_field

__all__ = [
    "LABEL_SCHEMA",
    "MODEL_METRICS_SCHEMA",
    "TRANSACTION_SCHEMA",
    "Label",
    "LabelRow",
    "ModelMetrics",
    "Transaction",
    "TransactionRow",
    "decode_label",
    "decode_label_row",
    "decode_transaction",
    "decode_transaction_checked",
    "decode_transaction_row",
]

TRANSACTION_SCHEMA: Final = "transaction/1"
LABEL_SCHEMA: Final = "transaction-label/1"
MODEL_METRICS_SCHEMA: Final = "model-metrics/1"

_MAX_AMOUNT: Final = 1e9


@dataclass(frozen=True, slots=True)
class Transaction:
    """A card payment as published on ``transactions`` (key: customer id)."""

    tx_id: int
    tx_time: datetime
    customer_id: int
    terminal_id: int
    amount: float

    def to_dict(self) -> dict[str, Any]:
        """The ``transaction/1`` wire form, JSON-ready."""
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
        """The ``transaction-label/1`` wire form, JSON-ready."""
        return {
            "schema": LABEL_SCHEMA,
            "tx_id": self.tx_id,
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "is_fraud": self.is_fraud,
            "label_time": format_time(self.label_time),
        }


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
        """The ``model-metrics/1`` wire form, JSON-ready."""
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


def _id_fields(data: dict[str, Any]) -> tuple[int, int, int] | Rejected:
    """``tx_id``, ``customer_id``, ``terminal_id``: the first bad one is the rejection."""
    values = []
    for name in ("tx_id", "customer_id", "terminal_id"):
        value = int_field(data, name)
        if isinstance(value, Rejected):
            return value
        values.append(value)
    return values[0], values[1], values[2]


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
    data = load_object(raw, TRANSACTION_SCHEMA)
    if isinstance(data, Rejected):
        return data
    ids = _id_fields(data)
    if isinstance(ids, Rejected):
        return ids
    tx_id, customer_id, terminal_id = ids
    tx_time = time_field(data, "tx_time")
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
    data = load_object(raw, LABEL_SCHEMA)
    if isinstance(data, Rejected):
        return data
    ids = _id_fields(data)
    if isinstance(ids, Rejected):
        return ids
    tx_id, customer_id, terminal_id = ids
    label_time = time_field(data, "label_time")
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
