"""Settings: defaults, environment, validation, masking, immutability."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from pipelines.kafka.admin import client_config, topic_specs
from pipelines.settings import Settings


def test_defaults_use_the_local_broker() -> None:
    s = Settings()
    assert s.uses_local_broker
    assert s.broker_url == "kafka://127.0.0.1:19092"
    assert s.bootstrap_servers == ["127.0.0.1:19092"]
    assert s.processing_guarantee == "at_least_once"


def test_environment_with_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWISE_BROKER", "kafka://a:9092;kafka://b:9093")
    monkeypatch.setenv("STREAMWISE_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("STREAMWISE_TOPICS__ALERTS", "fraud-alerts")
    monkeypatch.setenv("STREAMWISE_PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("STREAMWISE_TRANSACTIONS__ALERT_THRESHOLD", "0.8")
    s = Settings()
    assert not s.uses_local_broker
    assert s.bootstrap_servers == ["a:9092", "b:9093"]
    assert s.topics.partitions == 12
    assert s.topics.alerts == "fraud-alerts"
    assert s.processing_guarantee == "exactly_once"
    assert s.transactions.alert_threshold == 0.8
    assert {spec.name for spec in topic_specs(s)} >= {"fraud-alerts", "transactions"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMWISE_BROKER", "http://host:9092"),
        ("STREAMWISE_BROKER", "kafka://host"),
        ("STREAMWISE_TOPICS__PARTITIONS", "0"),
        ("STREAMWISE_PROCESSING_GUARANTEE", "at_most_once"),
        ("STREAMWISE_TRANSACTIONS__ALERT_THRESHOLD", "1.5"),
        ("STREAMWISE_WORKER__WEB_PORT", "70000"),
        ("STREAMWISE_WORKER__SWITCH_INTERVAL_S", "0"),
        ("STREAMWISE_APP_PREFIX", "has space"),
    ],
)
def test_invalid_values_fail_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.broker = "kafka://x:1"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.topics.partitions = 3  # type: ignore[misc]


def test_secrets_are_masked_when_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWISE_SECURITY__PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMWISE_SECURITY__SASL_USERNAME", "alice")
    monkeypatch.setenv("STREAMWISE_SECURITY__SASL_PASSWORD", "hunter2")
    s = Settings()
    printed = dict(s.describe())
    assert printed["security.sasl_password"] == "**********"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.describe())
    config = client_config(s)
    assert config["sasl_plain_password"] == "hunter2"
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert isinstance(s.security.sasl_password, SecretStr)


def test_to_env_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        broker="kafka://h:1",
        app_prefix="t1",
        processing_guarantee="exactly_once",
        topics={"transactions": "tx-x", "partitions": 3},  # type: ignore[arg-type]
        security={"protocol": "SASL_SSL", "sasl_password": "pw"},  # type: ignore[arg-type]
    )
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_a_worker_sets_its_thread_switch_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_worker sets the GIL's switch interval from settings before it builds the app."""
    import sys

    from pipelines.runtime import worker

    class Built(Exception):
        pass

    def stop(*_: object) -> None:
        raise Built

    monkeypatch.setattr(worker, "_ensure_topics", lambda settings: None)
    monkeypatch.setattr(worker, "build_app", stop)
    monkeypatch.setenv("STREAMWISE_WORKER__SWITCH_INTERVAL_S", "0.002")
    before = sys.getswitchinterval()
    try:
        with pytest.raises(Built):
            worker.run_worker(Settings(), "transactions")
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
