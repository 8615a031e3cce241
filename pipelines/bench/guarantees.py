"""Which delivery guarantees a bench run measures, and how exactly-once compares.

``exactly_once`` is never measured alone: the at-least-once worker runs in the same run, on
the same load and host state, as the baseline its throughput is divided by (quix-streams
states exactly-once costs "at worst 10 %", hence the goal :data:`EOS_GOAL`). Each mode runs
on topics, consumer groups and an app prefix of its own (``<run>-alo``, ``<run>-eos``), so
neither sees the other's offsets, transactions or state.

>>> modes_for("exactly_once")
('at_least_once', 'exactly_once')
>>> verdict(0.93)
'goal >= 0.90 met'
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pipelines.settings import Settings

__all__ = [
    "EOS_GOAL",
    "GUARANTEES",
    "Guarantee",
    "eos_ratio",
    "mode_prefix",
    "modes_for",
    "verdict",
    "with_guarantee",
]

Guarantee = Literal["at_least_once", "exactly_once"]
GUARANTEES: tuple[Guarantee, ...] = get_args(Guarantee)
#: exactly_once's throughput should be at least this share of at_least_once's.
EOS_GOAL = 0.9
_SHORT = {"at_least_once": "alo", "exactly_once": "eos"}


def modes_for(guarantee: str) -> tuple[str, ...]:
    """The modes a run measures, baseline first: exactly_once brings its baseline along."""
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {', '.join(GUARANTEES)}, not {guarantee!r}")
    if guarantee == "exactly_once":
        return ("at_least_once", "exactly_once")
    return (guarantee,)


def mode_prefix(run_id: str, guarantee: str, modes: tuple[str, ...]) -> str:
    """The app and topic prefix of a mode: the run's own when it measures one mode (as
    before there were modes), else ``<run>-alo`` / ``<run>-eos``; always under the run's
    prefix, so that its cleanup deletes them."""
    return run_id if len(modes) == 1 else f"{run_id}-{_SHORT[guarantee]}"


def with_guarantee(settings: Settings, guarantee: str) -> Settings:
    """``settings`` whose workers run under ``guarantee``."""
    return settings.model_copy(update={"processing_guarantee": guarantee})


def eos_ratio(rates: dict[str, float]) -> float | None:
    """exactly_once's throughput over at_least_once's; ``None`` unless both were measured
    (NaN if the baseline is not positive)."""
    if "exactly_once" not in rates or "at_least_once" not in rates:
        return None
    base = rates["at_least_once"]
    return rates["exactly_once"] / base if base > 0 else math.nan


def verdict(ratio: float, goal: float = EOS_GOAL) -> str:
    """Whether ``ratio`` meets the goal, and by how many points it misses it if not."""
    if math.isnan(ratio):
        return "no baseline"
    if ratio >= goal:
        return f"goal >= {goal:.2f} met"
    return f"below the goal of {goal:.2f} by {(goal - ratio) * 100:.0f} points"
