"""Running per-customer spending statistics and the reasons an alert gives.

The state is two numbers per customer (count, total), small enough to live in a Faust
table with a changelog; updating it is one call per event.

>>> s = CustomerStats().add(20.0).add(40.0)
>>> s.count, s.mean
(2, 30.0)
>>> for reason in explain(amount=300.0, limit=220.0, before=s):
...     print(reason)
amount 300.00 is above the rule limit 220.00
amount is 10.0x the mean 30.00 of 2 earlier payments
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CustomerStats", "explain"]


@dataclass(frozen=True, slots=True)
class CustomerStats:
    """Count and total of a customer's payments so far."""

    count: int = 0
    total: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def add(self, amount: float) -> CustomerStats:
        return CustomerStats(self.count + 1, self.total + amount)

    def to_list(self) -> list[float]:
        return [float(self.count), self.total]

    @classmethod
    def from_list(cls, value: object) -> CustomerStats:
        """Restore from the ``[count, total]`` form kept in the table; anything else is empty."""
        if isinstance(value, list) and len(value) == 2:
            return cls(int(value[0]), float(value[1]))
        return cls()


def explain(amount: float, limit: float, before: CustomerStats) -> list[str]:
    """Human-readable reasons for an amount-rule alert, given the customer's earlier history."""
    reasons = []
    if amount > limit:
        reasons.append(f"amount {amount:.2f} is above the rule limit {limit:.2f}")
    else:
        reasons.append(f"amount {amount:.2f} is {amount / limit:.0%} of the rule limit {limit:.2f}")
    if before.count and before.mean > 0:
        ratio = amount / before.mean
        reasons.append(
            f"amount is {ratio:.1f}x the mean {before.mean:.2f} of {before.count} earlier payments"
        )
    else:
        reasons.append("first payment seen from this customer")
    return reasons
