"""The migration dashboard and the health page in headless Chromium, against
``bbb up`` on SQLite and on PostgreSQL (its queue and the bridge's mapping
database): the demo repository's push runs native tasks and a bridged build
on the sandbox master, so the demo branch has shares; a pairing set through
the migration API makes a parity row, a milestone set through it shows its
progress bar; the health page's figures change without a reload when a task
becomes pending; the pages fit a phone's width; an unknown branch is a clear
not-found page. Every page is kept as a screenshot."""

from __future__ import annotations

import pytest
import taskcluster
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from browser import PHONE
from bbbtest import PostgresDatabase, UpProcess, random_word, task_definition, wait_for

#: ``bbb up`` runs the demo push's whole graph first.
TEST_TIMEOUT_S = 400


def _entry(name: str, method: str, route: str, args: list[str], **more) -> dict:
    return {"type": "function", "name": name, "method": method, "route": route, "args": args, **more}


#: A client of the migration record's API (``/api/migration/v1/``), which has
#: no official client: the official library's generic client over a
#: reference of the methods used here.
Migration = taskcluster.client.createApiClient(
    "Migration",
    {
        "reference": {
            "serviceName": "migration",
            "apiVersion": "v1",
            "entries": [
                _entry("listJobs", "get", "/branches/<branch>/jobs", ["branch"]),
                _entry("setMapping", "put", "/mapping/<branch>/<label>", ["branch", "label"], input="mapping"),
                _entry("createMilestone", "put", "/milestones/<name>", ["name"], input="milestone"),
            ],
        }
    },
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def up(request, tmp_path_factory):
    """``bbb up`` once its demo push's graph has finished and the migration
    record holds its four jobs."""
    env = {}
    databases = []
    if request.param == "postgres":
        databases = [PostgresDatabase.create(), PostgresDatabase.create()]
        env = {"BBB_DATABASE_URL": databases[0].url, "BBB_STATE_DATABASE_URL": databases[1].url}
    try:
        with UpProcess(tmp_path_factory.mktemp(f"web-{request.param}"), **env) as up:
            wait_for(lambda: "demo push: graph finished" in up.log_path.read_text(), 300, "the demo push's graph")
            migration = Migration({"rootUrl": up.root_url, "credentials": up.root_credentials()})

            def recorded():
                try:
                    jobs = migration.listJobs("demo")["jobs"]
                except taskcluster.TaskclusterRestFailure:
                    return None
                return jobs if len(jobs) == 4 else None

            wait_for(recorded, 60, "the demo push's results in the migration record", interval=0.5)
            up.migration = migration
            yield up
    finally:
        for db in databases:
            db.drop()


def test_the_dashboard_shows_the_demo_branch_a_parity_row_and_a_milestone(up, browser):
    # The native build is the legacy builder's job: a pair.
    up.migration.setMapping("demo", "build-linux64", {"builder": "linux.build"})
    up.migration.createMilestone(
        "demo-native",
        {
            "branch": "demo",
            "due": "2099-01-17",
            "jobs": ["build-linux64", "test-linux64", "legacy-build-linux64"],
            "description": "Every demo job <native>",
        },
    )
    browser.open(up.root_url + "/")
    assert browser.title == "Migration · bbb"
    row = browser.find('tr[data-branch="demo"]')
    # decision, build-linux64, test-linux64 natively; legacy-build-linux64 bridged.
    assert row.find_element(By.CSS_SELECTOR, '[data-figure="jobs"]').text == "4"
    assert row.find_element(By.CSS_SELECTOR, '[data-figure="native"]').text == "3 (75%)"
    assert row.find_element(By.CSS_SELECTOR, '[data-figure="bridged"]').text == "1 (25%)"
    assert row.find_element(By.CSS_SELECTOR, '[data-figure="buildbot-only"]').text == "0 (0%)"
    assert "main: taskgraph" in row.text
    assert row.find_elements(By.CSS_SELECTOR, "svg.chart rect.native")
    milestone = browser.find('tr[data-milestone="demo-native"]')
    bar = milestone.find_element(By.TAG_NAME, "progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("2", "3")
    assert bar.get_attribute("aria-label") == "demo-native: 2 of 3 jobs native"
    assert "Every demo job <native>" in milestone.text
    assert "legacy-build-linux64" in milestone.text
    browser.screenshot("dashboard")

    # Keyboard: the first Tab reaches the navigation's first link.
    ActionChains(browser.driver).send_keys(Keys.TAB).perform()
    focused = browser.driver.switch_to.active_element
    assert (focused.tag_name, focused.text) == ("a", "Migration")

    # The branch: its pair, its push and decision task.
    row.find_element(By.LINK_TEXT, "demo").click()
    browser.wait_for(lambda: browser.title == "Branch demo · bbb", 15, "the branch page")
    pair = browser.find('tr[data-job="build-linux64"]')
    assert "pair" in pair.get_attribute("class")
    assert "linux.build" in pair.text
    assert pair.find_element(By.CSS_SELECTOR, '[data-figure="runs-on"]').text == "native"
    # The sandbox master runs no build of its own: nothing compared yet.
    assert pair.find_element(By.CSS_SELECTOR, '[data-figure="agree"]').text == "0 / 0"
    assert pair.find_element(By.CSS_SELECTOR, '[data-figure="false-failures"]').text == "0"
    bridged = browser.find('tr[data-job="legacy-build-linux64"]')
    assert bridged.find_element(By.CSS_SELECTOR, '[data-figure="runs-on"]').text == "bridged"
    decision = browser.find("#pushes a[href^='/tasks/']")
    assert decision.text.startswith("decision task")
    assert browser.find("svg.chart").get_attribute("role") == "img"
    browser.screenshot("branch")

    # The pair's runs compared.
    pair.find_element(By.CSS_SELECTOR, '[data-figure="agree"] a').click()
    browser.wait_for(lambda: browser.title == "build-linux64 on demo · bbb", 15, "the pair page")
    assert browser.find('[data-figure="both-ran"]').text.startswith("0 of the last")
    browser.screenshot("pair")

    # A phone: the page fits its width (wide tables scroll in their box).
    browser.resize(PHONE)
    browser.open(up.root_url + "/")
    fits = browser.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert fits
    browser.screenshot("dashboard-phone")

    # An unknown branch.
    browser.open(up.root_url + "/branches/nowhere")
    assert browser.title == "Not found · bbb"
    assert "Branch nowhere was not found." in browser.find("[role=alert]").text
    browser.screenshot("unknown-branch")


def test_the_health_page_figures_refresh_live(up, browser):
    browser.open(up.root_url + "/health")
    assert browser.title == "Health · bbb"
    # The bridge's process reports every few seconds: its master and process appear.
    browser.wait_for(lambda: browser.find_all("tr[data-master]"), 30, "the bridge's master")
    browser.wait_for(lambda: browser.find_all("tr[data-process]"), 30, "the bridge's process")
    process = browser.find("tr[data-process]")
    assert "no reflector" not in process.text
    browser.driver.execute_script("window.notReloaded = true")
    task_queue = f"bbb-test/web-{random_word(8)}"
    queue = up.queue()

    def pending_shown():
        cells = browser.find_all(f'tr[data-task-queue="{task_queue}"] [data-figure="pending"]')
        return cells[0].text if cells else None

    for n in (1, 2):
        queue.createTask(taskcluster.slugId(), task_definition(task_queue))
        browser.wait_for(lambda: pending_shown() == str(n), 20, f"{n} pending on {task_queue}")
    assert browser.driver.execute_script("return window.notReloaded === true")
    browser.screenshot("health")
    browser.resize(PHONE)
    fits = browser.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert fits
    browser.screenshot("health-phone")
