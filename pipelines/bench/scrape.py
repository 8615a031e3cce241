"""A worker's ``/metrics`` page, read with prometheus_client's own text parser.

The bench and the integration tests count what a worker did from its metrics; parsing the
exposition format by hand (splitting lines at ``{`` and spaces) breaks on escaped label
values, and the library that writes the page also reads it.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["metrics_page", "sample_total", "samples"]


def metrics_page(host: str, port: int, timeout_s: float = 5.0) -> str | None:
    """The text of ``http://host:port/metrics``, or ``None`` while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as page:
            return bytes(page.read()).decode()
    except OSError:
        return None


def samples(text: str) -> list[Sample]:
    """Every sample of a page, in its order (``_total`` and ``_created`` ones included)."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def sample_total(text: str, name: str, *, having: tuple[str, ...] = (), **labels: str) -> float:
    """The sum of the samples called ``name`` (a counter's ``..._total``, not its family)
    whose labels include ``labels`` and a label of each name in ``having``; 0 without any.

    >>> page = 'events_total{step="a",outcome="ok"} 2.0\\nevents_total{step="b"} 3.0\\n'
    >>> sample_total(page, "events_total", outcome="ok"), sample_total(page, "events_total")
    (2.0, 5.0)
    """
    return sum(
        (
            s.value
            for s in samples(text)
            if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())
            and all(k in s.labels for k in having)
        ),
        0.0,
    )
