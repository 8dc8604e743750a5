"""The `observability` compose profile, validated offline: compose accepts it and keeps it out
of the default `up`, Prometheus scrapes every service, and the provisioned Grafana dashboard
loads and asks only for metrics the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from shared.kernel.messaging import ConsumerMetrics
from shared.kernel.metrics import service_collector
from shared.kernel.outbox import RelayMetrics
from shared.kernel.runtime import _counters
from shared.kernel.sealing import SealerMetrics
from shared.kernel.timers import TimerMetrics

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROFILE = {"prometheus", "grafana", "otel-collector", "jaeger"}
SCRAPED = {"order", "payment", "seller-dispute", "penalty", "gateway"}


def compose_config() -> dict[str, Any]:
    """The compose file as `docker-compose config` resolves it (validated on the way)."""
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_the_profile_adds_its_four_services_and_only_when_asked() -> None:
    services = compose_config()["services"]
    profiled = {
        name
        for name, service in services.items()
        if "observability" in (service.get("profiles") or [])
    }
    assert profiled == PROFILE
    assert all(services[name]["profiles"] == ["observability"] for name in PROFILE)
    assert set(services) >= SCRAPED
    # Prometheus reaches the services on the network they share; no profile publishes a port.
    for name in PROFILE:
        assert services[name]["networks"] == {"edge": None} or "edge" in services[name]["networks"]
        assert not services[name].get("ports"), name
    for name in SCRAPED:
        assert "edge" in services[name]["networks"], name


def test_prometheus_scrapes_every_service_and_the_gateway() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == SCRAPED


def exported_sample_names() -> set[str]:
    """Every sample name a service's /metrics can show (counters of one of each component)."""
    service_collector()
    from prometheus_client import REGISTRY

    names = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    names |= {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    runtime = SimpleNamespace(
        name="x",
        consumers=[SimpleNamespace(group_id="g", metrics=ConsumerMetrics())],
        registry=SimpleNamespace(unknown={"T": 1}),
        relay=SimpleNamespace(metrics=RelayMetrics()),
        scheduler=SimpleNamespace(metrics=TimerMetrics()),
        sealer=SimpleNamespace(metrics=SealerMetrics()),
    )
    names |= {f"{name}_total" for name, *_ in _counters(runtime)}  # type: ignore[arg-type]
    return names


def test_the_dashboard_loads_and_asks_only_for_exported_metrics() -> None:
    dashboard = json.loads(
        (OBSERVABILITY / "grafana" / "dashboards" / "yellowcart.json").read_text()
    )
    assert dashboard["uid"] and dashboard["panels"]
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(expressions)
    asked = {name for expr in expressions for name in re.findall(r"yellowcart_[a-z_]+", expr)}
    assert asked, "the dashboard asks for no yellowcart metric"
    assert asked <= exported_sample_names(), asked - exported_sample_names()
    provider = yaml.safe_load(
        (OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
