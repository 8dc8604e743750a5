"""docker-compose.yml read as data: the properties an operator needs, checked one by one.

Kafka keeps its log on the volume; everything restarts, is limited and rotates its logs; no
secret is inline; every Kafka client listener authenticates; each service is its own Kafka
principal and MongoDB user; kafka-init's grants are exactly what the services' wiring consumes
and produces, including the checkpoint topic every sealing service publishes to, and every
sealing service gets the interval and the key (one key pair, made by secrets.sh, whose public
half the auditor checks seals with). `docker-compose config` validates the file (and each
profile) offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from operations.catalog import SERVICES, spec_of
from shared.contracts.events import CHECKPOINT_TOPIC, PRODUCERS
from shared.contracts.policy import Policy
from shared.kernel.checkpoints import private_key_from_pem, public_key_from_pem, seal
from shared.kernel.clock import SystemClock
from shared.kernel.eventstore.chain import StreamHead
from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.messaging import dlq_topic
from shared.kernel.readmodel.memory import InMemoryDocumentStore
from shared.kernel.runtime import Runtime
from shared.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL|JAAS", re.IGNORECASE)
PATH_VALUED = {"YELLOWCART_TOKEN_JWKS", "YELLOWCART_CHECKPOINT_PUBLIC_KEY"}
"""Settings whose value is itself a file path (the JWKS, the checkpoints' public key)."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose["services"].items() if not spec.get("profiles")}


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The four services: the containers whose command is `serve <name>`."""
    return {
        spec["command"][1]: spec
        for spec in compose["services"].values()
        if spec.get("command", [None])[0] == "serve"
    }


def environment(spec: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (spec.get("environment") or {}).items()}


def mounted_secrets(spec: dict[str, Any]) -> dict[str, str]:
    """target file name under /run/secrets -> source secret"""
    mounted = {}
    for entry in spec.get("secrets", []):
        if isinstance(entry, str):
            mounted[entry] = entry
        else:
            mounted[entry.get("target", entry["source"])] = entry["source"]
    return mounted


def test_every_service_of_the_platform_is_there(compose: dict[str, Any]) -> None:
    assert set(app_services(compose)) == set(SERVICES)
    assert {"kafka", "kafka-init", "mongo", "gateway"} <= set(compose["services"])


def test_kafka_writes_its_log_to_the_named_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    log_dirs = environment(kafka)["KAFKA_LOG_DIRS"].split(",")
    mounts = dict(volume.split(":")[:2][::-1] for volume in kafka["volumes"])
    for log_dir in log_dirs:
        assert log_dir in mounts, f"{log_dir} is not a mounted volume (data lost on recreate)"
        assert mounts[log_dir] in compose["volumes"], "a named volume, not a bind or tmpfs"


def test_mongo_keeps_its_data_on_named_volumes(compose: dict[str, Any]) -> None:
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["mongo"]["volumes"])
    assert mounts["/data/db"] in compose["volumes"]
    assert mounts["/data/configdb"] in compose["volumes"]


def test_everything_restarts_and_one_shots_restart_only_on_failure(
    compose: dict[str, Any],
) -> None:
    for name, spec in services(compose).items():
        expected = {"on-failure"} if name.endswith("-init") else {"unless-stopped", "always"}
        assert spec.get("restart") in expected, f"{name}: restart {spec.get('restart')!r}"


def test_every_container_has_cpu_and_memory_limits(compose: dict[str, Any]) -> None:
    for name, spec in services(compose).items():
        limits = spec.get("deploy", {}).get("resources", {}).get("limits", {})
        assert float(limits.get("cpus", 0)) > 0, f"{name}: no CPU limit"
        assert re.fullmatch(r"\d+[MG]", str(limits.get("memory", ""))), f"{name}: no memory limit"


def test_every_container_rotates_its_logs(compose: dict[str, Any]) -> None:
    for name, spec in services(compose).items():
        logging = spec.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert re.fullmatch(r"\d+m", logging["options"]["max-size"]), name
        assert int(logging["options"]["max-file"]) >= 2, name


def test_no_secret_is_written_inline(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"mongodb://[^/\s]*:[^@\s]*@", text), "credentials in a URL"
    assert "password=" not in text.lower()
    for name, spec in compose["services"].items():
        for key, value in environment(spec).items():
            file_valued = key.endswith("_FILE") or key in PATH_VALUED
            if SECRET_WORDS.search(key) and not file_valued:
                pytest.fail(f"{name}: {key} is set inline; give it as a *_FILE secret")
            if file_valued:
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"
                target = value.removeprefix("/run/secrets/")
                assert target in mounted_secrets(spec), f"{name}: {value} is not mounted"
    for secret_name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {secret_name} must come from a file"


def test_the_secret_files_compose_names_are_the_ones_secrets_sh_writes(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(COMPOSE_DIR / "secrets.sh"), str(tmp_path)], check=True, capture_output=True
    )
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    wanted = {Path(secret["file"]).name for secret in compose["secrets"].values()}
    assert wanted <= {path.name for path in tmp_path.iterdir()}
    before = {path.name: path.read_text() for path in tmp_path.iterdir()}
    subprocess.run(
        ["bash", str(COMPOSE_DIR / "secrets.sh"), str(tmp_path)], check=True, capture_output=True
    )
    assert before == {path.name: path.read_text() for path in tmp_path.iterdir()}, "kept"
    for name in SERVICES:
        url = (tmp_path / f"store_url_{name.replace('-', '_')}").read_text()
        assert url.startswith(f"mongodb://{name}:") and "replicaSet=rs0" in url


def test_every_kafka_listener_authenticates_with_sasl(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["kafka"])
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocol_of = dict(pair.split(":") for pair in protocol_map.split(","))
    listeners = [entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")]
    for listener in listeners:
        assert protocol_of[listener].startswith("SASL_"), f"{listener} is {protocol_of[listener]}"
        mechanisms = env[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"]
        assert mechanisms in {"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"}
    advertised = [entry.split("://")[0] for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert set(advertised) <= set(listeners)
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "Authorizer" in env["KAFKA_AUTHORIZER_CLASS_NAME"]


def test_each_service_is_its_own_kafka_principal_on_the_scram_listener(
    compose: dict[str, Any],
) -> None:
    kafka_env = environment(compose["services"]["kafka"])
    client_listener = next(
        entry.split("://")[0]
        for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        if entry.endswith(":9092")
    )
    principals, password_secrets = set(), set()
    for name, spec in app_services(compose).items():
        env = environment(spec)
        assert env["YELLOWCART_BROKER_URL"] == "kafka:9092"
        assert env["YELLOWCART_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_")
        assert (
            env["YELLOWCART_KAFKA_SASL_MECHANISM"]
            == (kafka_env[f"KAFKA_LISTENER_NAME_{client_listener}_SASL_ENABLED_MECHANISMS"])
        )
        assert env["YELLOWCART_KAFKA_SASL_USERNAME"] == name
        assert env["YELLOWCART_KAFKA_IDEMPOTENCE"] == "true"
        principals.add(env["YELLOWCART_KAFKA_SASL_USERNAME"])
        password_secrets.add(mounted_secrets(spec)["kafka_password"])
    assert len(principals) == len(password_secrets) == len(SERVICES)
    assert "admin" not in principals


def grants() -> dict[str, tuple[set[str], set[str]]]:
    """kafka-init's GRANTS table: service -> (topics it writes, topics it reads)."""
    script = (COMPOSE_DIR / "kafka-init.sh").read_text()
    table = script.split("GRANTS='", 1)[1].split("'", 1)[0]
    parsed = {}
    for line in table.strip().splitlines():
        service, writes, *reads = line.split()
        parsed[service] = (set(writes.split(",")), set(reads))
    return parsed


def sealing_topic(name: str) -> str | None:
    """The topic `name`'s checkpoint sealer publishes to (the topic of the event its wiring
    builds from a sealed document), or None when the service does not seal."""
    spec = spec_of(name, Policy())
    if spec.checkpoint_event is None:
        return None
    document = seal(
        {name: {"s-1": StreamHead(1, "0" * 64, 1)}},
        SystemClock().now(),
        Ed25519PrivateKey.generate(),
    )
    event = spec.checkpoint_event(
        {"service": name, "seal_id": "a" * 32, "part": 1, "parts": 1, "checkpoint": document}
    )
    return event.topic


def wired_topics(name: str) -> set[str]:
    spec = spec_of(name, Policy())
    runtime = Runtime(
        name,
        Settings(),
        SystemClock(),
        InMemoryEventStore(),
        InMemoryDocumentStore(),
        spec.registry(),
    )
    return {topic for sub in spec.wire(runtime).subscriptions for topic in sub.topics}


def test_kafka_init_grants_each_service_its_own_topic_and_what_it_consumes() -> None:
    table = grants()
    assert set(table) == set(SERVICES)
    for name in SERVICES:
        writes, reads = table[name]
        sealed_to = sealing_topic(name)
        (own,) = writes - {sealed_to}
        assert PRODUCERS[own] == name, f"{name} may write {own}, which it does not own"
        assert reads == wired_topics(name), f"{name}: reads differ from its subscriptions"


def test_every_service_that_seals_may_write_the_checkpoint_topic() -> None:
    sealers = {name: sealing_topic(name) for name in SERVICES}
    assert all(sealers.values()), "every service seals its store"
    for name, topic in sealers.items():
        assert topic in grants()[name][0], f"{name} seals to {topic} but may not write it"
    script = (COMPOSE_DIR / "kafka-init.sh").read_text()
    assert f"CHECKPOINT_TOPIC={CHECKPOINT_TOPIC}\n" in script
    # created with its own partitions and retention before the services' rows
    created = re.search(
        r'^topic "\$CHECKPOINT_TOPIC" 1 "\$\{CHECKPOINT_RETENTION_MS:-(\d+)\}"$',
        script,
        re.MULTILINE,
    )
    assert created is not None
    assert script.index(created.group(0)) < script.index('done <<<"$GRANTS"')


def test_the_auditor_principal_only_reads_the_checkpoint_topic_without_a_group(
    compose: dict[str, Any],
) -> None:
    script = (COMPOSE_DIR / "kafka-init.sh").read_text()
    auditor_grants = re.findall(r"^allow auditor (.*)$", script, re.MULTILINE)
    assert auditor_grants == ['--operation Read --operation Describe --topic "$CHECKPOINT_TOPIC"']
    assert "principal auditor" in script
    auditor = compose["services"]["auditor"]
    assert auditor["profiles"] == ["ops"]
    env = environment(auditor)
    assert env["YELLOWCART_KAFKA_SASL_USERNAME"] == "auditor"
    assert mounted_secrets(auditor)["kafka_password"] == "kafka_auditor_password"
    init_secrets = set(mounted_secrets(compose["services"]["kafka-init"]))
    assert "kafka_auditor_password" in init_secrets
    assert env["YELLOWCART_STORE_URLS_FILE"] == "/run/secrets/store_urls"
    assert "/run/secrets/checkpoint_public_key" in auditor["command"]


def settings_from_compose(
    spec: dict[str, Any], secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The Settings a container of `spec` reads: its environment, each /run/secrets/<target>
    being the file secrets.sh wrote for the mounted source."""
    for key in list(os.environ):
        if key.startswith("YELLOWCART_"):
            monkeypatch.delenv(key)
    mounted = mounted_secrets(spec)
    for key, value in environment(spec).items():
        if value.startswith("/run/secrets/"):
            value = str(secrets_dir / mounted[value.removeprefix("/run/secrets/")])
        monkeypatch.setenv(key, value)
    return Settings()


def test_every_sealing_service_starts_sealing_with_the_key_the_auditor_checks(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(
        ["bash", str(COMPOSE_DIR / "secrets.sh"), str(tmp_path)], check=True, capture_output=True
    )
    auditor = settings_from_compose(compose["services"]["auditor"], tmp_path, monkeypatch)
    public = public_key_from_pem(Path(auditor.checkpoint_public_key).read_bytes())
    for name, spec in app_services(compose).items():
        assert sealing_topic(name) is not None
        settings = settings_from_compose(spec, tmp_path, monkeypatch)
        assert settings.checkpoint_interval_s > 0, f"{name} never seals"
        key = private_key_from_pem(settings.checkpoint_key.encode())
        assert key.public_key().public_bytes_raw() == public.public_bytes_raw(), name


def test_kafka_init_creates_topics_with_explicit_settings_and_dead_letter_topics() -> None:
    script = (COMPOSE_DIR / "kafka-init.sh").read_text()
    for flag in ("--partitions", "--replication-factor", "retention.ms=", "min.insync.replicas="):
        assert flag in script
    assert '"$consumed.dlq"' in script and dlq_topic("x.events") == "x.events.dlq"
    assert '--group "$service." --resource-pattern-type prefixed' in script
    assert "SCRAM-SHA-512=[iterations=8192,password=$(cat" in script


def test_mongo_runs_with_auth_and_one_user_per_service_database(compose: dict[str, Any]) -> None:
    mongo = compose["services"]["mongo"]
    env = environment(mongo)
    assert env["MONGO_INITDB_ROOT_PASSWORD_FILE"].startswith("/run/secrets/")
    assert any(arg.startswith("--keyFile=") for arg in mongo["command"])
    users = re.findall(
        r'\["([a-z-]+)", "(yellowcart_[a-z]+)", "mongo_([a-z_]+)_password"\]',
        (COMPOSE_DIR / "mongo-users.js").read_text(),
    )
    assert {user for user, _, _ in users} == set(SERVICES)
    assert len({database for _, database, _ in users}) == len(SERVICES)
    secrets_sh = (COMPOSE_DIR / "secrets.sh").read_text()
    for user, database, secret in users:
        assert secret == user.replace("-", "_")
        assert f"store_url {secret} {user} {database}" in secrets_sh


def test_images_are_pinned_by_digest_or_built_here(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        image = spec["image"]
        assert "@sha256:" in image or image.startswith("${YELLOWCART_IMAGE"), f"{name}: {image}"


def test_only_the_gateway_publishes_a_port_and_the_data_stores_have_no_route_out(
    compose: dict[str, Any],
) -> None:
    published = {name for name, spec in compose["services"].items() if spec.get("ports")}
    assert published == {"gateway"}
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("kafka", "mongo", "kafka-init"):
        assert compose["services"][name]["networks"] == ["backend"]


def test_our_containers_are_read_only_without_capabilities(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if spec["image"].startswith("${YELLOWCART_IMAGE"):
            assert spec["read_only"] is True, name
            assert spec["cap_drop"] == ["ALL"], name
            assert "no-new-privileges:true" in spec["security_opt"], name


def compose_config(*profile_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), *profile_args, "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose (Debian package) is not installed here; .ci/run installs it",
)
def test_compose_validates_offline_with_and_without_each_profile(
    compose: dict[str, Any],
) -> None:
    services = compose["services"].values()
    profiles = sorted({profile for spec in services for profile in spec.get("profiles", [])})
    for args in [(), *[("--profile", profile) for profile in profiles]]:
        result = compose_config(*args)
        assert result.returncode == 0, f"{args}: {result.stderr}"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("restart: unless-stopped", "restart: 3", 1))
    result = subprocess.run(
        ["docker-compose", "-f", str(broken), "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
