"""Failure policies (``STREAMWISE_POLICIES__*``) through a real step, recorded outputs and
dicts for state: what each value sends, counts, acks or raises."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.fraud.routing import CUSTOMER_STEP, CustomerFeatures
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import DeliveryError
from pipelines.runtime.policies import StopWorker
from pipelines.runtime.stages import Stages
from pipelines.runtime.steps import Handover, start_batch
from pipelines.runtime.testing import RecordingOutputs
from pipelines.settings import Settings
from processors.common.schemas import decode_dead_letter, encode
from processors.fraud.schemas import Transaction
from tests.pipelines.fakes import FakeEvent, events

T0 = datetime(2018, 4, 2, 12, tzinfo=UTC)


def tx(tx_id: int, minutes: int) -> bytes:
    return encode(Transaction(tx_id, T0 + timedelta(minutes=minutes), 7, 3, 20.0))


class FailingDelivery(RecordingOutputs):
    """Outputs whose broker refuses the first delivery check."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def delivered(self) -> None:
        await super().delivered()
        if self.failures:
            self.failures -= 1
            raise DeliveryError("1 of 2 records were not delivered: RecordTooLarge")


class BrokenStore(dict[int, Any]):
    """Window state whose store fails on every read: the step's handling raises."""

    def get(self, key: int, default: Any = None) -> Any:
        raise RuntimeError("store gone")


def step(
    home: Path, outputs: RecordingOutputs | None = None, broken: bool = False, **policies: str
) -> tuple[CustomerFeatures, RecordingOutputs, StepMetrics]:
    settings = Settings(home=home, policies=policies)  # type: ignore[arg-type]
    out, metrics = outputs or RecordingOutputs(), StepMetrics()
    state: dict[int, Any] = BrokenStore() if broken else {}
    return CustomerFeatures(settings, state, out, metrics, "tx-by-terminal", 4), out, metrics


def count(metrics: StepMetrics, name: str, reason: str) -> float:
    labels = {"step": CUSTOMER_STEP, "reason": reason}
    return metrics.registry.get_sample_value(f"streamwise_{name}_total", labels) or 0.0


def letters(out: RecordingOutputs) -> list[tuple[str, str]]:
    decoded = [decode_dead_letter(s.value) for s in out.on("dead-letters")]
    return [(getattr(d, "reason", ""), getattr(d, "step", "")) for d in decoded]


def acked(handover: Handover) -> bool:
    """The batch's delivery went through: the stage acks it next."""
    return handover.delivery.done() and handover.delivery.exception() is None


class Stopped:
    """An ``on_stop`` hook that keeps what it was told."""

    def __init__(self) -> None:
        self.reasons: list[StopWorker] = []

    async def __call__(self, reason: StopWorker) -> None:
        self.reasons.append(reason)


def start(step: CustomerFeatures, batch: list[FakeEvent], on_stop: Stopped | None = None) -> Any:
    """Both halves of a batch (:func:`start_batch`, then :meth:`Handover.confirmed`)."""

    async def go() -> Handover:
        handover = await start_batch(step, batch, on_stop)
        await handover.confirmed()
        return handover

    return asyncio.run(go())


LATE = [tx(1, 300), tx(2, 60)]  # the second is 4 h behind its customer: past the 1 h grace


def test_on_late_dead_letter_sends_the_late_payment_with_its_step(home: Path) -> None:
    customers, out, metrics = step(home)
    start(customers, events("transactions", LATE))
    assert letters(out) == [("late", CUSTOMER_STEP)]
    assert getattr(decode_dead_letter(out.on("dead-letters")[0].value), "value", None) == LATE[1]
    assert count(metrics, "dead_letters", "late") == 1
    assert count(metrics, "dropped", "late") == 0


