"""The local broker's configuration is rendered from settings (no JVM started here)."""

from __future__ import annotations

from pathlib import Path

from pipelines.kafka.broker import LocalBroker, deploy_dir
from pipelines.settings import LocalBrokerSettings, Settings


def test_server_properties_bind_loopback_on_the_configured_ports(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, local_broker=LocalBrokerSettings(port=29092, controller_port=29093)
    )
    broker = LocalBroker(settings)
    broker.root.mkdir(parents=True)
    broker._write_config()
    props = dict(
        line.split("=", 1)
        for line in broker.config_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")
    assert props["auto.create.topics.enable"] == "false"


def test_status_of_a_broker_that_never_ran(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, local_broker=LocalBrokerSettings(port=1, controller_port=2))
    status = LocalBroker(settings).status()
    assert not status.running
    assert status.pid is None
    assert not status.accepting


def test_pom_pins_a_kafka_version() -> None:
    pom = (deploy_dir() / "pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<kafka.version>4.4.0</kafka.version>" in pom
