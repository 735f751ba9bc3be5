"""The scanning page (``astrid review``) in real headless Chromium: sign in, label with the keyboard, disagree.

``astrid review`` runs as a server on loopback over a temporary SQLite database and object folder holding
one generated night of candidates with champion scores (written straight to the tables, no chain). Chromium
signs in, opens the queue, labels three candidates with the keyboard and the test reads them back from
``validations``; a second person labels one of them differently and both see the disagreement; a labeller
named ``<script>alert(1)</script>`` shows as text; a form post without the CSRF token is refused; a
browser without a session gets the sign-in page. The candidate page's screenshot goes to the UI output
folder, and to ``docs/review.png`` (the README's) when ``ASTRID_UPDATE_DOCS=1``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from astrid_assets.io.schema import validations
from astrid_assets.io.tables import engine_for
from astrid_assets.testing import servers

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NIGHT = "2024-01-05"
PASSWORD = "correct horse battery"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def review_site(astrid_home, tmp_path):
    """``astrid review`` on a free loopback port over one generated night (12 candidates, champion v7)."""
    from astrid_assets.review.records import ReviewRecords
    from astrid_assets.testing.review_data import write_candidates

    url = f"sqlite:///{astrid_home / 'astrid.db'}"
    write_candidates(url, str(astrid_home / "objects"), NIGHT, 12,
                     probabilities=[0.05 + 0.08 * i for i in range(12)], model_version="7")
    records = ReviewRecords(url)
    for name, role in (("ana", "labeller"), ("eve", "expert"), (HOSTILE, "labeller")):
        records.add_person(name, PASSWORD, role)
    port = servers.free_port()
    command = [str(Path(sys.executable).parent / "astrid"), "review", "--port", str(port)]
    env = {"ASTRID_DATABASE_URL": url, "ASTRID_OBJECT_STORE": str(astrid_home / "objects"),
           "ASTRID_REVIEW_SECRET": "browser-test-session-key"}
    with servers.server_process(command, port, tmp_path / "review.log", timeout=120, env=env):
        yield f"http://127.0.0.1:{port}", url


def labels_in_database(url: str) -> pd.DataFrame:
    with engine_for(url).connect() as connection:
        return pd.read_sql(select(validations).order_by(validations.c.validation_id), connection)


def test_scanning_in_a_browser(review_site, browser, ui_output):
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, url = review_site
    # a key press navigates: an element found on the page being left goes stale, and the wait looks again
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))

    def press(key: str) -> None:
        ActionChains(browser).send_keys(key).perform()

    def current_candidate() -> str:
        return browser.find_element(By.ID, "candidate-id").text

    def sign_in(name: str) -> None:
        browser.delete_all_cookies()
        browser.get(f"{base}/queue")
        wait.until(lambda d: d.find_elements(By.ID, "signin-form"))  # an unsigned request gets the sign-in page
        browser.find_element(By.ID, "name").send_keys(name)
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "signin-button").click()
        wait.until(lambda d: d.find_elements(By.ID, "person-name"))
        assert browser.find_element(By.ID, "person-name").text == name

    # ana signs in, opens the queue's first candidate with the keyboard and labels three: r, b, r
    sign_in("ana")
    assert browser.current_url.endswith("/queue")
    first_row = browser.find_element(By.CSS_SELECTOR, "tr.queue-row.selected .candidate-link").text
    press("\n")
    wait.until(lambda d: d.find_elements(By.ID, "candidate-id"))
    assert current_candidate() == first_row
    wait.until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth === 63)"))
    shown = []
    for key in "rbr":
        shown.append(current_candidate())
        if len(shown) == 1:  # the page as a person sees it, for the README
            browser.save_screenshot(str(ui_output / "review-candidate.png"))
        press(key)
        wait.until(lambda d, before=shown[-1]: d.find_elements(By.ID, "candidate-id")
                   and current_candidate() != before)
    stored = labels_in_database(url)
    assert stored[["candidate_id", "label", "labeller", "model_version"]].values.tolist() == [
        [shown[0], "real", "ana", "7"], [shown[1], "bogus", "ana", "7"], [shown[2], "real", "ana", "7"]]
    assert stored.real_probability.notna().all() and (stored.source == "review").all()

    # eve labels the first one bogus: both see the disagreement, on the candidate and in the queue
    sign_in("eve")
    browser.get(f"{base}/candidate/{shown[0]}")
    press("b")
    wait.until(lambda d: d.find_elements(By.ID, "candidate-id") and current_candidate() != shown[0])
    for name in ("eve", "ana"):
        if name == "ana":
            sign_in("ana")
        browser.get(f"{base}/candidate/{shown[0]}")
        assert browser.find_element(By.ID, "disagreement").text == "labellers disagree"
        browser.get(f"{base}/queue")
        assert shown[0] in browser.find_element(By.ID, "disagreements").text

    # a hostile name is stored and shown as text
    sign_in(HOSTILE)
    browser.get(f"{base}/candidate/{shown[1]}")
    press("u")
    wait.until(lambda d: d.find_elements(By.ID, "candidate-id") and current_candidate() != shown[1])
    sign_in("ana")
    browser.get(f"{base}/candidate/{shown[1]}")
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#labels td.labeller")]
    assert names == ["ana", HOSTILE]
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 — no script of the name ran
    assert labels_in_database(url).labeller.tolist()[-1] == HOSTILE

    # a form post without the CSRF token is refused, although the session is signed in
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/candidate/{shown[2]}/label', {{method: 'POST', body: new URLSearchParams({{label: 'bogus'}})}})"
        ".then(r => done(r.status), e => done(String(e)));")
    assert status == 403
    assert len(labels_in_database(url)) == 5

    # the screenshot the README shows: a candidate with its triplet, labels and disagreement
    browser.get(f"{base}/candidate/{shown[0]}")
    wait.until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth === 63)"))
    screenshot = ui_output / "review.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("ASTRID_UPDATE_DOCS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(screenshot, REPO / "docs" / "review.png")

    # without a session: the sign-in page, for pages and stamps alike
    browser.delete_all_cookies()
    for path in ("/overview", f"/candidate/{shown[0]}"):
        browser.get(f"{base}{path}")
        assert browser.find_elements(By.ID, "signin-form"), path
