"""The Dagster UI in a real browser: a night of candidate_detections launched with the UI's own buttons.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) opens the
global asset lineage, expands the ``nightly`` group, opens ``candidate_detections`` from the
graph, launches one night with the "Materialize…" dialog and follows the launched run until the
UI says it succeeded. The fixtures (``conftest.py``) start the webserver on an embedded instance
and materialize the upstream assets of the nights before. Screenshots of each step are saved to
``$ASTRID_TEST_OUTPUT/ui`` if that is set, else to the test's ``tmp_path``.

Elements are found the way a person finds them, by their visible text (Dagster's CSS class names
are hashed per release); every wait is explicit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from astrid_assets_tests.ui.conftest import NIGHTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NIGHT = NIGHTS[-1]
ASSET = "candidate_detections"
GROUP = "nightly"
NIGHTLY_ASSETS = ["raw_observations", "calibrated_frames", "reference_images", "difference_images", ASSET,
                  "scored_detections"]
#: Graph nodes are HTML inside the SVG's <foreignObject>s.
GRAPH_NODE = "//*[local-name()='foreignObject']//*[normalize-space(text())='{}']"
DIALOG = "//div[contains(@class, 'dagster-dialog')]"
RUN_TIMEOUT_S = 300


class Page:
    """A thin layer over the WebDriver: explicit waits that outlast React re-rendering an element."""

    def __init__(self, driver, base_url: str, output: Path, timeout: float = 60):
        from selenium.common.exceptions import (
            ElementClickInterceptedException,
            ElementNotInteractableException,
            StaleElementReferenceException,
        )

        self.driver, self.base_url, self.output, self.timeout = driver, base_url, output, timeout
        self.retry_on = (StaleElementReferenceException, ElementClickInterceptedException,
                         ElementNotInteractableException)
        self.screenshots: list[Path] = []

    def wait(self, condition, what: str, timeout: float | None = None, poll: float = 0.25):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=poll,
                                 ignored_exceptions=self.retry_on).until(condition)
        except TimeoutException:
            shot = self.shot("timed-out")
            raise AssertionError(f"the UI never showed {what} (at {self.driver.current_url}; see {shot})") from None

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def displayed(self, xpath: str):
        from selenium.webdriver.common.by import By

        return next((e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)

    def find(self, xpath: str, what: str, timeout: float | None = None):
        return self.wait(lambda _: self.displayed(xpath) or False, what, timeout)

    def click(self, xpath: str, what: str, timeout: float | None = None) -> None:
        def clicked(_):
            element = self.displayed(xpath)
            if element is None or not element.is_enabled():
                return False
            element.click()
            return True

        self.wait(clicked, what, timeout)

    def fill(self, xpath: str, what: str, *keys: str) -> None:
        from selenium.webdriver.common.keys import Keys

        def typed(_):
            element = self.displayed(xpath)
            if element is None or not element.is_enabled():
                return False
            element.click()
            element.send_keys(Keys.CONTROL, "a")
            element.send_keys(*keys)
            return True

        self.wait(typed, what)

    def settled(self, xpath: str, what: str) -> None:
        """Until the element stops moving (the graph pans to a selected node)."""
        last = {}

        def still(_):
            element = self.displayed(xpath)
            rect = element and element.rect
            moved, last["rect"] = rect != last.get("rect"), rect
            return bool(rect) and not moved

        self.wait(still, what, poll=0.5)

    def shot(self, name: str) -> Path:
        path = self.output / f"{len(self.screenshots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.screenshots.append(path)
        return path


def test_a_night_of_candidate_detections_launched_and_followed_in_the_ui(browser, dagster_ui, ui_output):
    from dagster import AssetKey, DagsterRunStatus
    from selenium.webdriver.common.keys import Keys

    from astrid_assets.io.tables import read_nights

    page = Page(browser, dagster_ui.url, ui_output)
    instance = dagster_ui.instance

    # The asset graph: global lineage, where the groups start collapsed; expand "nightly".
    page.open("/asset-groups")
    page.find(f"{GRAPH_NODE.format(GROUP)} | {GRAPH_NODE.format(ASSET)}", "the asset graph")
    if page.displayed(GRAPH_NODE.format(ASSET)) is None:
        page.click(GRAPH_NODE.format(GROUP), f"the collapsed {GROUP} group")
    # The graph renders only the nodes in view (the nightly group holds 13 assets since objects, context and
    # packets joined it): the node of the asset followed here, and every nightly asset in the asset tree below.
    page.find(GRAPH_NODE.format(ASSET), f"{ASSET} in the graph")

    # candidate_detections: select it in the graph; the asset tree opens on the group, the sidebar on the asset.
    page.click(GRAPH_NODE.format(ASSET), f"the {ASSET} node")
    page.find(f"//h3[normalize-space()='{ASSET}']", f"{ASSET} in the sidebar")
    for asset in NIGHTLY_ASSETS:
        page.find(f"//div[@title='{asset}']", f"{asset} in the asset tree")
    page.click(f"//div[@title='{ASSET}']", f"{ASSET} in the asset tree")  # centres the graph on it
    page.settled(GRAPH_NODE.format(ASSET), f"the graph centred on {ASSET}")
    page.shot("asset-graph")
    page.click("//a[normalize-space()='View in Asset Catalog']", f"the link to {ASSET}'s page")
    page.wait(lambda d: d.current_url.split("?")[0].endswith(f"/assets/{ASSET}"), f"{ASSET}'s page")
    page.shot("asset-page")

    # The "Materialize…" dialog: one partition, typed into the partition selector.
    page.click("//button[starts-with(normalize-space(), 'Materialize')]", "the Materialize button")
    page.find(f"{DIALOG}//*[normalize-space()='Launch runs to materialize {ASSET}']", "the launch dialog")
    partitions = f"{DIALOG}//input[@type='text']"
    page.find(partitions, "the partition selector")
    # Only the last 90 days are offered at first; the night is older than that.
    show_all = f"{DIALOG}//button[normalize-space()='Show all partitions']"
    if page.displayed(show_all) is not None:
        page.click(show_all, "Show all partitions")
    page.find(f"{DIALOG}//button[normalize-space()='All time']", "all partitions offered")
    page.fill(partitions, "the partition selector", NIGHT, Keys.ENTER)
    page.find(f"{DIALOG}//*[normalize-space()='1 partition']", "one partition selected")
    page.shot("launch-dialog")
    page.click(f"{DIALOG}//button[normalize-space()='Launch 1 run']", "the Launch 1 run button")

    # The toast links to the run; the run page follows it to the end.
    page.click("//a[normalize-space()='View']", "the launched run's View link")
    match = page.wait(lambda d: re.search(r"/runs/([0-9a-f-]{36})", d.current_url), "the run's page")
    run_id = match.group(1)

    def finished(_):
        shown = page.displayed("//*[normalize-space(text())='Success']") is not None
        run = instance.get_run_by_id(run_id)
        # Success is what the UI shows; a failed run ends the wait at once, and the assertions say why.
        return run is not None and run.is_finished and (shown or run.status != DagsterRunStatus.SUCCESS) and run

    run = page.wait(finished, f"run {run_id} succeeding", timeout=RUN_TIMEOUT_S, poll=2)
    page.shot("run-finished")
    failures = [e.user_message for e in instance.all_logs(run_id) if e.is_dagster_event and e.dagster_event.is_failure]
    assert run.status == DagsterRunStatus.SUCCESS, f"run {run_id} ended {run.status}: {failures}"
    page.find("//*[normalize-space()='RUN_SUCCESS']", "RUN_SUCCESS in the run's event log")
    assert run.tags.get("dagster/partition") == NIGHT
    assert run.asset_selection == {AssetKey(ASSET)}
    assert instance.get_materialized_partitions(AssetKey(ASSET)) == {NIGHT}
    candidates = read_nights(ASSET, [NIGHT])
    assert len(candidates) > 0 and set(candidates.night) == {NIGHT}

    # And the asset's partitions tab shows the night materialized.
    page.open(f"/assets/{ASSET}?view=partitions")
    page.find("//*[normalize-space()='Materialized (1)']", "one materialized partition")
    page.shot("asset-partitions")
    print("screenshots:\n" + "\n".join(f"  {path}" for path in page.screenshots))