def test_on_late_drop_counts_and_logs_it_and_sends_nothing_for_it(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    customers, out, metrics = step(home, on_late="drop")
    handover = start(customers, events("transactions", LATE))
    assert out.on("dead-letters") == []
    assert count(metrics, "dropped", "late") == 1
    assert count(metrics, "dead_letters", "late") == 0
    assert len(out.on("tx-by-terminal")) == 1  # the payment on time still goes on
    assert acked(handover)
    assert f"[{CUSTOMER_STEP}] dropped late event transactions/0@1" in caplog.text


GOOD = [tx(1, 1), tx(2, 2), tx(3, 3)]


def test_on_processing_error_dead_letter_sends_every_input_of_the_batch(home: Path) -> None:
    customers, out, metrics = step(home, broken=True)
    start(customers, events("transactions", GOOD))
    assert letters(out) == [("processing_error", CUSTOMER_STEP)] * 3
    assert "RuntimeError: store gone" in getattr(
        decode_dead_letter(out.on("dead-letters")[0].value), "detail", ""
    )
    assert count(metrics, "dead_letters", "processing_error") == 3
    # half-made changes gone; the letters delivered, then handed over (exactly_once commits)
    assert (out.discards, out.deliveries) == (1, 2)


def test_on_processing_error_drop_acks_the_batch_without_dead_letters(home: Path) -> None:
    customers, out, metrics = step(home, broken=True, on_processing_error="drop")
    handover = start(customers, events("transactions", GOOD))
    assert out.sent == []
    assert count(metrics, "dropped", "processing_error") == 3
    assert count(metrics, "dead_letters", "processing_error") == 0
    assert out.discards == 1
    assert acked(handover)


def test_on_processing_error_stop_raises_and_leaves_the_batch_unacked(home: Path) -> None:
    customers, out, metrics = step(home, broken=True, on_processing_error="stop")
    stopped = Stopped()
    with pytest.raises(StopWorker, match="customer-features: a batch failed") as raised:
        start(customers, events("transactions", GOOD), stopped)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert stopped.reasons == [raised.value]
    assert out.sent == []
    assert out.discards == 1
    assert count(metrics, "dropped", "processing_error") == 0
    assert count(metrics, "dead_letters", "processing_error") == 0


def test_on_delivery_error_dead_letter_sends_the_refused_batch(home: Path) -> None:
    customers, out, metrics = step(home, outputs=FailingDelivery())
    start(customers, events("transactions", GOOD[:2]))
    assert letters(out) == [("processing_error", CUSTOMER_STEP)] * 2
    assert count(metrics, "dead_letters", "processing_error") == 2
    # the refused outputs, the dead letters, then the hand-over that commits them
    assert out.deliveries == 3
    assert out.rollbacks == 1  # the refused batch's state changes are not kept


def test_on_delivery_error_stop_raises_once_the_broker_refused(home: Path) -> None:
    customers, out, metrics = step(home, outputs=FailingDelivery(), on_delivery_error="stop")
    stopped = Stopped()
    with pytest.raises(StopWorker, match="outputs refused") as raised:
        start(customers, events("transactions", GOOD[:2]), stopped)
    assert isinstance(raised.value.__cause__, DeliveryError)
    assert stopped.reasons == [raised.value]
    assert out.on("dead-letters") == []
    assert out.deliveries == 1  # no second try: the batch is read again after a restart
    assert count(metrics, "dead_letters", "processing_error") == 0


class App:
    """What :class:`Stages` asks of a Faust app when a policy stops the worker."""

    def __init__(self) -> None:
        self.crashes: list[BaseException] = []

    async def crash(self, reason: BaseException) -> None:
        self.crashes.append(reason)


async def held(task: asyncio.Task[Any]) -> bool:
    """``task`` waits (it ran as far as it could) and ends only when cancelled, as a stopping
    worker cancels its agents."""
    for _ in range(10):  # loop turns, not time: the task runs until it waits
        await asyncio.sleep(0)
    waiting = not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return waiting and task.cancelled()


def test_a_stop_crashes_the_app_once_and_the_stage_handles_nothing_after_it(
    home: Path,
) -> None:
    customers, out, _ = step(home, broken=True, on_processing_error="stop")
    app = App()
    stages = Stages(app, customers.settings)  # type: ignore[arg-type]

    async def go() -> None:
        first = asyncio.create_task(stages.start(customers, events("transactions", GOOD[:1])))
        assert await held(first)  # not raised into Faust, which would restart the agent
        (reason,) = app.crashes
        assert isinstance(reason, StopWorker)
        customers.state = {}  # the store is back, but the worker is stopping
        later = asyncio.create_task(stages.start(customers, events("transactions", GOOD[1:])))
        assert await held(later)
        assert app.crashes == [reason]

    asyncio.run(go())
    assert out.sent == []  # the later batch was not handled


def test_a_refused_delivery_under_stop_crashes_the_app(home: Path) -> None:
    customers, _, _ = step(home, outputs=FailingDelivery(), on_delivery_error="stop")
    app = App()
    stages = Stages(app, customers.settings)  # type: ignore[arg-type]

    async def go() -> None:
        handover = await stages.start(customers, events("transactions", GOOD[:1]))
        confirming = asyncio.create_task(handover.confirmed())
        assert await held(confirming)
        (reason,) = app.crashes
        assert isinstance(reason.__cause__, DeliveryError)

    asyncio.run(go())
