"""``streamwise bench``: what a pipeline costs against the broker's own speed, in one run.

Everything goes through the real broker, on topics, consumer groups and a state folder of
its own (``bench-<8 hex>``, deleted at the end), so it runs beside a live deployment:

1. *Produce*: ``warm_days`` of simulated history (by default the whole state horizon: label
   delay, longest window and grace, 38 days at the default settings) are pre-loaded into the
   run's transactions topic with aiokafka, and between them, on its labels topic, the label
   of every payment whose label is due (``LABEL_DELAY_DAYS`` after it): in steady state
   about one label a payment, which the worker joins to the scored features and the learner
   learns, so the measure includes learning. The rate says how fast this machine and broker
   take a load at all. The measured transactions, the days that follow, are pre-loaded into
   a topic of the passthrough's own.
2. *Raw passthrough*: an aiokafka consumer and producer copy the measured records, value
   unchanged, to another topic. No decoding, no state, no scoring: roughly the most a Python
   consumer that also produces can do here, hence the baseline the pipeline is compared with.
   It runs once before the worker and once after it (step 4), and the baseline is the mean
   of the two, so that a host that slows down or speeds up during the run (a shared virtual
   machine can change by half within an hour) does not tilt the ratio one way.
3. *Pipeline worker*: the real ``streamwise worker`` subprocess (Faust, RocksDB state, batch
   scoring, the learner) processes the history, so that every customer's and terminal's
   window is as full as it stays in production. Once it has predicted all of it and learned
   its labels, the measured transactions and the labels due among them are published at
   once, as a backlog; the throughput is the transactions over the time from the first send
   to the last prediction (Kafka timestamps), or to when the scorer had handled the labels
   sent and the learner had learned every example the scorer sent it (the worker's
   metrics, polled every 50 ms), if that came later, so that every stage's work on them,
   and nothing else, falls in it.
   (Taking the first and last prediction instead let the first stage's lead over the
   second, 10,000-30,000 payments, fall outside the window. Without history,
   ``--warm-days 0``, the measured load is pre-loaded and that is what is measured.)
   Its peak RSS and its CPU time (all its threads) are sampled while it runs; the CPU over
   the same span gives the CPU a payment (and its label) costs and how busy the worker was
   (near 100 % of one core: the worker, not the broker, sets the rate). With ``--learner
   separate`` the worker leaves its learner out and a ``fraud-learner`` process runs beside
   it: the learned count comes from that process's metrics, and its CPU and RSS are
   reported apart. The predictions are
   read with aiokafka, whose record parsing is in C, so the reader takes little of the cores
   the worker runs on.
4. *Latency*: with that worker still running, more transactions (and their due labels) are
   published at half its measured throughput; latency is the prediction's timestamp minus
   the send timestamp. The worker's CPU over that load says how busy half its rate keeps it.
5. *Naive*: a second worker with micro-batches of one event (one table update, one scoring
   call, one ack per event) on a smaller copy of the load, to show what batching buys. It
   starts from empty state (a history would take it an hour), which flatters it. It runs
   ``at_least_once`` whatever the guarantee measured (a transaction an event would measure
   the broker's commits, not batching).

*Delivery guarantees* (``guarantee``, ``--guarantee``; default
``STREAMWISE_PROCESSING_GUARANTEE``): ``exactly_once`` runs steps 3 and 4 twice between the
two passthroughs, first ``at_least_once`` (the baseline), then ``exactly_once``, each on
topics, consumer groups, transactional ids and a state folder of its own
(``<run>-alo``, ``<run>-eos``: :mod:`pipelines.bench.guarantees`) with the same history,
backlog and paced load; the report has a row for each and exactly-once's throughput over
at-least-once's against the 0.9 goal. The predictions are read ``read_committed``, so an
exactly-once prediction counts once its transaction committed; its latency is given both
from its Kafka timestamp (when the worker sent it) and from when the reader received it
(which includes the commit).

A fixed pure-Python loop is timed just before each passthrough (:mod:`pipelines.bench.host`):
how fast Python runs on this host at that moment (other load on it included), to compare
runs taken on other days or machines, and a warning when it changed during the run. With
``--pin-cpu N`` both workers run on CPU ``N`` alone (all their threads) and a ``HostProbe``
times the same loop on that CPU every half second, in CPU time: its readings over each
measured span say how fast the worker's own core was meanwhile (a virtual machine's cores
change speed independently and within seconds).

The numbers describe one run on one machine with the broker on the same host; they are a
comparison between the ways of consuming, not a capacity promise.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipelines.bench.guarantees import (
    EOS_GOAL,
    eos_ratio,
    mode_prefix,
    modes_for,
    with_guarantee,
)
from pipelines.bench.harness import (
    MIB,
    create_run_topics,
    ensure_broker,
    isolated_settings,
    kafka_version,
    ratio,
    run_scope,
    say,
)
from pipelines.bench.host import HostProbe, check_cpu, machine_info
from pipelines.bench.load import (
    TX_PER_DAY,
    Item,
    labels_of,
    simulated_load,
    split_load,
    topics_of,
    transactions,
)
from pipelines.bench.measure import measure_latency, measure_worker
from pipelines.bench.passthrough import passthrough, preload
from pipelines.bench.report import format_report
from pipelines.settings import Settings

# format_report is this bench's, as in pipelines.bench.audio and .video: the CLI takes both
# from here.
__all__ = ["format_report", "run_bench", "state_horizon_days"]

_LATENCY_SECONDS = 20.0  # how long the paced latency load lasts at most
_NAIVE_FLOOR_RATE = 50.0


def state_horizon_days(settings: Settings) -> int:
    """Days of history after which a terminal's window is as full as it gets: the label
    delay, the longest window and the grace period."""
    from processors.fraud.windows import DAY_MS

    return math.ceil(settings.transactions.features.terminal_horizon_ms / DAY_MS)


def run_bench(
    settings: Settings,
    pipeline: str = "transactions",
    events: int = 100_000,
    warm_days: int | None = None,
    learner: str = "inline",
    pin_cpu: int | None = None,
    guarantee: str | None = None,
) -> dict[str, Any]:
    """Run every step described in the module docstring once; return the results.

    ``warm_days`` of history (default: :func:`state_horizon_days`) go through the worker
    before the measured ``events``. ``learner="separate"`` runs the pipeline worker without
    its learner and a ``fraud-learner`` process beside it (the naive worker keeps its own).
    ``pin_cpu`` runs both workers on that CPU alone (all their threads; a separate learner
    is not pinned) with a :class:`HostProbe` on it, whose readings go into the results.
    ``guarantee`` (default: the settings') ``exactly_once`` measures the pipeline worker
    under ``at_least_once`` too, as its baseline; ``worker`` and ``latency`` in the result
    are the asked guarantee's, ``modes`` has each mode's.
    """
    if pipeline != "transactions":
        raise ValueError(f"no bench for pipeline {pipeline!r}")
    if learner not in ("inline", "separate"):
        raise ValueError(f"learner must be 'inline' or 'separate', not {learner!r}")
    if events < 2:
        raise ValueError("events must be at least 2")
    if warm_days is None:
        warm_days = state_horizon_days(settings)
    if warm_days < 0:
        raise ValueError("warm_days must not be negative")
    if pin_cpu is not None:
        check_cpu(pin_cpu)
    guarantee = guarantee or settings.processing_guarantee
    modes = modes_for(guarantee)
    warm = warm_days * TX_PER_DAY
    ensure_broker(settings)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    base = (settings.home / "bench" / run_id).resolve()
    mains = {g: _mode_settings(settings, run_id, base, g, modes, learner) for g in modes}
    main = mains[modes[0]]  # its client settings and prefix serve the passthrough too
    naive = isolated_settings(
        with_guarantee(settings, "at_least_once"), f"{run_id}-naive", base / "naive", batch_size=1
    )
    passthrough_in, passthrough_out = f"{run_id}-passthrough-in", f"{run_id}-passthrough-out"
    naive_events = min(events, max(1000, events // 10))
    say(f"run {run_id}: {events:,} events, {' then '.join(modes)}, state in {base}")
    with run_scope(settings, run_id, base), contextlib.ExitStack() as stack:
        probe = None
        if pin_cpu is not None:
            probe = HostProbe(pin_cpu)
            stack.callback(probe.stop)
        create_run_topics(main, [passthrough_in, passthrough_out])
        for other in modes[1:]:
            create_run_topics(mains[other])
        create_run_topics(naive)
        delay = timedelta(milliseconds=main.transactions.label_delay_ms)
        load = simulated_load(warm + events + events // 2, delay)
        history, backlog, spare = split_load(load, warm, warm + events)
        # Labels go out once their transactions are predicted (see labels_of): the history's
        # after it. The backlog's own labels that fall due within it (its first days, with
        # 80,000 events) are left out, so that every load carries its steady share of labels
        # (about one a payment), the latency load included.
        history, history_labels = labels_of(history, set())
        known = {tx_id for tx_id, _, _ in transactions(history)}
        backlog, _ = labels_of(backlog, known)
        known |= {tx_id for tx_id, _, _ in transactions(backlog)}
        spare, _ = labels_of(spare, known)
        passthrough_load, _ = labels_of(backlog, set())  # its transactions only
        produce_rate = preload(main, {"tx": passthrough_in}, passthrough_load)
        for mode in mains.values():  # each mode its own copy, on its own topics
            if history:
                produce_rate = preload(mode, topics_of(mode), history)
                say(f"pre-loaded {warm:,} transactions of history at {produce_rate:,.0f}/s")
            else:  # no history to wait for: measured from the first to the last prediction
                preload(mode, topics_of(mode), backlog)
        naive_load, _ = labels_of(split_load(load, naive_events)[0], set())
        preload(naive, topics_of(naive), naive_load)

        passthrough_before, reference_before = passthrough(
            main, passthrough_in, passthrough_out, events, "before"
        )
        say(f"raw passthrough: {passthrough_before:,.0f} events/s")

        results = {
            g: _measure_mode(mains[g], pipeline, (history, history_labels, backlog, spare), probe)
            for g in modes
        }
        passthrough_after, reference_after = passthrough(
            main, passthrough_in, passthrough_out, events, "after"
        )
        say(f"raw passthrough again: {passthrough_after:,.0f} events/s")

        say(f"naive worker {naive.app_prefix} (batch 1, {naive_events:,} events)")
        naive_worker, naive_reader, naive_measured = measure_worker(
            naive, pipeline, naive_load, _NAIVE_FLOOR_RATE, probe=probe
        )
        naive_reader.close()
        naive_worker.stop()
        say(f"naive worker: {naive_measured['events_per_s']:,.0f} events/s")

    passthrough_rate = (passthrough_before + passthrough_after) / 2
    rates = {g: float(r["worker"]["events_per_s"]) for g, r in results.items()}
    worker_rate = rates[guarantee]
    eos = eos_ratio(rates)
    naive_rate = float(naive_measured["events_per_s"])
    return {
        "pipeline": pipeline,
        "events": events,
        "warm": {"days": warm_days, "events": warm},
        "partitions": settings.topics.partitions,
        "kafka_version": kafka_version(settings),
        "produce_rate": produce_rate,
        "passthrough": {
            "events_per_s": passthrough_rate,
            "before": passthrough_before,
            "after": passthrough_after,
        },
        "host_reference_us": {"before": reference_before, "after": reference_after},
        "learner": learner,
        "guarantee": guarantee,
        "modes": {
            g: {**r, "vs_passthrough": ratio(rates[g], passthrough_rate)}
            for g, r in results.items()
        },
        "worker": results[guarantee]["worker"],
        "naive": {
            "events": naive_events,
            "events_per_s": naive_rate,
            **({"host_probe": naive_measured["host_probe"]} if probe is not None else {}),
        },
        "pin_cpu": pin_cpu,
        "latency": results[guarantee]["latency"],
        "ratios": {
            "worker_vs_passthrough": ratio(worker_rate, passthrough_rate),
            "naive_vs_passthrough": ratio(naive_rate, passthrough_rate),
            "worker_vs_naive": ratio(worker_rate, naive_rate),
            **({} if eos is None else {"exactly_once_vs_at_least_once": eos}),
        },
        **({} if eos is None else {"eos_goal": EOS_GOAL}),
        "machine": machine_info(),
    }


def _mode_settings(
    settings: Settings,
    run_id: str,
    base: Path,
    guarantee: str,
    modes: tuple[str, ...],
    learner: str,
) -> Settings:
    """The pipeline worker's settings for one mode: its guarantee, and topics, groups, app
    prefix and state folder of its own, so that no mode reads another's offsets or state."""
    prefix = mode_prefix(run_id, guarantee, modes)
    home = base / ("pipeline" if prefix == run_id else prefix.removeprefix(f"{run_id}-"))
    main = isolated_settings(with_guarantee(settings, guarantee), prefix, home)
    return main.model_copy(
        update={"transactions": main.transactions.model_copy(update={"learner": learner})}
    )


_Loads = tuple[list[Item], list[Item], list[Item], list[Item]]  # history, labels, backlog, spare


def _measure_mode(
    main: Settings, pipeline: str, loads: _Loads, probe: HostProbe | None
) -> dict[str, Any]:
    """Steps 3 and 4 for one mode's worker: throughput over the backlog after the history
    (or over the pre-loaded backlog without one), then latency at half that rate."""
    history, history_labels, backlog, spare = loads
    say(
        f"pipeline worker {main.app_prefix} ({main.processing_guarantee}, "
        f"batch {main.worker.batch_size})"
    )
    worker, reader, measured = (
        measure_worker(
            main, pipeline, history, backlog=backlog, labels_after=history_labels, probe=probe
        )
        if history
        else measure_worker(main, pipeline, backlog, probe=probe)
    )
    try:
        say(
            f"pipeline worker: {measured['events_per_s']:,.0f} transactions/s, "
            f"{measured['learned']:,} of {measured['labels']:,} labels learned"
        )
        half = measured["events_per_s"] / 2
        count = max(1, min(len(transactions(backlog)) // 2, int(half * _LATENCY_SECONDS)))
        latency = measure_latency(main, worker, reader, split_load(spare, count)[0], half, probe)
    finally:
        reader.close()
        worker.stop()
    measured["peak_rss_mib"] = worker.peak_rss / MIB
    measured["batch_size"] = main.worker.batch_size
    say(
        f"latency p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms "
        f"(received: {latency['visible_p50_ms']:.0f} / {latency['visible_p99_ms']:.0f} ms)"
    )
    return {"worker": measured, "latency": latency, "app_prefix": main.app_prefix}
