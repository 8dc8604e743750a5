"""The console against `yellowcart up`, as a person meets it: over plain HTTP, and in a real
headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium).

The browser tests skip, with the reason, where that Chromium is absent; `.ci/run` installs it,
so CI runs them. Screenshots go to `$YELLOWCART_CONSOLE_SCREENSHOTS` when set (that is how
`docs/console/` is refreshed), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from operations.localbroker import free_port
from tests.up import start_up, stop_up, wait_healthy

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
AXE = Path(__file__).parent / "fixtures" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")


def _require_chromium() -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "no headless Chromium here: install Debian's `chromium` and `chromium-driver` "
            "(apt-get install -y chromium chromium-driver; .ci/run does)"
        )


@pytest.fixture(scope="module")
def system_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's `yellowcart up` keeps its data (`var/up.json` names its broker)."""
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def system(system_root: Path) -> Iterator[str]:
    """`yellowcart up` on a port and data directory of its own, shared by one module's tests
    (each makes orders of its own) and stopped after them, so it does not idle through the
    rest of the suite; yields its base URL."""
    root = system_root
    port = free_port()
    up = start_up(root / "var", port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, up)
        yield base_url
    finally:
        stop_up(up)


@dataclass
class Browser:
    """One headless Chromium window on the console, with the checks every page gets."""

    driver: Any
    base_url: str
    shots: Path

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def text(self) -> str:
        return str(self.driver.find_element("tag name", "body").text)

    def axe_findings(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical findings on the page as it is now."""
        self.driver.execute_script(AXE.read_text())
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document).then(r => done(r.violations), e => done([{id: 'axe-error',"
            " impact: 'critical', help: String(e), nodes: []}]));"
        )
        return [
            {
                "id": v["id"],
                "impact": v["impact"],
                "help": v["help"],
                "nodes": [n.get("target") for n in v["nodes"]][:5],
            }
            for v in result
            if v.get("impact") in BLOCKING_IMPACTS
        ]

    def check_page(self, name: str) -> None:
        """No serious or critical accessibility finding; then a screenshot named `name`."""
        findings = self.axe_findings()
        assert findings == [], f"{name}: {findings}"
        self.screenshot(name)

    def screenshot(self, name: str) -> None:
        """The whole page, not only the window: the window grows to the page's height (at
        most 3000 pixels) for the picture and shrinks back."""
        size = self.driver.get_window_size()
        height = self.driver.execute_script("return document.documentElement.scrollHeight;")
        self.driver.set_window_size(
            size["width"], min(max(int(height) + 100, size["height"]), 3000)
        )
        try:
            self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        finally:
            self.driver.set_window_size(size["width"], size["height"])


def _driver(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(60)
    return driver


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = os.environ.get("YELLOWCART_CONSOLE_SCREENSHOTS")
    folder = Path(target) if target else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(system: str, shots: Path) -> Iterator[Browser]:
    _require_chromium()
    driver = _driver(1280, 900)
    try:
        yield Browser(driver, system, shots)
    finally:
        driver.quit()


@pytest.fixture
def phone(system: str, shots: Path) -> Iterator[Browser]:
    """A phone-sized window (390 x 844 CSS pixels)."""
    _require_chromium()
    driver = _driver(390, 844)
    try:
        yield Browser(driver, system, shots)
    finally:
        driver.quit()
