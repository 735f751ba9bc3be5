"""A running ``dagster-webserver`` on an embedded instance, and headless Chromium to drive it.

The webserver loads the shipped ``workspace.yaml`` with a fresh SQLite ``DAGSTER_HOME`` and
``ASTRID_HOME`` (the ``astrid_home`` fixture). Its instance launches runs at once, without a
daemon (``DefaultRunCoordinator``; Dagster 1.13's own default queues them for the daemon).
While it starts, the ``dagster`` CLI materializes the upstream nightly assets of three small
nights, so that the UI has a night whose ``candidate_detections`` are worth computing.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (``make test-tools``),
driven by Selenium; Selenium Manager downloads nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from astrid_assets.testing import servers

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = (1600, 1000)

#: The nights prepared before the UI is opened; the last one is launched from the UI.
NIGHTS = ["2024-01-01", "2024-01-02", "2024-01-03"]
UPSTREAM = ["raw_observations", "calibrated_frames", "reference_images", "difference_images"]
#: One field, one 256-px frame a night, in one process: the first two nights make the third night's
#: reference, and the third night gets one difference image. The run launched from the UI needs none
#: of this (candidate_detections reads only difference_images and the object store).
UPSTREAM_RUN_CONFIG = {
    "resources": {"simulated_survey": {"config": {"fields": ["F01"], "frames_per_night": 1, "size": 256}}},
}
INSTANCE_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""


@dataclass
class DagsterUI:
    url: str
    instance: object  #: the webserver's DagsterInstance, opened in the test process
    logs: Path


@pytest.fixture
def ui_output(tmp_path) -> Path:
    """Where screenshots go: ``$ASTRID_TEST_OUTPUT/ui`` if that is set, else the test's ``tmp_path``."""
    root = os.environ.get("ASTRID_TEST_OUTPUT")
    folder = Path(root).resolve() / "ui" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture
def dagster_ui(astrid_home, tmp_path) -> DagsterUI:
    """``dagster-webserver`` on loopback over an embedded instance holding three nights of upstream assets."""
    from dagster import DagsterInstance

    dagster_home = Path(os.environ["DAGSTER_HOME"])
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    logs = tmp_path / "logs"
    logs.mkdir()
    # Create the SQLite storages here, before two processes would race to create them.
    instance = DagsterInstance.get()

    bin_dir = Path(sys.executable).parent
    materialize = [
        str(bin_dir / "dagster"), "asset", "materialize", "-m", "astrid_assets.definitions",
        "--select", ",".join(UPSTREAM), "--partition-range", f"{NIGHTS[0]}...{NIGHTS[-1]}",
        "--config-json", json.dumps(UPSTREAM_RUN_CONFIG),
    ]
    port = servers.free_port()
    webserver = [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                 "-w", str(REPO / "workspace.yaml")]
    with open(logs / "materialize.log", "wb") as materialize_log:
        upstream = subprocess.Popen(materialize, stdout=materialize_log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        with servers.server_process(webserver, port, logs / "webserver.log", timeout=180) as process:
            url = f"http://127.0.0.1:{port}"
            servers.wait_for_code_location(url, process=process)
            try:
                upstream.wait(timeout=300)
            except subprocess.TimeoutExpired:
                pytest.fail(f"materializing the upstream nights took over 300 s; see {logs / 'materialize.log'}")
            tail = (logs / "materialize.log").read_text(errors="replace")[-3000:]
            assert upstream.returncode == 0, f"materializing the upstream nights failed:\n{tail}"
            yield DagsterUI(url, instance, logs)
    finally:
        servers.stop_process_group(upstream)
        instance.dispose()


@pytest.fixture
def browser(ui_output):
    """Headless Chromium, driven through the system chromedriver; quit (with its processes) afterwards."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the UI test drives Debian's chromium and chromium-driver. "
                    "Install them with `make test-tools`.", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}"):
        options.add_argument(argument)
    service = Service(str(CHROMEDRIVER), log_output=str(ui_output / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        try:  # the page as it was last: the first thing to look at when the test failed
            driver.save_screenshot(str(ui_output / "last-page.png"))
            (ui_output / "last-page.html").write_text(driver.page_source)
        except Exception as error:  # the browser may already be gone
            print(f"could not save the last page: {error}")
        finally:
            driver.quit()
