"""The fraud pipeline's scoring stage: terminal windows, batched ONNX and River scores.

``score-transactions`` reads ``tx-by-terminal`` and ``labels-by-terminal`` (co-partitioned by
terminal, :mod:`processors.fraud.wire`). A label updates the terminal's risk window and joins
the features that were scored for its transaction (kept in ``pending-by-tx``, one value a
transaction, and in memory with the terminal's window:
:class:`~processors.fraud.terminal.TerminalState`); the joined example goes to
``fraud-training`` for the single learner. A transaction gets its six
terminal features, then the whole batch is scored off the event loop by the ONNX model and by
the latest River snapshot, blended by the champion policy (``STREAMWISE_TRANSACTIONS__SCORING``
until the learner promotes the challenger), and produces one prediction each (with the
challenger's shadow score) and an alert above the threshold. The served scores are noted in
the pending features for the live evaluation. State is written once per terminal and batch.
Pending features an earlier release kept in one value a terminal (``pending-features``) are
read once and moved to their own keys.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import MutableMapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from time import monotonic, perf_counter
from typing import Any

import numpy as np
import orjson

from models.fraud_onnx import ReloadingFraudModel
from pipelines.fraud.learning import LearnerReplica
from pipelines.fraud.quality import settings_policies
from pipelines.runtime.metrics import StepMetrics
from pipelines.runtime.outputs import Outputs
from pipelines.runtime.policies import FailurePolicies
from pipelines.runtime.state import drop, load, put, read, save
from pipelines.runtime.steps import DeadLetterSink
from pipelines.settings import Settings
from processors.common.formatting import format_epoch_ms, round_like_python
from processors.common.schemas import Alert, Prediction, encode, format_time, prediction_dict
from processors.fraud.explain import Pseudonymizer, top_reasons
from processors.fraud.features import FEATURE_NAMES, Late, TerminalWindow, feature_row
from processors.fraud.pending import PendingFeatures
from processors.fraud.quality import Policy
from processors.fraud.terminal import TerminalState
from processors.fraud.wire import decode_rows, encode_chunks

__all__ = ["ALERT_KIND", "PIPELINE", "STEP", "ScoreTransactions"]

STEP = "score-transactions"
PIPELINE = "transactions"
ALERT_KIND = "fraud_suspected"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger(__name__)


class ScoreTransactions:
    """Stage ``score-transactions``: one micro-batch of internal records at a time.

    ``terminals`` holds each terminal's window (:class:`TerminalState` in memory),
    ``pending`` each scored transaction's features until its label or expiry, and
    ``legacy_pending`` what earlier releases kept there in one value a terminal (read once and
    deleted).
    """

    name = STEP

    def __init__(
        self,
        settings: Settings,
        model: ReloadingFraudModel,
        learner: LearnerReplica,
        terminals: MutableMapping[int, Any],
        pending: MutableMapping[int, Any],
        outputs: Outputs,
        metrics: StepMetrics,
        topics: dict[str, str],
        executor: Executor | None = None,
        learner_ready: asyncio.Event | None = None,
        legacy_pending: MutableMapping[int, Any] | None = None,
    ) -> None:
        self.settings = settings
        # Terminal windows take events out of order as far back as their longest window: the
        # repartition mixes customer partitions whose event times drift apart (a replay runs
        # them at different speeds), which is not lateness of the input (the customer stage
        # judged that). A terminal feature reads only transactions older than the label
        # delay, so a drift shorter than the delay leaves it exact (docs/pipelines.md).
        base = settings.transactions.features
        drift_ms = base.label_delay_ms + base.windows_ms[-1]
        self.config = replace(base, grace_ms=drift_ms + base.grace_ms)
        self.model = model
        self.learner = learner
        self.terminals = terminals
        self.pending = pending
        self.legacy_pending = legacy_pending
        self.outputs = outputs
        self.metrics = metrics
        self.topics = topics  # "tx", "labels", "training": internal topic names
        self.executor = executor
        self.learner_ready = learner_ready
        self.dead = DeadLetterSink(outputs, settings.topics.dead_letters, metrics)
        self.failures = FailurePolicies(settings.policies, self.dead)
        key = settings.transactions.pseudonymise_key
        self.names = Pseudonymizer(key.get_secret_value().encode() if key else None)
        self.next_model_check = 0.0
        self.pending_ttl_ms = self.config.label_delay_ms * 2 + self.config.grace_ms

    def _maybe_reload(self) -> None:
        now = monotonic()
        if now < self.next_model_check:
            return
        self.next_model_check = now + self.settings.transactions.model_check_s
        before = self.model.last_error
        if self.model.maybe_reload():
            self.metrics.model_reloads.labels(STEP, "loaded").inc()
        elif self.model.last_error and self.model.last_error != before:
            self.metrics.model_reloads.labels(STEP, "refused").inc()

    async def handle(self, events: Sequence[Any]) -> None:
        started = perf_counter()
        self._maybe_reload()
        if self.learner_ready is not None and not self.learner_ready.is_set():
            # A (re)started worker scores with the learner's newest checkpoint, not a blank one.
            try:
                await asyncio.wait_for(self.learner_ready.wait(), 30)
            except TimeoutError:
                log.warning("no learner checkpoint after 30 s; scoring with what there is")
                self.learner_ready = None
        states: dict[int, TerminalState] = {}
        owner: dict[int, Any] = {}

        def terminal_state(terminal: int, event: Any) -> TerminalState:
            owner[terminal] = event
            state = states.get(terminal)
            if state is None:
                state = load(self.terminals, terminal, TerminalState.from_bytes, event)
                if not state.pending_loaded:  # read from the store: its entries are apart
                    self._restore_pending(terminal, state, event)
                states[terminal] = state
            return state

        def window(terminal: int, event: Any) -> TerminalWindow:
            return terminal_state(terminal, event).window

        def pending(terminal: int, event: Any) -> PendingFeatures:
            return terminal_state(terminal, event).pending

        examples: list[tuple[Any, list[Any]]] = []  # (event it came from, example)
        joined_early: list[tuple[int, int, bool, Any]] = []  # (terminal, tx, is_fraud, event)
        statuses: Counter[str] = Counter()  # labels by status, counted once a batch
        scored: list[tuple[Any, list[Any], list[float]]] = []
        newest: dict[int, int] = {}  # newest payment time per terminal in this batch
        for event in events:
            topic = event.message.topic
            field = "labels" if topic == self.topics["labels"] else "rows"
            try:
                rows = decode_rows(event.message.value, field)
            except ValueError as exc:
                await self.dead.send(event, STEP, "invalid_internal", str(exc))
                continue
            if field == "labels":
                for tx_id, terminal, is_fraud, label_ms in rows:
                    status = window(terminal, event).add_label(
                        tx_id, None, label_ms, bool(is_fraud), self.config
                    )
                    statuses[status] += 1
                    if status == "applied":  # with what was served, for the live evaluation
                        example = self._example(pending(terminal, event), tx_id, bool(is_fraud))
                        if example is not None:
                            examples.append((event, example))
                continue
            for row in rows:
                tx_id, t_ms, _customer, terminal, amount = row[:5]
                terminal_window = window(terminal, event)
                early = terminal_window.early_label(tx_id)
                by_terminal = terminal_window.add_transaction(tx_id, t_ms, self.config)
                if isinstance(by_terminal, Late):
                    original = (str(row[2]).encode(), row[-1].encode())
                    await self.failures.late(event, STEP, by_terminal.detail, original)
                    continue
                features = feature_row(amount, t_ms, row[7:13], by_terminal)
                pending(terminal, event).add(tx_id, t_ms, features)
                if early is not None:  # its label came first: joined once it is scored
                    joined_early.append((terminal, tx_id, early, event))
                newest[terminal] = max(t_ms, newest.get(terminal, t_ms))
                scored.append((event, row, features))
        if scored:  # before the state is written: the served scores go into pending entries
            await self._score_and_emit(scored, states)
        for terminal, tx_id, is_fraud, event in joined_early:
            example = self._example(states[terminal].pending, tx_id, is_fraud)
            if example is not None:
                examples.append((event, example))
        for terminal, state in states.items():  # changelog partition = the input's
            if terminal in newest:  # once per terminal and batch, not per payment
                state.pending.expire(newest[terminal], self.pending_ttl_ms)
            event = owner[terminal]
            save(self.terminals, terminal, state, event)
            changed, removed = state.pending.changes()
            for tx_id, packed in changed:
                put(self.pending, tx_id, packed, event)
            for tx_id in removed:
                drop(self.pending, tx_id, event)
        await self._send_examples(examples)
        m = self.metrics
        for label_status, count in statuses.items():
            m.labels.labels(STEP, label_status).inc(count)
        m.examples.labels(STEP).inc(len(examples))
        m.events.labels(STEP, "ok").inc(len(scored))
        m.batch_size.labels(STEP).observe(len(events))
        m.batch_seconds.labels(STEP).observe(perf_counter() - started)

    async def _send_examples(self, examples: list[tuple[Any, list[Any]]]) -> None:
        """The batch's labelled examples to the learner, in chunks (under ``exactly_once`` a
        chunk per input partition: each goes in its input's transaction)."""
        sources: dict[int, tuple[Any, list[list[Any]]]] = {}
        if self.outputs.by_source:
            for event, example in examples:
                sources.setdefault(event.message.partition, (event, []))[1].append(example)
        else:
            sources[0] = (None, [example for _, example in examples])
        for source, part in sources.values():
            for record in encode_chunks("examples", part):
                await self.outputs.send(self.topics["training"], None, record, 0, source)

    @staticmethod
    def _example(pending: PendingFeatures, tx_id: int, is_fraud: bool) -> list[Any] | None:
        """A label joined to the features its payment was scored with, and the scores it
        was served (``[]`` if unknown), taking the pending entry; ``None`` without one."""
        entry = pending.take(tx_id)
        if entry is None:
            return None
        t_ms, features, notes = entry
        served = [] if math.isnan(notes[0]) else [t_ms, *notes]
        return [tx_id, int(is_fraud), features, served]

    def _restore_pending(self, terminal: int, state: TerminalState, event: Any) -> None:
        """Read back the pending entries of a terminal whose window was read from the store:
        one per transaction its window holds (the window outlives every entry), and those
        an earlier release kept in one value a terminal, which are moved to their own keys."""
        pending = state.pending
        for tx_id in state.transactions():
            entry = read(self.pending, tx_id, event)
            if entry is not None:
                pending.restore(entry)
        if self.legacy_pending is not None:
            legacy = read(self.legacy_pending, terminal, event)
            if legacy is not None:
                for tx_id, entry in PendingFeatures.from_bytes(legacy).rows.items():
                    if tx_id not in pending.rows:
                        pending.restore(entry, changed=True)
                drop(self.legacy_pending, terminal, event)
        state.pending_loaded = True

    async def _score_and_emit(
        self,
        scored: list[tuple[Any, list[Any], list[float]]],
        states: dict[int, TerminalState],
    ) -> None:
        x = np.array([f for _, _, f in scored], dtype=np.float64)
        if x.shape != (len(scored), len(FEATURE_NAMES)):  # once a batch, not once a payment
            raise ValueError(f"feature rows of shape {x.shape}, not (n, {len(FEATURE_NAMES)})")
        policies = self.learner.policies or settings_policies(self.settings.transactions)

        def both() -> tuple[Any, ...]:  # one hop to the worker thread for both models
            return (
                *self.model.predict_batch_versioned(x),
                *self.learner.predict_batch_versioned(x),
            )

        loop = asyncio.get_running_loop()
        onnx, onnx_version, river, river_version, stats = await loop.run_in_executor(
            self.executor, both
        )
        conf = self.settings.transactions
        # An untrained learner says 0.5 to everything: until it has learned, ONNX decides.
        champion = policies.champion if stats is not None else Policy("onnx")
        scores = champion.score(onnx, river)
        versions = {"onnx": onnx_version, "river": river_version, "scoring": champion.mode}
        versions |= {k: v for k, v in policies.to_dict().items() if v is not None}
        # The challenger scores in shadow: recorded in predictions, never alerted on.
        challenger = policies.challenger
        shadow = (challenger or champion).score(onnx, river)
        # Rounded a batch at a time, as round(v, 6) rounds each (processors.common.formatting).
        r_features = round_like_python(x, 6).tolist()
        r_onnx, r_river, r_score, r_shadow = round_like_python(
            np.vstack([onnx, river, scores, shadow]), 6
        ).tolist()
        now = datetime.now(UTC)
        emitted = format_time(now)
        topics = self.settings.topics
        threshold = conf.alert_threshold
        send = self.outputs.send
        for i, ((event, row, _), score, s_onnx, s_river) in enumerate(
            zip(scored, scores.tolist(), onnx.tolist(), river.tolist(), strict=True)
        ):
            tx_id, t_ms, customer, terminal = row[:4]
            states[terminal].pending.note(tx_id, (customer, s_onnx, s_river, score))
            entity = self.names.entity("customer", customer)
            key = entity.encode()
            named = dict(zip(FEATURE_NAMES, r_features[i], strict=False))  # checked on x
            named["score_onnx"] = r_onnx[i]
            named["score_river"] = r_river[i]
            if challenger:
                named["score_challenger"] = r_shadow[i]
            fields = (PIPELINE, str(tx_id), entity, r_score[i], threshold, versions)
            value = orjson.dumps(prediction_dict(*fields, named, format_epoch_ms(t_ms), emitted))
            await send(topics.predictions, key, value, None, event)
            if score >= threshold:
                event_time = _EPOCH + timedelta(milliseconds=t_ms)
                prediction = Prediction(*fields, event_time, now, named)
                reasons = [
                    f"score {score:.3f} (onnx {s_onnx:.3f}, river {s_river:.3f}) "
                    f">= threshold {threshold:g}",
                    f"at {self.names.entity('terminal', terminal)}",
                    *top_reasons(named, stats),
                ]
                alert = Alert.about(prediction, ALERT_KIND, reasons)
                await send(topics.alerts, key, encode(alert), None, event)
                self.metrics.alerts.labels(STEP, ALERT_KIND).inc()
        newest = _EPOCH + timedelta(milliseconds=max(row[1] for _, row, _ in scored))
        self.metrics.event_time_lag.labels(STEP).set((now - newest).total_seconds())
