"""Model wrappers: every scorer exposes ``version`` and ``predict_batch(array) -> array``."""
