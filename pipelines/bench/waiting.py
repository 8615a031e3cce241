"""One deadline-and-poll loop for the bench and the integration tests.

The bench waits on processes it does not control (a worker's metrics, its predictions, a
probe's samples); each wait gives up after a time that says nothing about speed, with a
message that says what was missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    ready: Callable[[], T | None],
    timeout_s: float,
    *,
    interval_s: float = 0.1,
    what: str | Callable[[], str] = "a condition",
    error: Callable[[str], Exception] = TimeoutError,
    pause: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``ready`` every ``interval_s`` until it returns something true, and return that.

    After ``timeout_s`` raise ``error(message)``: ``what()`` if ``what`` is callable (the
    whole message, built from the state at that moment), else a line naming ``what``.
    ``ready`` may raise to stop early (a process that exited). ``pause`` sleeps between
    calls: a ``threading.Condition.wait`` wakes as soon as it is notified.

    >>> calls = iter([0, 0, 3])
    >>> wait_until(lambda: next(calls), 5.0, interval_s=0.0)
    3
    >>> wait_until(lambda: False, 0.0, what="nothing")
    Traceback (most recent call last):
    ...
    TimeoutError: gave up waiting for nothing after 0 s
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(
                what() if callable(what) else f"gave up waiting for {what} after {timeout_s:g} s"
            )
        pause(interval_s)
