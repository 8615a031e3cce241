"""The fraud pipeline's first stage: customer windows, and routing to terminal owners.

``customer-features`` reads ``transactions`` (partitioned by customer), keeps each customer's
window (:class:`~processors.fraud.windows.CustomerWindow`) in the ``customer-windows`` table,
computes the six customer features and forwards each transaction to the partition of
``tx-by-terminal`` that owns its terminal. ``route-labels`` forwards ``transaction-labels``
the same way to ``labels-by-terminal``. Both send one record per target partition and batch
(:mod:`processors.fraud.wire`), and write a customer's state once per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping, Sequence
from time import perf_counter
from typing import Any

from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import Outputs
from pipelines.runtime.policies import FailurePolicies
from pipelines.runtime.state import load, save
from pipelines.runtime.steps import DeadLetterSink, split_events
from pipelines.settings import Settings
from processors.fraud.features import CustomerWindow, Late, transaction_flags
from processors.fraud.schemas import decode_label_row, decode_transaction_row
from processors.fraud.wire import encode_chunks, group_by_partition

__all__ = ["CUSTOMER_STEP", "LABEL_STEP", "CustomerFeatures", "RouteLabels"]

CUSTOMER_STEP = "customer-features"
LABEL_STEP = "route-labels"


class _Forwarder:
    """A step that sends rows on to the partitions of an internal topic."""

    name = ""

    def __init__(
        self,
        settings: Settings,
        outputs: Outputs,
        metrics: StepMetrics,
        out_topic: str,
        out_partitions: int,
    ) -> None:
        self.settings = settings
        self.outputs = outputs
        self.metrics = metrics
        self.out_topic = out_topic
        self.out_partitions = out_partitions
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)
        self.failures = FailurePolicies(settings.policies, self.dead)

    async def handle(self, events: Sequence[Any]) -> None:
        raise NotImplementedError

    async def forward(self, field: str, rows: list[tuple[int, list[Any], Any]]) -> None:
        """Send ``(entity, row, event)`` triples, one record per partition of the entity (and,
        under ``exactly_once``, per input partition: each goes in its input's transaction)."""
        sources: dict[int, tuple[Any, list[tuple[int, list[Any]]]]] = {}
        if self.outputs.by_source:
            for entity, row, event in rows:
                sources.setdefault(event.message.partition, (event, []))[1].append((entity, row))
        else:
            sources[0] = (None, [(entity, row) for entity, row, _ in rows])
        for source, part_rows in sources.values():
            for partition, part in group_by_partition(part_rows, self.out_partitions).items():
                for record in encode_chunks(field, part):
                    await self.outputs.send(self.out_topic, None, record, partition, source)


class CustomerFeatures(_Forwarder):
    """Stage ``customer-features``: one micro-batch of transaction events at a time."""

    name = CUSTOMER_STEP

    def __init__(
        self,
        settings: Settings,
        state: MutableMapping[int, Any],
        outputs: Outputs,
        metrics: StepMetrics,
        out_topic: str,
        out_partitions: int,
    ) -> None:
        super().__init__(settings, outputs, metrics, out_topic, out_partitions)
        self.config = settings.transactions.features
        self.state = state

    async def handle(self, events: Sequence[Any]) -> None:
        started = perf_counter()
        valid, rejected = split_events(
            events, self.settings.worker.max_event_bytes, lambda raw, _: decode_transaction_row(raw)
        )
        for event, why in rejected:
            await self.dead.send(event, CUSTOMER_STEP, why.reason, why.detail)
        windows: dict[int, CustomerWindow] = {}
        owner: dict[int, Any] = {}
        rows: list[tuple[int, list[Any], Any]] = []
        late: Counter[str] = Counter()  # late payments by what their policy did
        for event, (tx_id, t_ms, customer_id, terminal_id, amount) in valid:
            window = windows.get(customer_id)
            if window is None:
                window = load(self.state, customer_id, CustomerWindow.from_bytes, event)
            customer = window.add(t_ms, amount, self.config)
            if isinstance(customer, Late):
                late[await self.failures.late(event, CUSTOMER_STEP, customer.detail)] += 1
                continue
            windows[customer_id] = window
            owner[customer_id] = event
            weekend, night = transaction_flags(t_ms)
            raw = event.message.value.decode()
            row = [tx_id, t_ms, customer_id, terminal_id, amount, weekend, night]
            rows.append((terminal_id, [*row, *customer, raw], event))
        for customer_id, window in windows.items():  # changelog partition = the input's
            save(self.state, customer_id, window, owner[customer_id])
        await self.forward("rows", rows)
        m = self.metrics
        m.events.labels(CUSTOMER_STEP, "ok").inc(len(rows))
        m.events.labels(CUSTOMER_STEP, "dead_letter").inc(len(rejected) + late["dead_letter"])
        if late["dropped"]:
            m.events.labels(CUSTOMER_STEP, "dropped").inc(late["dropped"])
        m.batch_size.labels(CUSTOMER_STEP).observe(len(events))
        m.batch_seconds.labels(CUSTOMER_STEP).observe(perf_counter() - started)


class RouteLabels(_Forwarder):
    """Stage ``route-labels``: labels to the partition that owns their terminal."""

    name = LABEL_STEP

    async def handle(self, events: Sequence[Any]) -> None:
        valid, rejected = split_events(
            events, self.settings.worker.max_event_bytes, lambda raw, _: decode_label_row(raw)
        )
        for event, why in rejected:
            await self.dead.send(event, LABEL_STEP, why.reason, why.detail)
        rows = [(label[1], list(label), event) for event, label in valid]
        await self.forward("labels", rows)
        self.metrics.events.labels(LABEL_STEP, "ok").inc(len(valid))
        self.metrics.events.labels(LABEL_STEP, "dead_letter").inc(len(rejected))
