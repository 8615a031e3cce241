"""Per-customer and per-terminal sliding windows for the Fraud Detection Handbook features.

State is a short time-sorted list of the entity's own events still inside the horizon (the
longest window, plus the label delay for terminals, plus the grace period). Windows are
millisecond-exact, which day buckets are not at their edges; with the handbook's rates (a
customer makes at most about four payments a day, a terminal sees about one) a customer holds
about 60 events (16 bytes each when packed) and a terminal about 40 (24 bytes each). An entity
with thousands of events a day would want day buckets plus raw events near the window edges
instead. One event is one insertion (an append when in order) and one eviction of the events
that fell out of the horizon; the 1, 7 and 30-day windows are read from the same list with a
binary search each, not kept as separate states.

Exactness: counts are integers; sums use :func:`math.fsum`, the correctly rounded sum, so a
mean does not depend on the order the amounts are added in and a batch computation that also
uses ``fsum`` agrees with ``==``.

Out-of-order events: an event at most ``grace_ms`` older than the newest event of the entity
is inserted in time order; its features count the events already held with a time up to its
own (ties: those that arrived first). Features already returned for later events are not
revised. An older event is :class:`Late`, returned rather than raised, and is not recorded.

The package: :mod:`~processors.fraud.windows.config` (:class:`FeatureConfig`, :class:`Late`),
:mod:`~processors.fraud.windows.codec` (the packed form both windows are stored in),
:mod:`~processors.fraud.windows.customer` and :mod:`~processors.fraud.windows.terminal`.

>>> config = FeatureConfig()
>>> customer = CustomerWindow()
>>> customer.add(0, 10.0, config)
[1.0, 10.0, 1.0, 10.0, 1.0, 10.0]
>>> customer.add(DAY_MS, 20.0, config)  # the first payment is exactly one day old: out of 1d
[1.0, 20.0, 2.0, 15.0, 2.0, 15.0]
>>> terminal = TerminalWindow()
>>> terminal.add_transaction(1, 0, config)
[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
>>> terminal.add_label(1, None, 7 * DAY_MS, True, config)
'applied'
>>> terminal.add_transaction(2, 7 * DAY_MS, config)  # tx 1 is exactly one delay old
[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

from processors.fraud.windows.config import DAY_MS, FeatureConfig, Late
from processors.fraud.windows.customer import CustomerWindow
from processors.fraud.windows.terminal import LabelStatus, TerminalWindow

__all__ = [
    "DAY_MS",
    "CustomerWindow",
    "FeatureConfig",
    "LabelStatus",
    "Late",
    "TerminalWindow",
]
