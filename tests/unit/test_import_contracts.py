"""The dependency rules hold, and breaking one fails the lint: import-linter runs over a copy of
the code with a deliberate import added, so the contracts are shown to bite, not just to pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run import-linter with the copy first on the path, and without the editable install's finder,
# which would otherwise resolve `services` to this checkout instead of the copy.
LINT = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, ".")
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", "--no-cache"]
sys.exit(lint_imports_command())
"""


def lint_copy(
    tmp_path: Path, add_line: tuple[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    for package in ("shared", "services", "operations"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if add_line is not None:
        module, line = add_line
        path = tmp_path / module
        path.write_text(path.read_text() + f"\n{line}\n")
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_the_code_keeps_every_import_contract(tmp_path: Path) -> None:
    result = lint_copy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "services/order/handlers.py",
            "import services.payment.domain  # noqa",
            "the four services never import each other",
        ),
        (
            "shared/kernel/runtime.py",
            "import shared.contracts.events  # noqa",
            "the kernel knows no product",
        ),
        (
            "services/penalty/domain.py",
            "import sqlite3  # noqa",
            "domain modules are pure",
        ),
    ],
)
def test_a_deliberate_forbidden_import_breaks_the_lint(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    result = lint_copy(tmp_path, (module, line))
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if "BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout
