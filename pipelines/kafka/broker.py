"""The local Apache Kafka broker (KRaft, one node, loopback) behind ``streamwise broker``.

The broker's jars come from Maven Central through ``deploy/kafka/pom.xml`` on first use;
storage is formatted once; the JVM runs in its own process session with its log in
``STREAMWISE_HOME/kafka/kafka.log`` and its pid in ``kafka.pid``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import string
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipelines.settings import Settings

__all__ = ["BrokerError", "BrokerStatus", "LocalBroker", "deploy_dir"]


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    accepting: bool
    url: str
    log: Path


def deploy_dir() -> Path:
    """``deploy/kafka`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "deploy" / "kafka"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


class LocalBroker:
    """Fetch, format, start, wait for, and stop a single-node KRaft broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home.resolve() / "kafka"
        self.data = self.root / "data"
        self.log_file = self.root / "kafka.log"
        self.pid_file = self.root / "kafka.pid"
        self.config_file = self.root / "server.properties"
        self._proc: subprocess.Popen[bytes] | None = None  # set when this object started it

    @property
    def port(self) -> int:
        return self.settings.local_broker.port

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java was not found on PATH: install a JDK 17 or newer")
        return java

    def fetch(self) -> Path:
        """Copy the broker's jars from Maven Central (via Maven's cache) into ``lib``."""
        marker = self.lib / ".complete"
        if marker.exists():
            return self.lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn was not found on PATH: install Apache Maven to fetch Kafka")
        self.lib.mkdir(parents=True, exist_ok=True)
        cmd = [mvn, "-q", "-B", "-f", str(deploy_dir() / "pom.xml")]
        cmd += ["dependency:copy-dependencies", f"-DoutputDirectory={self.lib}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerError(f"fetching Kafka with Maven failed:\n{done.stdout}{done.stderr}")
        marker.write_text("ok\n")
        return self.lib

    def version(self) -> str | None:
        """The Kafka version of the fetched jars, if fetched."""
        jars = sorted(self.lib.glob("kafka_2.13-*.jar"))
        return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else None

    def _write_config(self) -> None:
        template = string.Template((deploy_dir() / "server.properties").read_text())
        self.config_file.write_text(
            template.substitute(
                port=self.port,
                controller_port=self.settings.local_broker.controller_port,
                log_dirs=self.data,
            )
        )

    def _format(self) -> None:
        if (self.data / "meta.properties").exists():
            return
        cmd = [self._java(), "-cp", f"{self.lib}/*", "kafka.tools.StorageTool", "format"]
        cmd += ["-t", uuid.uuid4().hex[:22], "-c", str(self.config_file)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            accepting=_port_open(self.port),
            url=self.settings.broker_url,
            log=self.log_file,
        )

    def start(self) -> BrokerStatus:
        """Start the broker unless it runs already; return once it serves metadata."""
        if not self.settings.uses_local_broker:
            raise BrokerError(f"STREAMWISE_BROKER names {self.settings.broker}: not starting one")
        if self.pid() is not None:
            self.wait_ready()
            return self.status()
        if _port_open(self.port):
            raise BrokerError(f"port {self.port} is taken by another process")
        self.fetch()
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format()
        heap = self.settings.local_broker.heap
        cmd = [self._java(), f"-Xmx{heap}", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        cmd += [f"-Dlog4j2.configurationFile={deploy_dir() / 'log4j2.properties'}"]
        cmd += ["-cp", f"{self.lib}/*", "kafka.Kafka", str(self.config_file)]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        self._proc = proc
        self.wait_ready(proc)
        return self.status()

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the broker answers a metadata request, or raise with the log's tail."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.settings.local_broker.start_timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerError(f"Kafka exited with {proc.returncode}:\n{self.log_tail()}")
            if _port_open(self.port):
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.settings.bootstrap_servers,
                        request_timeout_ms=5000,
                    )
                    admin.list_topics()
                    admin.close()
                    return
                except KafkaError:
                    pass
            time.sleep(0.3)
        raise BrokerError(f"Kafka did not become ready in time:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``)."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout_s)  # reap our own child
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True
