"""What every bench shares: a run of its own (settings, topics, folder), and its cleanup.

A run's topics, consumer groups, app prefix and state folder are named ``bench-<8 hex>``,
so that a bench runs beside a live deployment and leaves nothing behind but, if it failed,
the worker logs of its folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipelines.kafka.admin import TopicSpec, client_config, create_topics, topic_specs
from pipelines.settings import Settings

__all__ = [
    "FLOOR_RATE",
    "MIB",
    "REPO",
    "BenchError",
    "child_env",
    "create_run_topics",
    "ensure_broker",
    "free_port",
    "isolated_settings",
    "kafka_version",
    "ratio",
    "run_scope",
    "say",
    "throughput",
    "timeout_for",
]

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
#: Waits give up after max(120 s, events / floor rate): generous against the rates seen.
FLOOR_RATE = 200.0


class BenchError(RuntimeError):
    """A bench step did not complete; the message says which and why."""


def say(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment without its own settings, with ``settings`` instead."""
    prefix = str(settings.model_config.get("env_prefix") or "").upper()
    env = {k: v for k, v in os.environ.items() if not (prefix and k.upper().startswith(prefix))}
    env.update(settings.to_env())
    return env


def free_port(host: str) -> int:
    """A TCP port nothing listens on at ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def isolated_settings(settings: Settings, prefix: str, home: Path, **worker: Any) -> Settings:
    """``settings`` with every topic, the app prefix, the web port and home made private."""
    topics = settings.topics
    names = {k: f"{prefix}-{v}" for k, v in topics.model_dump().items() if isinstance(v, str)}
    worker_update = {"web_port": free_port(settings.worker.web_host), **worker}
    return settings.model_copy(
        update={
            "app_prefix": prefix,
            "home": home.resolve(),
            "topics": topics.model_copy(update=names),
            "worker": settings.worker.model_copy(update=worker_update),
        }
    )


def create_run_topics(settings: Settings, extra: Sequence[str] = ()) -> None:
    """The pipelines' topics of ``settings``, and ``extra`` ones made like the first."""
    specs = topic_specs(settings)
    like = specs[0]
    specs += [TopicSpec(name, like.partitions, like.config, "bench") for name in extra]
    create_topics(settings, specs)


def _delete_run(settings: Settings, run_id: str) -> None:
    """Delete every topic and consumer group of this run (best effort)."""
    from kafka import KafkaAdminClient

    admin: Any = None
    try:
        admin = KafkaAdminClient(**client_config(settings), client_id=f"{run_id}-admin")
        mine = sorted(t for t in admin.list_topics() if t.startswith(f"{run_id}-"))
        if mine:
            admin.delete_topics(mine, timeout_ms=30_000)
        groups = [str(g.get("group_id", "")) for g in admin.list_groups()]
        own = [g for g in groups if g.startswith(f"{run_id}-")]
        if own:
            admin.delete_groups(own)
        say(f"deleted {len(mine)} topics and {len(own)} consumer groups of {run_id}")
    except Exception as exc:  # cleanup must not hide the result or the real error
        say(f"could not delete all topics of {run_id}: {type(exc).__name__}: {exc}")
    finally:
        if admin is not None:
            admin.close()


@contextlib.contextmanager
def run_scope(settings: Settings, run_id: str, base: Path) -> Iterator[None]:
    """Delete the run's topics afterwards; keep its folder (worker logs) only if it failed."""
    try:
        yield
    except BaseException:
        say(f"kept {base} (worker logs) for inspection")
        raise
    else:
        shutil.rmtree(base, ignore_errors=True)
    finally:
        _delete_run(settings, run_id)


def ensure_broker(settings: Settings) -> None:
    """Start the local broker if ``settings`` use it (a no-op when it runs)."""
    if settings.uses_local_broker:
        from pipelines.kafka.broker import LocalBroker

        LocalBroker(settings).start()


def kafka_version(settings: Settings) -> str | None:
    """The local broker's Kafka version; ``None`` for an external cluster."""
    if not settings.uses_local_broker:
        return None
    from pipelines.kafka.broker import LocalBroker

    return LocalBroker(settings).version()


def timeout_for(events: int, floor_rate: float = FLOOR_RATE) -> float:
    """How long a wait for ``events`` may take: far longer than any rate seen needs."""
    return max(120.0, events / floor_rate)


def throughput(stamps: Sequence[int]) -> tuple[float, int]:
    """(events/s between the first and last timestamp, the last timestamp in ms)."""
    first, last = min(stamps), max(stamps)
    return (len(stamps) - 1) / max((last - first) / 1000, 1e-3), last


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is not positive."""
    return a / b if b > 0 else math.nan
