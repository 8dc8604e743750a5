"""deploy/k8s validated offline: each overlay rendered by kustomize (kubectl's), every built-in
resource checked strictly against the Kubernetes API schemas (kubernetes-validate), every
Strimzi and MongoDB Community resource against its operator's CRD schema (deploy/k8s/crd-schemas,
unknown fields refused), then the properties an operator relies on, one test each."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from operations.catalog import SERVICES
from shared.contracts.events import CHECKPOINT_TOPIC, PRODUCERS, TOPICS
from shared.kernel.messaging import dlq_topic
from tests.deploy.test_compose_file import COMPOSE_DIR, grants, sealing_topic, wired_topics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("small", "production")
# the oldest and the newest Kubernetes API the manifests are checked against
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KUBECTL = shutil.which("kubectl")
needs_kustomize = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl (with kustomize built in) is not installed here: the overlays cannot be "
    "rendered; the base files are still validated one by one",
)
Resource = dict[str, Any]


def render(path: Path) -> list[Resource]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Resource]]:
    if KUBECTL is None:
        pytest.skip("kubectl (kustomize) not installed: overlays not rendered")
    return request.param, render(K8S / "overlays" / request.param)


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def crd_schema(resource: Resource) -> dict[str, Any] | None:
    for path in (K8S / "crd-schemas").glob("*.json"):
        known = json.loads(path.read_text())
        if (known["apiVersion"], known["kind"]) == (resource["apiVersion"], resource["kind"]):
            return strict(known["schema"])
    return None


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (the API server would silently prune them)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if (
        tightened.get("type") == "object"
        and "properties" in tightened
        and "additionalProperties" not in tightened
        and not tightened.get("x-kubernetes-preserve-unknown-fields")
    ):
        tightened["additionalProperties"] = False
    return tightened


def validate(resource: Resource) -> None:
    if "." in resource["apiVersion"].split("/")[0] and not resource["apiVersion"].startswith(
        ("apps/", "policy/", "autoscaling/", "networking.k8s.io/")
    ):
        schema = crd_schema(resource)
        assert schema is not None, f"no CRD schema for {resource['apiVersion']} {resource['kind']}"
        body = {k: v for k, v in resource.items() if k not in ("apiVersion", "kind", "metadata")}
        jsonschema.validate(body, schema)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def base_files() -> Iterator[Path]:
    for path in sorted((K8S / "base").rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield path


@pytest.mark.parametrize("path", list(base_files()), ids=lambda p: str(p.relative_to(K8S)))
def test_every_base_manifest_is_valid_on_its_own(path: Path) -> None:
    for resource in yaml.safe_load_all(path.read_text()):
        validate(resource)


def test_an_invalid_manifest_is_refused() -> None:
    deployment = yaml.safe_load((K8S / "base" / "app" / "deployment.yaml").read_text())
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    user = next(yaml.safe_load_all((K8S / "base" / "kafka" / "users.yaml").read_text()))
    typo = copy.deepcopy(user)
    typo["spec"]["authorisation"] = typo["spec"].pop("authorization")
    with pytest.raises(jsonschema.ValidationError):
        validate(typo)


def test_every_rendered_resource_is_valid(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    assert len(resources) > 30, name
    for resource in resources:
        validate(resource)
        assert resource["metadata"].get("namespace") == "yellowcart", resource["metadata"]


def test_no_template_placeholder_survives_rendering(overlay: tuple[str, list[Resource]]) -> None:
    _, resources = overlay
    assert "SERVICE" not in yaml.safe_dump_all(resources)


def deployments(resources: list[Resource]) -> dict[str, Resource]:
    return {d["metadata"]["name"]: d for d in of_kind(resources, "Deployment")}


def test_a_deployment_per_service_and_the_gateway(overlay: tuple[str, list[Resource]]) -> None:
    _, resources = overlay
    expected = {f"yellowcart-{service}" for service in SERVICES} | {"yellowcart-gateway"}
    assert set(deployments(resources)) == expected
    for service in SERVICES:
        container = deployments(resources)[f"yellowcart-{service}"]["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert container["args"] == ["serve", service]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["YELLOWCART_KAFKA_SASL_USERNAME"] == service


def test_pods_are_locked_down_probed_and_limited(overlay: tuple[str, list[Resource]]) -> None:
    _, resources = overlay
    dockerfile_user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user is not None
    for name, deployment in deployments(resources).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert str(pod["securityContext"]["runAsUser"]) == dockerfile_user.group(1), name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["livenessProbe"]["httpGet"]["path"] == "/health/live", name
            ready = "/health/live" if name.endswith("gateway") else "/health/ready"
            assert container["readinessProbe"]["httpGet"]["path"] == ready, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_termination_leaves_the_consumer_time_to_finish_its_record(
    overlay: tuple[str, list[Resource]],
) -> None:
    import inspect

    from shared.kernel.messaging.kafka import make_kafka_broker

    graceful = inspect.signature(make_kafka_broker).parameters["graceful_timeout_s"].default
    _, resources = overlay
    for service in SERVICES:
        pod = deployments(resources)[f"yellowcart-{service}"]["spec"]["template"]["spec"]
        pre_stop = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + 10, service


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_deployment_has_a_disruption_budget_and_an_autoscaler(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    for name, deployment in deployments(resources).items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [
            pdb
            for pdb in of_kind(resources, "PodDisruptionBudget")
            if selects(pdb["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(budgets) == 1, name
        scalers = [
            hpa
            for hpa in of_kind(resources, "HorizontalPodAutoscaler")
            if hpa["spec"]["scaleTargetRef"]
            == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        ]
        assert len(scalers) == 1, name
        assert scalers[0]["spec"]["minReplicas"] <= deployment["spec"]["replicas"]


def test_services_never_scale_past_the_partitions_they_consume(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    partitions = {
        t["metadata"]["name"]: t["spec"]["partitions"] for t in of_kind(resources, "KafkaTopic")
    }
    for hpa in of_kind(resources, "HorizontalPodAutoscaler"):
        service = hpa["spec"]["scaleTargetRef"]["name"].removeprefix("yellowcart-")
        if service in SERVICES:
            fewest = min(partitions[topic] for topic in wired_topics(service))
            assert hpa["spec"]["maxReplicas"] <= fewest, service


def test_topics_and_users_match_the_wiring_and_the_compose_grants(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    topics = {t["metadata"]["name"] for t in of_kind(resources, "KafkaTopic")}
    assert topics == set(TOPICS) | {dlq_topic(topic) for topic in TOPICS} | {CHECKPOINT_TOPIC}
    users = {u["metadata"]["name"]: u for u in of_kind(resources, "KafkaUser")}
    assert set(users) == set(SERVICES) | {"auditor"}
    for service in SERVICES:
        user = users[service]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        acls = user["spec"]["authorization"]["acls"]
        writes = {
            a["resource"]["name"]
            for a in acls
            if "Write" in a["operations"] and a["resource"]["type"] == "topic"
        }
        reads = {
            a["resource"]["name"]
            for a in acls
            if "Read" in a["operations"] and a["resource"]["type"] == "topic"
        }
        groups = [a["resource"] for a in acls if a["resource"]["type"] == "group"]
        own = next(topic for topic, producer in PRODUCERS.items() if producer == service)
        sealed_to = sealing_topic(service)
        assert reads == wired_topics(service) == grants()[service][1]
        assert writes == {own, sealed_to} | {dlq_topic(topic) for topic in reads}
        assert writes - {dlq_topic(topic) for topic in reads} == grants()[service][0]
        assert groups == [{"type": "group", "name": f"{service}.", "patternType": "prefix"}]
    assert users["auditor"]["spec"]["authorization"]["acls"] == [
        {
            "resource": {"type": "topic", "name": CHECKPOINT_TOPIC, "patternType": "literal"},
            "operations": ["Read", "Describe"],
        }
    ]


def test_the_checkpoint_topic_keeps_the_seals_as_long_as_compose_does(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    topics = {t["metadata"]["name"]: t["spec"] for t in of_kind(resources, "KafkaTopic")}
    sealed = topics[CHECKPOINT_TOPIC]
    compose_retention = re.search(
        r"CHECKPOINT_RETENTION_MS:-(\d+)", (COMPOSE_DIR / "kafka-init.sh").read_text()
    )
    assert compose_retention is not None
    assert int(sealed["config"]["retention.ms"]) == int(compose_retention.group(1))
    assert all(
        int(sealed["config"]["retention.ms"]) >= int(spec["config"]["retention.ms"])
        for spec in topics.values()
    )


def test_every_sealing_service_seals_with_the_key_secret_and_the_gateway_does_not_seal(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    for service in SERVICES:
        assert sealing_topic(service) is not None
        pod = deployments(resources)[f"yellowcart-{service}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert float(env["YELLOWCART_CHECKPOINT_INTERVAL_S"]) > 0, f"{service} never seals"
        key_file = Path(env["YELLOWCART_CHECKPOINT_KEY_FILE"])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        (volume,) = [v for v in pod["volumes"] if mounts.get(v["name"]) == str(key_file.parent)]
        projected = {
            item["path"]: (source["secret"]["name"], item["key"])
            for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        assert projected[key_file.name] == ("yellowcart-checkpoint-key", "checkpoint_key")
    # the gateway holds no key: an interval without one would stop it at start
    gateway = deployments(resources)["yellowcart-gateway"]["spec"]["template"]["spec"]
    gateway_env = {e["name"] for e in gateway["containers"][0]["env"]}
    assert not {"YELLOWCART_CHECKPOINT_INTERVAL_S", "YELLOWCART_CHECKPOINT_KEY_FILE"} & gateway_env
    (config,) = of_kind(resources, "ConfigMap")
    assert "YELLOWCART_CHECKPOINT_INTERVAL_S" not in config["data"]


def test_replication_fits_the_cluster(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    nodes = sum(pool["spec"]["replicas"] for pool in of_kind(resources, "KafkaNodePool"))
    for topic in of_kind(resources, "KafkaTopic"):
        replicas = topic["spec"]["replicas"]
        assert replicas <= nodes, topic["metadata"]["name"]
        assert int(topic["spec"]["config"]["min.insync.replicas"]) <= replicas
        if name == "production":
            assert replicas >= 3 and int(topic["spec"]["config"]["min.insync.replicas"]) == 2
    (mongo,) = of_kind(resources, "MongoDBCommunity")
    assert mongo["spec"]["members"] == (3 if name == "production" else 1)


def test_mongodb_has_one_user_per_service_database_whose_secret_the_service_mounts(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    (mongo,) = of_kind(resources, "MongoDBCommunity")
    assert mongo["spec"]["security"]["authentication"]["modes"] == ["SCRAM"]
    users = {user["name"]: user for user in mongo["spec"]["users"]}
    assert set(users) == set(SERVICES)
    assert len({user["db"] for user in users.values()}) == len(SERVICES)
    for service, user in users.items():
        assert user["roles"] == [{"name": "readWrite", "db": user["db"]}]
        pod = deployments(resources)[f"yellowcart-{service}"]["spec"]["template"]["spec"]
        sources = pod["volumes"][0]["projected"]["sources"]
        mounted = {source["secret"]["name"] for source in sources}
        assert user["connectionStringSecretName"] in mounted
        assert service in mounted  # Strimzi's Secret for the KafkaUser of the same name


def test_network_policies_allow_only_the_architectures_paths(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(resources, "NetworkPolicy")}
    deny = policies["yellowcart-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "yellowcart"}
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    services = policies["yellowcart-services"]
    assert [rule["ports"] for rule in services["egress"]] == [
        [{"protocol": "TCP", "port": 9093}],
        [{"protocol": "TCP", "port": 27017}],
    ]
    assert (
        services["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
            "app.kubernetes.io/component"
        ]
        == "gateway"
    )
    gateway = policies["yellowcart-gateway"]
    assert gateway["egress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    (kafka,) = of_kind(resources, "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert (
        listener["networkPolicyPeers"][0]["podSelector"]["matchLabels"][
            "app.kubernetes.io/component"
        ]
        == "service"
    )
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"


def test_the_secrets_an_operator_creates_are_listed_in_the_readme(
    overlay: tuple[str, list[Resource]],
) -> None:
    _, resources = overlay
    made_by_operators = {"yellowcart-cluster-ca-cert"} | set(SERVICES)
    (mongo,) = of_kind(resources, "MongoDBCommunity")
    made_by_operators |= {user["connectionStringSecretName"] for user in mongo["spec"]["users"]}
    to_create = {user["passwordSecretRef"]["name"] for user in mongo["spec"]["users"]}
    for deployment in deployments(resources).values():
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            names = [volume.get("secret", {}).get("secretName")] + [
                source["secret"]["name"]
                for source in volume.get("projected", {}).get("sources", [])
            ]
            to_create |= {name for name in names if name and name not in made_by_operators}
    readme = (ROOT / "README.md").read_text()
    for secret in sorted(to_create):
        assert f"`{secret}`" in readme, f"README must tell the operator to create {secret}"
