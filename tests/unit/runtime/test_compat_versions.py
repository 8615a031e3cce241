"""The worker's version check: faust-streaming and aiokafka must be the versions the runtime's
hooks into their internals were checked on, unless a setting overrides it (loudly)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import pytest

from pipelines.runtime import compat, worker
from pipelines.settings import Settings

OVERRIDE = "STREAMWISE_WORKER__ALLOW_UNCHECKED_VERSIONS"


def installed(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    """Make compat read these versions (``faust_streaming="0.16.0"``; ``None``: not installed)
    and the checked one of every other distribution it asks about."""
    real: Callable[[str], str] = compat.metadata.version

    def version(name: str) -> str:
        key = name.replace("-", "_")
        if key in versions:
            found = versions[key]
            if found is None:
                raise compat.metadata.PackageNotFoundError(name)
            return found
        return compat.CHECKED.get(name) or real(name)

    monkeypatch.setattr(compat.metadata, "version", version)


def test_the_checked_versions_are_accepted_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    installed(monkeypatch)
    with caplog.at_level(logging.WARNING):
        compat.check_versions(allow_unchecked=False)
    assert not caplog.records


def test_an_unknown_version_is_refused_naming_both_versions_and_the_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, faust_streaming="0.16.0")
    with pytest.raises(SystemExit) as refused:
        compat.check_versions(allow_unchecked=False)
    message = str(refused.value)
    assert "faust-streaming 0.16.0 is installed" in message
    assert f"checked on faust-streaming {compat.FAUST_STREAMING}" in message
    assert OVERRIDE in message
    assert "aiokafka" not in message  # only what differs is named


def test_a_missing_distribution_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, aiokafka=None)
    with pytest.raises(SystemExit, match=r"aiokafka \(not installed\)"):
        compat.check_versions(allow_unchecked=False)


def test_the_override_starts_with_a_loud_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    installed(monkeypatch, aiokafka="0.15.0")
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        compat.check_versions(allow_unchecked=True)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "UNCHECKED VERSIONS" in record.getMessage()
    assert (
        f"aiokafka 0.15.0 is installed, the runtime was checked on aiokafka {compat.AIOKAFKA}"
        in (record.getMessage())
    )


class Built(Exception):
    """The worker got past its checks to building the app."""


def test_run_worker_refuses_before_it_touches_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, faust_streaming="0.16.0")
    touched: list[str] = []
    monkeypatch.setattr(worker, "_ensure_topics", lambda settings: touched.append("topics"))
    with pytest.raises(SystemExit, match="refuses to start"):
        worker.run_worker(Settings(), "transactions")
    assert touched == []


def test_run_worker_goes_on_with_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, faust_streaming="0.16.0")
    monkeypatch.setenv(OVERRIDE, "true")

    def build(*_: object) -> None:
        raise Built

    monkeypatch.setattr(worker, "_ensure_topics", lambda settings: None)
    monkeypatch.setattr(worker, "build_app", build)
    before = sys.getswitchinterval()
    try:
        with pytest.raises(Built):
            worker.run_worker(Settings(), "transactions")
    finally:
        sys.setswitchinterval(before)
