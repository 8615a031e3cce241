"""The transparent baseline scorer: the Fraud Detection Handbook's amount rule.

A payment above ``limit`` is suspicious; the score rises linearly with the amount and
reaches the default alert threshold 0.5 exactly at the limit, so alerts say the obvious
thing a person can check. The fraud pipeline replaces it with windowed features, ONNX and
River; it stays as a reference and a fallback.

>>> import numpy as np
>>> AmountRule(limit=220.0).predict_batch(np.array([[0.0], [110.0], [220.0], [900.0]]))
array([0.  , 0.25, 0.5 , 1.  ])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AmountRule"]


@dataclass(frozen=True)
class AmountRule:
    """Score = amount / (2 * limit), clipped to [0, 1]. Column 0 of the input is the amount."""

    limit: float = 220.0

    @property
    def version(self) -> str:
        return f"amount-rule/1?limit={self.limit:g}"

    def predict_batch(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Scores for a ``[n, k]`` batch whose first column is the amount."""
        if features.ndim != 2 or features.shape[1] < 1:
            raise ValueError(f"expected a [n, k>=1] array, got shape {features.shape}")
        scores: npt.NDArray[np.float64] = np.clip(features[:, 0] / (2.0 * self.limit), 0.0, 1.0)
        return scores
