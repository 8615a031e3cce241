"""The transactions bench's report, and the table helpers the other benches' reports share.

Tables are drawn by :class:`rich.table.Table` without borders or colour, so that a report
reads the same in a terminal, a log and a pasted note.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any, Literal

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from pipelines.bench.guarantees import EOS_GOAL, verdict
from pipelines.bench.host import DRIFT, PROBE_EVERY_S, host_drift
from pipelines.kafka.bulk_io import CLIENT

__all__ = ["detail_lines", "format_report", "guarantee_lines", "table_lines"]

Justify = Literal["left", "right"]
_WIDTH = 400  # wider than any row: a report's lines are never wrapped


def table_lines(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[str]],
    justify: Sequence[Justify] = (),
    min_widths: Sequence[int] = (),
) -> list[str]:
    """``rows`` as aligned columns two spaces apart, indented by two, under ``header`` (or
    none); each column left-justified unless ``justify`` says otherwise, and at least as
    wide as ``min_widths`` says (a figure column that keeps its width from run to run)."""
    if header is None and not rows:
        return []
    table = Table(box=None, pad_edge=False, padding=(0, 1), show_header=header is not None)
    for i, name in enumerate(header or rows[0]):
        table.add_column(
            Text(name if header is not None else ""),
            justify=justify[i] if i < len(justify) else "left",
            min_width=min_widths[i] if i < len(min_widths) else None,
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a "[" in a cell is no markup
    out = io.StringIO()
    console = Console(file=out, width=_WIDTH, color_system=None, highlight=False, emoji=False)
    console.print(Padding(table, (0, 0, 0, 2)))
    return [line.rstrip() for line in out.getvalue().splitlines()]


def detail_lines(details: Sequence[tuple[str, str]]) -> list[str]:
    """``label  value`` rows, labels padded to one width, framed by blank lines."""
    return ["", *table_lines(None, details), ""]


def format_report(report: dict[str, Any]) -> str:
    """A readable, aligned table of :func:`pipelines.bench.transactions.run_bench`'s result."""
    w, n, lat, r = report["worker"], report["naive"], report["latency"], report["ratios"]
    m = report["machine"]
    warm = report.get("warm", {"days": 0, "events": 0})
    kafka = report["kafka_version"] or "(external cluster)"
    throughput = [
        (f"produce (pre-load, {CLIENT})", report["produce_rate"], None),
        (f"raw passthrough ({CLIENT})", report["passthrough"]["events_per_s"], 1.0),
        *_worker_rows(report),
        (
            f"naive worker (batch 1, {n['events']:,} events, empty state)",
            n["events_per_s"],
            r["naive_vs_passthrough"],
        ),
    ]
    lines = [
        f"streamwise bench: {report['pipeline']}, {report['events']:,} events after "
        f"{warm['days']} days of history ({warm['events']:,} events), "
        f"{report['partitions']} partitions, Kafka {kafka}",
        f"machine: {m['cpus']} CPUs, Python {m['python']}",
        "",
        *table_lines(
            ("throughput", "events/s", "vs passthrough"),
            [
                (label, f"{rate:,.0f}", "" if ratio is None else f"{ratio:.2f}")
                for label, rate, ratio in throughput
            ],
            ("left", "right", "right"),
            (0, 10),
        ),
        *guarantee_lines(report),
    ]
    measured = report.get("modes") or {}
    details = [
        *(
            [("pipeline worker figures", f"of the {report['guarantee']} run (both above)")]
            if len(measured) > 1
            else []
        ),
        ("pipeline worker vs naive", f"{r['worker_vs_naive']:.2f}x"),
        (
            "pipeline worker wall time",
            f"{w['wall_s']:,.1f} s (start, history included, to last prediction)",
        ),
        ("pipeline worker peak RSS", f"{w['peak_rss_mib']:,.1f} MiB (with children)"),
        (
            "pipeline worker CPU",
            f"{w['cpu_us_per_event']:,.0f} µs an event; busy {w['cpu_busy']:.0%} of one core "
            "(all threads, first send to last prediction)",
        ),
        *_label_lines(w),
        *_learner_lines(report),
        (
            "latency load",
            f"{lat['events']:,} events paced at {lat['rate']:,.0f}/s (half the worker's rate)",
        ),
        (
            "latency p50 / p99 / max",
            f"{lat['p50_ms']:,.0f} / {lat['p99_ms']:,.0f} / {lat['max_ms']:,.0f} ms",
        ),
        ("worker CPU under that load", f"busy {lat.get('cpu_busy', math.nan):.0%} of one core"),
        *_host_lines(report),
        *_probe_lines(report),
    ]
    lines += detail_lines(details)
    drifts = [
        host_drift(pair.get("before", math.nan), pair.get("after", math.nan))
        for pair in (report.get("host_reference_us", {}), report["passthrough"])
    ]
    if any(abs(d) > DRIFT for d in drifts):
        lines.append(
            "The host's speed changed during this run (host reference or passthrough by more "
            f"than {DRIFT:.0%} from before the worker to after it): compare it with care."
        )
    lines.append(
        "Numbers from one run on this machine (broker and bench on the same host); "
        "compare them, don't quote them."
    )
    return "\n".join(lines)


