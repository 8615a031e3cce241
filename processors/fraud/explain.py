"""Why an alert fired, and pseudonyms for the identifiers consumers must not see.

:func:`top_reasons` ranks features by their contribution to the online learner's log-odds,
``weight * (x - mean) / std`` with the learner's running scaler statistics: for a linear
model that is the exact split of the score, so the reasons say what pushed it up. The tree
model is not decomposed (no per-feature attribution ships with onnxruntime).

:class:`Pseudonymizer` replaces ids by a keyed hash (HMAC-SHA256, 16 hex digits), stable for a
key, so consumers can still group by customer without learning who it is.

>>> stats = {"TX_AMOUNT": (50.0, 25.0, 0.8), "TX_DURING_NIGHT": (0.1, 0.3, 2.0)}
>>> top_reasons({"TX_AMOUNT": 300.0, "TX_DURING_NIGHT": 0.0}, stats)
['TX_AMOUNT = 300 (typical 50; +8.00 log-odds)']
>>> Pseudonymizer(None).entity("customer", 42)
'customer:42'
>>> Pseudonymizer(b"k").entity("customer", 42)
'customer:~7670fbbf6dad21bc'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["LearnerStats", "Pseudonymizer", "top_reasons"]

LearnerStats = Mapping[str, tuple[float, float, float]]  # feature -> (mean, std, weight)


def top_reasons(features: Mapping[str, float], stats: LearnerStats | None, k: int = 3) -> list[str]:
    """Up to ``k`` features that raised the learner's log-odds most, most first."""
    if not stats:
        return ["no learner statistics yet (no labels learned)"]
    contributions = []
    for name, value in features.items():
        if name not in stats:
            continue
        mean, std, weight = stats[name]
        contribution = weight * (value - mean) / std if std > 0 else 0.0
        if contribution > 0:
            contributions.append((contribution, name, value, mean))
    contributions.sort(reverse=True)
    return [
        f"{name} = {value:.4g} (typical {mean:.4g}; +{c:.2f} log-odds)"
        for c, name, value, mean in contributions[:k]
    ]


class Pseudonymizer:
    """``kind:id``, or ``kind:~<hmac>`` when a key is set."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def entity(self, kind: str, entity_id: int) -> str:
        if self.key is None:
            return f"{kind}:{entity_id}"
        digest = hmac.new(self.key, f"{kind}:{entity_id}".encode(), hashlib.sha256)
        return f"{kind}:~{digest.hexdigest()[:16]}"
