"""Where the fraud learner runs: in the transactions workers, or in a process of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import faust
import pytest

import pipelines.kafka.admin
from pipelines.fraud.learning import LEARN_STEP
from pipelines.runtime.worker import PIPELINES, build_app
from pipelines.settings import Settings

Build = Callable[[Settings, str], faust.App]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Building the apps creates the internal topics; there is no broker in these tests.
    monkeypatch.setattr(pipelines.kafka.admin, "create_topics", lambda *args, **kwargs: None)
    return Settings(home=tmp_path / "home")


@pytest.fixture
def build() -> Iterator[Build]:
    """``build_app``, closing the event loop each app opened to declare its agents."""
    apps: list[faust.App] = []

    def built(settings: Settings, pipeline: str) -> faust.App:
        apps.append(build_app(settings, pipeline))
        return apps[-1]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield built
    for app in apps:  # the consumer's thread got a loop of its own when it was made
        app.consumer._thread.thread_loop.close()
    loop.close()
    asyncio.set_event_loop(None)


def _placed(settings: Settings, learner: str) -> Settings:
    tx = settings.transactions.model_copy(update={"learner": learner})
    return settings.model_copy(update={"transactions": tx})


def test_inline_the_transactions_worker_runs_every_stage(settings: Settings, build: Build) -> None:
    app = build(settings, "transactions")
    stages = {"customer-features", "route-labels", "score-transactions", LEARN_STEP}
    assert set(app.agents) == stages


def test_separate_the_learner_runs_only_in_its_own_app(settings: Settings, build: Build) -> None:
    separate = _placed(settings, "separate")
    scorer = build(separate, "transactions")
    assert LEARN_STEP not in scorer.agents
    learner = build(separate, "fraud-learner")
    assert set(learner.agents) == {LEARN_STEP}
    # A consumer group (and a state folder) of its own: the scorers' group never has it.
    assert learner.conf.id == f"{settings.app_prefix}-fraud-learner" != scorer.conf.id
    assert "fraud-learner" in PIPELINES  # so `streamwise worker fraud-learner` offers it


def test_a_learner_process_refuses_to_start_beside_inline_learners(
    settings: Settings, build: Build
) -> None:
    with pytest.raises(SystemExit, match="needs STREAMWISE_TRANSACTIONS__LEARNER=separate"):
        build(settings, "fraud-learner")
