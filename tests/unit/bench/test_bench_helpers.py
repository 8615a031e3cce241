"""The bench's small helpers: waiting, reading a metrics page, drawing a table."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from pipelines.bench.report import detail_lines, table_lines
from pipelines.bench.scrape import sample_total, samples
from pipelines.bench.waiting import wait_until


def test_wait_until_returns_the_first_true_value_and_stops_asking() -> None:
    answers = iter([None, 0, (7, None), "never asked"])
    assert wait_until(lambda: next(answers), 5.0, interval_s=0.0) == (7, None)
    assert next(answers) == "never asked"


def test_wait_until_gives_up_with_the_message_of_the_moment() -> None:
    state = {"seen": 0}

    def ready() -> bool:
        state["seen"] += 1
        return False

    with pytest.raises(RuntimeError, match=r"^saw [1-9]\d* times$"):
        wait_until(
            ready,
            0.0,
            interval_s=0.0,
            what=lambda: f"saw {state['seen']} times",
            error=RuntimeError,
        )
    with pytest.raises(TimeoutError, match="gave up waiting for the moon after 0 s"):
        wait_until(lambda: None, 0.0, what="the moon")


def test_wait_until_stops_when_the_check_raises_and_pauses_with_the_given_wait() -> None:
    pauses: list[float] = []
    looks = iter([False, False, True])
    assert wait_until(lambda: next(looks), 60.0, interval_s=0.25, pause=pauses.append)
    assert pauses == [0.25, 0.25]

    def exited() -> bool:
        raise AssertionError("the worker exited")

    with pytest.raises(AssertionError, match="exited"):
        wait_until(exited, 60.0)


def _page() -> str:
    registry = CollectorRegistry()
    labels = Counter("streamwise_labels", "labels", ["step", "status"], registry=registry)
    labels.labels("score", "ok").inc(3)
    labels.labels("score", "early").inc(2)
    learned = Gauge("streamwise_learner_examples", "learned", ["step"], registry=registry)
    learned.labels("learn").set(4)
    Gauge("streamwise_learner_examples_unlabelled", "none", registry=registry).set(100)
    return generate_latest(registry).decode()


def test_sample_totals_come_from_the_parsed_page() -> None:
    page = _page()
    assert sample_total(page, "streamwise_labels_total", having=("step",)) == 5.0
    assert sample_total(page, "streamwise_labels_total", status="early") == 2.0
    assert sample_total(page, "streamwise_labels_total", step="other") == 0.0
    assert sample_total(page, "streamwise_learner_examples", having=("step",)) == 4.0
    # a counter's family is not one of its samples, and a label it lacks excludes it
    assert sample_total(page, "streamwise_labels") == 0.0
    assert sample_total(page, "streamwise_learner_examples_unlabelled", having=("step",)) == 0.0
    assert {s.name for s in samples(page)} >= {
        "streamwise_labels_total",
        "streamwise_labels_created",
        "streamwise_learner_examples",
    }


def test_a_label_value_with_a_brace_or_space_is_read_whole() -> None:
    page = 'streamwise_events_total{step="a b}",outcome="ok"} 2.0\n'
    assert sample_total(page, "streamwise_events_total", step="a b}") == 2.0


def test_tables_align_columns_and_keep_every_cell_whole() -> None:
    lines = table_lines(
        ("name", "rate"),
        [("short", "1"), ("a much longer label [with brackets]", "12,345")],
        ("left", "right"),
        (0, 10),
    )
    label = "a much longer label [with brackets]"  # no markup: printed as it is
    assert lines == [
        f"  {'name':<{len(label)}}  {'rate':>10}",
        f"  {'short':<{len(label)}}  {'1':>10}",
        f"  {label}  {'12,345':>10}",
    ]
    long = "x" * 300
    assert detail_lines([("label", long), ("  indented", "v")]) == [
        "",
        f"  label       {long}",
        "    indented  v",
        "",
    ]