def _worker_rows(report: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    """The throughput table's pipeline worker row: one a mode if the run measured modes."""
    w, r = report["worker"], report["ratios"]
    modes: dict[str, Any] = report.get("modes") or {}
    if not modes:  # a report from before --guarantee
        label = f"pipeline worker (batch {w.get('batch_size', '?')})"
        return [(label, w["events_per_s"], r["worker_vs_passthrough"])]
    return [
        (
            f"pipeline worker (batch {m['worker'].get('batch_size', '?')}, {name})",
            m["worker"]["events_per_s"],
            m.get("vs_passthrough"),
        )
        for name, m in modes.items()
    ]


def guarantee_lines(report: dict[str, Any]) -> list[str]:
    """A row per delivery guarantee measured (throughput, latency, memory, CPU), and
    exactly-once's throughput over at-least-once's against the goal, if both ran."""
    modes: dict[str, Any] = report.get("modes") or {}
    if not modes:
        return []
    base = modes.get("at_least_once", {}).get("worker", {}).get("events_per_s")
    rows = []
    for name, m in modes.items():
        w, lat = m["worker"], m["latency"]
        vs = "" if not base else f"{w['events_per_s'] / base:.2f}"
        rows.append(
            (
                name,
                f"{w['events_per_s']:,.0f}",
                vs,
                f"{lat['p50_ms']:,.0f} / {lat['p99_ms']:,.0f}",
                _pair(lat, "visible_p50_ms", "visible_p99_ms"),
                f"{w['peak_rss_mib']:,.0f}",
                f"{w['cpu_us_per_event']:,.0f}",
            )
        )
    lines = [
        "",
        *table_lines(
            (
                "guarantee",
                "payments/s",
                "vs at_least_once",
                "latency p50 / p99 ms",
                "received p50 / p99 ms",
                "peak RSS MiB",
                "CPU µs/payment",
            ),
            rows,
            ("left", "right", "right", "right", "right", "right", "right"),
        ),
    ]
    lines.append(
        "  latency: from the send to the prediction's timestamp, and to when a read_committed "
        "reader received it (under exactly_once: after its commit)"
    )
    eos = report["ratios"].get("exactly_once_vs_at_least_once")
    if eos is not None:
        goal = float(report.get("eos_goal", EOS_GOAL))
        lines.append(
            f"  exactly_once / at_least_once throughput: {eos:.2f} ({verdict(eos, goal)}; "
            "at_least_once ran first, on the same load)"
        )
    return lines


def _pair(part: dict[str, Any], first: str, second: str) -> str:
    """``a / b`` of two figures of ``part``, or a dash if it has none (an older report)."""
    if first not in part or second not in part:
        return "-"
    return f"{part[first]:,.0f} / {part[second]:,.0f}"


def _label_lines(worker: dict[str, Any]) -> list[tuple[str, str]]:
    """The labels that came with the measured payments, and how many the learner took."""
    if "labels" not in worker:
        return []
    after = worker.get("learning_after_s", 0.0)
    return [
        (
            "labels in the measured load",
            f"{worker['labels']:,} sent, {worker['learned']:,} learned "
            + (
                f"(the learner finished {after:.1f} s after the last prediction; the span "
                "runs to then)"
                if after > 0
                else "(by the last prediction)"
            ),
        )
    ]


def _learner_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the learner ran and what its process used, if it had one of its own."""
    own = report["worker"].get("learner_process")  # measured only for --learner separate
    if own is None:
        return []
    return [
        (
            "learner",
            "a process of its own (--learner separate): not in the worker's CPU or RSS",
        ),
        (
            "learner process",
            f"busy {own['cpu_busy']:.0%} of one core (first send to last prediction); "
            f"peak RSS {own['peak_rss_mib']:,.1f} MiB",
        ),
    ]


def _host_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The passthrough before and after the worker, and the host reference, if measured."""
    lines = []
    p = report["passthrough"]
    if "before" in p and "after" in p:
        lines.append(
            (
                "raw passthrough before / after",
                f"{p['before']:,.0f} / {p['after']:,.0f} events/s "
                "(the worker is compared with their mean)",
            )
        )
    ref = report.get("host_reference_us")
    if ref:
        lines.append(
            (
                "host reference",
                f"{ref['before']:,.0f} / {ref['after']:,.0f} µs before each passthrough "
                "(a fixed pure-Python loop, best of 20; lower is faster)",
            )
        )
    return lines


def _probe_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the workers were pinned, and how fast the host probe found that CPU meanwhile."""
    cpu = report.get("pin_cpu")
    if cpu is None:
        return []

    def reading(part: dict[str, Any]) -> str:
        probe = part.get("host_probe") or {}
        if not probe.get("loops"):
            return "no reading"
        return (
            f"mean {probe.get('mean_us', math.nan):,.0f} µs, median {probe['median_us']:,.0f} "
            f"({probe['p10_us']:,.0f}-{probe['p90_us']:,.0f}), {probe['loops']} loops"
        )

    return [
        ("workers pinned", f"to CPU {cpu}, all their threads (the bench and broker are not)"),
        (
            "host probe on that CPU",
            f"the reference loop's CPU time every {PROBE_EVERY_S:g} s: mean, median (10th-90th "
            "percentile); lower is faster",
        ),
        ("  during the backlog", reading(report["worker"])),
        ("  under the latency load", reading(report["latency"])),
        ("  naive worker", reading(report["naive"])),
    ]
