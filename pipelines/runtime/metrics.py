"""Prometheus metrics for one worker, labelled by step name, served on ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["StepMetrics"]


@dataclass
class StepMetrics:
    """The counters every step reports. One registry per app keeps tests independent."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(
            "streamwise_events", "Events handled by a step", ["step", "outcome"], registry=r
        )
        self.dead_letters = Counter(
            "streamwise_dead_letters",
            "Events sent to dead-letters",
            ["step", "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "streamwise_dropped",
            "Events dropped by a failure policy (STREAMWISE_POLICIES__*), counted, not sent",
            ["step", "reason"],
            registry=r,
        )
        self.alerts = Counter("streamwise_alerts", "Alerts emitted", ["step", "kind"], registry=r)
        self.batch_size = Histogram(
            "streamwise_batch_size",
            "Events per micro-batch",
            ["step"],
            registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.batch_seconds = Histogram(
            "streamwise_batch_seconds",
            "Wall time to process one micro-batch",
            ["step"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.event_time_lag = Gauge(
            "streamwise_event_time_lag_seconds",
            "Emit time minus the newest event time of the last batch",
            ["step"],
            registry=r,
        )

        self.model_reloads = Counter(
            "streamwise_model_reloads",
            "Model files reloaded while running, by outcome",
            ["step", "outcome"],
            registry=r,
        )
        self.labels = Counter(
            "streamwise_labels",
            "Labels applied to window state, by status",
            ["step", "status"],
            registry=r,
        )
        self.examples = Counter(
            "streamwise_training_examples",
            "Labels joined to their scored features and sent to the learner",
            ["step"],
            registry=r,
        )
        self.learned = Gauge(
            "streamwise_learner_examples",
            "Labelled examples the online learner has learned from",
            ["step"],
            registry=r,
        )

        self.model_quality = Gauge(
            "streamwise_model_quality",
            "Live model quality from labelled predictions (learner stage; NaN: undefined)",
            ["model", "metric", "scope"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
