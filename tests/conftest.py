"""Shared fixtures: settings isolated from the caller's environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Tests never assert on time: no per-example deadline, and a busy CI machine (a broker and
# workers share its two cores) must not fail a property test for being slow.
settings.register_profile("streamwise", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("streamwise")


@pytest.fixture(autouse=True)
def _no_streamwise_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they set, never the caller's STREAMWISE_*."""
    import os

    for name in list(os.environ):
        if name.startswith("STREAMWISE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"
