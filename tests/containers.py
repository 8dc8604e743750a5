"""Real servers in containers for the tests that need them (testcontainers), started from the
same digest-pinned images docker-compose.yml deploys, so a test runs what production runs.
Where no Docker daemon answers, the fixtures using these skip with `NO_DOCKER` as the reason."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[1]
NO_DOCKER = "no Docker daemon answers here (testcontainers needs one)"


def compose_image(service: str) -> str:
    """The image docker-compose.yml runs for `service` (YAML anchors resolved)."""
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image: str = compose["services"][service]["image"]
    return image


def docker_answers() -> bool:
    """Ask the daemon's /_ping directly (the docker SDK leaks a socket when none answers)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    try:
        if parsed.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(3)
                connection.connect(parsed.path)
                connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b"OK" in connection.recv(1024)
        with socket.create_connection((parsed.hostname, parsed.port or 2375), 3) as connection:
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"OK" in connection.recv(1024)
    except OSError:
        return False


@contextmanager
def mongodb_replica_set(timeout_s: float = 60) -> Iterator[str]:
    """A one-member replica set (`rs0`), as compose runs MongoDB: transactions, majority
    write concern and change streams behave as in production, unlike a standalone server.
    Yields a URL with directConnection (the member's own name is not reachable from here)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = (
        DockerContainer(compose_image("mongo"))
        .with_command("mongod --replSet rs0 --bind_ip_all")
        .with_exposed_ports(27017)
    )
    with container:
        wait_for_logs(container, "Waiting for connections", timeout=timeout_s)
        initiate = "rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'localhost:27017'}]})"
        exit_code, output = container.exec(["mongosh", "--quiet", "--eval", initiate])
        assert exit_code == 0, output
        deadline = time.monotonic() + timeout_s
        primary = "quit(db.hello().isWritablePrimary ? 0 : 1)"
        while container.exec(["mongosh", "--quiet", "--eval", primary])[0] != 0:
            assert time.monotonic() < deadline, "the replica set elected no primary in time"
            time.sleep(0.5)
        host, port = container.get_container_host_ip(), container.get_exposed_port(27017)
        yield f"mongodb://{host}:{port}/?replicaSet=rs0&directConnection=true"


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def kafka_broker(timeout_s: float = 90) -> Iterator[str]:
    """A real single-node Kafka (KRaft) from compose's image, PLAINTEXT on a fixed host port
    (Kafka advertises the address clients must use, so it has to be known before start)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_tcp_port()
    container = (
        DockerContainer(compose_image("kafka"))
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_LOG_DIRS="/var/lib/kafka/data",
        )
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=timeout_s)
        yield f"127.0.0.1:{port}"


@contextmanager
def compose_kafka(secrets: Path, timeout_s: float = 120) -> Iterator[str]:
    """Kafka as docker-compose.yml configures it (SASL on every listener, ACLs, the JAAS file from
    `secrets`), with deploy/compose/kafka-init.sh run inside it. Only the CLIENT listener is
    advertised at the published host port instead of kafka:9092. Yields that bootstrap."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = {
        key: str(value) for key, value in compose["services"]["kafka"]["environment"].items()
    }
    port = free_tcp_port()
    environment["KAFKA_ADVERTISED_LISTENERS"] = f"CLIENT://127.0.0.1:{port},INTERNAL://kafka:9094"
    init = compose["services"]["kafka-init"]["environment"]
    container = (
        DockerContainer(compose_image("kafka"))
        .with_bind_ports(9092, port)
        .with_envs(**environment)
        .with_kwargs(hostname="kafka")
        .with_volume_mapping(str(secrets), "/run/secrets", "ro")
        .with_volume_mapping(
            str(ROOT / "deploy" / "compose" / "kafka-init.sh"),
            "/opt/yellowcart/kafka-init.sh",
            "ro",
        )
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=timeout_s)
        command = ["env", *(f"{key}={value}" for key, value in init.items())]
        exit_code, output = container.exec([*command, "bash", "/opt/yellowcart/kafka-init.sh"])
        assert exit_code == 0, output.decode()
        yield f"127.0.0.1:{port}"
