"""The web UI's task-group inspector and task pages in headless Chromium,
against ``bbb up`` on SQLite and ``bbb up`` on a PostgreSQL database (its
native worker runs the tasks, its hooks service fires the actions).

The actions are the demo repository's own: ``bbb up``'s demo push has a
decision task that publishes ``public/actions.json`` as taskgraph's does, and
firing its retrigger from a task's page runs the action task of the CI
service's in-tree action hook, which retriggers the task on the native
worker. Users sign in through the sign-in form, as a person does: ``alice``
and ``bob`` are ``[login]`` users of the configuration file (password hashes
made by ``bbb login hash-password``); ``alice``'s role grants what the pages
offer, ``bob``'s nothing. Every page looked at is kept as a screenshot
(``target/test-logs/screenshots``).
"""

from __future__ import annotations

import datetime
import json
import re

import pytest
import requests
import taskcluster
from selenium.webdriver.common.by import By

from bbbtest import PostgresDatabase, UpProcess, hash_password, wait_for, wait_for_state
from browser import PHONE, Browser

#: Tasks run on bbb up's native worker; each test takes a while.
TEST_TIMEOUT_S = 240

PASSWORDS = {"alice": "alice's long passphrase", "bob": "bob's long passphrase"}

ROLES = {
    "login-identity:alice": [
        "queue:rerun-task:*",
        "queue:cancel-task:*",
        "queue:create-task:*",
        "queue:scheduler-id:web-test",
        "queue:claim-task:null-provisioner/human-decision",
        "queue:worker-id:human-decision/alice",
        # The demo's actions: its trust domain's in-tree action hooks.
        "hooks:trigger-hook:project-demo/*",
    ],
    "login-identity:bob": [],
}


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def config(path) -> str:
    """A configuration file with alice and bob as users and their roles."""
    with open(path, "w") as f:
        for user, password in PASSWORDS.items():
            f.write(f"[[login.users]]\nname = \"{user}\"\npassword_hash = {json.dumps(hash_password(password))}\n\n")
        for role, scopes in ROLES.items():
            f.write(f"[[auth.roles]]\nrole_id = \"{role}\"\nscopes = {toml_list(scopes)}\n\n")
    return str(path)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def up(request, tmp_path_factory):
    """``bbb up`` on SQLite, or on a fresh PostgreSQL database; with the
    users alice and bob."""
    workdir = tmp_path_factory.mktemp(f"web-{request.param}")
    env = {"BBB_CONFIG": config(workdir / "bbb.toml")}
    if request.param == "postgres":
        db = PostgresDatabase.create()
        request.addfinalizer(db.drop)
        env["BBB_DATABASE_URL"] = db.url
    process = UpProcess(workdir, **env)
    process.start(timeout=120)
    request.addfinalizer(process.stop)
    return process


def sign_in(browser: Browser, up: UpProcess, user: str, next_path: str = "/") -> None:
    """Sign ``user`` in through the sign-in form."""
    browser.sign_in(up.root_url, user, PASSWORDS[user], next_path)


def now_plus(seconds: float) -> str:
    return taskcluster.stringDate(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds))


def definition(group: str, name: str, task_queue: str = "bbb/native", command: str = "echo hello", **more) -> dict:
    task = {
        "taskQueueId": task_queue,
        "taskGroupId": group,
        "schedulerId": "web-test",
        "created": now_plus(0),
        "deadline": now_plus(3600),
        "payload": {"command": [["sh", "-c", command]], "maxRunTime": 300},
        "metadata": {"name": name, "description": "a task of the web tests", "owner": "web@example.com", "source": "https://example.com/web"},
        "tags": {"kind": "test"},
    }
    task.update(more)
    return task


def button(browser: Browser, label: str):
    return browser.driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']")


def demo_push_graph(up: UpProcess) -> dict:
    """The demo push's task group once its graph has finished: name -> task
    id (the decision task's id is the group's)."""
    log = wait_for(
        lambda: "demo push: graph finished" in up.log_path.read_text() and up.log_path.read_text(),
        200,
        "the demo push's graph",
    )
    group = re.search(r"demo push: decision task (\S+)", log).group(1)
    tasks = up.queue().listTaskGroup(group)["tasks"]
    return {t["task"]["metadata"]["name"]: t["status"]["taskId"] for t in tasks}


def fill_in_retrigger(browser: Browser, times: int, downstream: bool) -> None:
    """Open the retrigger action's form on a task's page and fill it in."""
    retrigger = browser.wait_for(
        lambda: next((d for d in browser.find_all("details.action") if "Retrigger" in d.text), None),
        15,
        "the retrigger action",
    )
    retrigger.find_element(By.TAG_NAME, "summary").click()
    field = retrigger.find_element(By.CSS_SELECTOR, "input[type=number]")
    label = browser.driver.find_element(By.CSS_SELECTOR, f"label[for='{field.get_attribute('id')}']")
    assert label.text.startswith("Times")
    field.clear()
    field.send_keys(str(times))
    box = retrigger.find_element(By.CSS_SELECTOR, "input[type=checkbox]")
    if box.is_selected() != downstream:
        box.click()


def test_retrigger_through_the_demos_action_button(up, browser):
    queue = up.queue()
    graph = demo_push_graph(up)
    group, build = graph["Decision Task"], graph["build-linux64"]
    # What the decision task published: taskgraph's actions.json, whose
    # actions fire the in-tree action hook of the demo's .taskcluster.yml.
    published = requests.get(queue.buildUrl("getLatestArtifact", group, "public/actions.json"), timeout=10).json()
    assert published["version"] == 1
    assert [a["name"] for a in published["actions"]] == ["retrigger", "rerun", "cancel", "cancel-all"]
    hook = up.client("Hooks").hook(published["actions"][0]["hookGroupId"], published["actions"][0]["hookId"])
    assert hook["hookGroupId"] == "project-demo"
    assert hook["hookId"].startswith("in-tree-action-1-generic/")

    # Bob may not trigger the hook: the refusal, and no action task.
    sign_in(browser, up, "bob", f"/tasks/{build}")
    fill_in_retrigger(browser, times=1, downstream=False)
    button(browser, "Retrigger").click()
    browser.wait_for_text("InsufficientScopes")
    assert f"hooks:trigger-hook:{hook['hookGroupId']}/{hook['hookId']}" in browser.text()
    browser.screenshot("retrigger refused to bob")
    assert len(queue.listTaskGroup(group)["tasks"]) == len(graph)

    sign_in(browser, up, "alice", f"/groups/{group}")
    assert browser.title == f"Task group {group} · bbb"
    browser.wait_for_text("Cancel all")
    browser.screenshot("demo group with its actions")
    browser.open(f"{up.root_url}/tasks/{build}")
    fill_in_retrigger(browser, times=2, downstream=True)
    browser.screenshot("retrigger form")
    button(browser, "Retrigger").click()
    browser.wait_for_text("New tasks")
    browser.screenshot("retriggered")
    action_task = browser.find("ul.created a").text

    # The action task runs on the native worker and retriggers the build
    # twice, with the test below it each time.
    action = queue.task(action_task)
    assert action["taskGroupId"] == group
    assert action["metadata"]["name"] == "Action: Retrigger"
    assert action["scopes"] == ["assume:repo:bbb.localhost/demo:action:generic"]
    assert json.loads(action["payload"]["env"]["ACTION_INPUT"]) == {"times": 2, "downstream": True}
    wait_for_state(queue, action_task, "completed", timeout=120)
    tasks = queue.listTaskGroup(group)["tasks"]
    builds = [t for t in tasks if t["task"]["metadata"]["name"] == "build-linux64" and t["status"]["taskId"] != build]
    tests = [t for t in tasks if t["task"]["metadata"]["name"] == "test-linux64" and t["status"]["taskId"] != graph["test-linux64"]]
    assert len(builds) == 2 and len(tests) == 2, [t["task"]["metadata"]["name"] for t in tasks]
    new_builds = {t["status"]["taskId"] for t in builds}
    assert {t["task"]["dependencies"][0] for t in tests} == new_builds
    for t in builds + tests:
        wait_for_state(queue, t["status"]["taskId"], "completed", timeout=120)

    browser.open(f"{up.root_url}/groups/{group}")
    for task_id in new_builds:
        browser.wait_for_text(task_id)
    assert "Action: Retrigger" in browser.text()
    browser.screenshot("group with the new tasks")


def test_follow_a_live_log_while_it_grows(up, browser):
    queue = up.queue()
    group = taskcluster.slugId()
    command = 'for i in $(seq 1 40); do echo "log line $i"; sleep 0.25; done'
    queue.createTask(group, definition(group, "chatty", command=command))
    wait_for_state(queue, group, "running", timeout=60)
    wait_for(
        lambda: any(a["name"] == "public/logs/live.log" for a in queue.listArtifacts(group, 0)["artifacts"]),
        30,
        "the live log artifact",
    )
    browser.open(f"{up.root_url}/tasks/{group}")
    assert "Live log of run 0" in browser.text()
    browser.driver.execute_script("window.__samePage = true")
    log = lambda: browser.find("pre#log").text  # noqa: E731
    browser.wait_for(lambda: "log line 3" in log(), 30, "the first lines")
    first = log()
    assert "log line 40" not in first, "the run is still running"
    browser.wait_for(lambda: "log line 20" in log(), 30, "more lines")
    assert len(log()) > len(first)
    assert browser.driver.execute_script("return window.__samePage") is True, "the page was not reloaded"
    browser.driver.execute_script("document.getElementById('log').scrollIntoView()")
    browser.screenshot("live log")
    wait_for_state(queue, group, "completed", timeout=60)
    browser.open(f"{up.root_url}/tasks/{group}")
    assert "Log of run 0" in browser.text()
    browser.wait_for(lambda: "log line 40" in log(), 30, "the backing log")
    browser.wait_for_text("End of the log.")
    browser.driver.execute_script("document.getElementById('log').scrollIntoView()")
    browser.screenshot("backing log")


def test_resolve_a_human_decision_task(up, browser):
    queue = up.queue()
    group = taskcluster.slugId()
    queue.createTask(group, definition(group, "ship it?", task_queue="null-provisioner/human-decision"))
    sign_in(browser, up, "bob")
    browser.open(f"{up.root_url}/tasks/{group}")
    button(browser, "Complete (go ahead)").click()
    browser.wait_for_text("InsufficientScopes")
    assert "queue:claim-task:null-provisioner/human-decision" in browser.text()
    browser.screenshot("refused to bob")
    assert queue.status(group)["status"]["state"] == "pending"

    sign_in(browser, up, "alice")
    browser.open(f"{up.root_url}/tasks/{group}")
    browser.screenshot("decision waiting")
    button(browser, "Complete (go ahead)").click()
    browser.wait_for_text("resolved by alice")
    browser.screenshot("decided")
    run = queue.status(group)["status"]["runs"][0]
    assert (run["state"], run["workerGroup"], run["workerId"]) == ("completed", "human-decision", "alice")


def test_names_are_escaped_unknown_ids_are_not_found_and_a_phone_fits(up, browser):
    queue = up.queue()
    group = taskcluster.slugId()
    evil = "<script>window.__pwned = 1</script>"
    queue.createTask(group, definition(group, evil, task_queue="null-provisioner/human-decision"))
    for i in range(3):
        queue.createTask(taskcluster.slugId(), definition(group, f"a task with a rather long name number {i}", dependencies=[group]))
    browser.open(f"{up.root_url}/tasks/{group}")
    assert browser.find("h1").text == f"Task {evil}"
    assert browser.driver.execute_script("return window.__pwned") is None
    browser.screenshot("escaped name")
    browser.open(f"{up.root_url}/groups/{group}?task={group}")
    assert evil in browser.text()
    assert browser.driver.execute_script("return window.__pwned") is None
    browser.screenshot("group with graph")

    browser.open(f"{up.root_url}/tasks/{taskcluster.slugId()}")
    assert browser.title == "Not found · bbb"
    assert "was not found." in browser.text()
    browser.screenshot("unknown task")
    browser.open(f"{up.root_url}/groups/not-a-group")
    assert browser.title == "Not found · bbb"

    browser.resize(PHONE)
    sign_in(browser, up, "alice")
    for path in (f"/groups/{group}?task={group}", f"/tasks/{group}"):
        browser.open(up.root_url + path)
        fits = browser.driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        browser.screenshot("phone " + path.split("/")[1])
        assert fits, f"{path} is wider than a phone"
    # Keyboard: the decision's buttons take the focus.
    first = button(browser, "Complete (go ahead)")
    browser.driver.execute_script("arguments[0].focus()", first)
    assert browser.driver.switch_to.active_element == first


def test_cancel_a_running_task(up, browser):
    # Last: the worker learns of the cancellation only when it next
    # reclaims, so it stays busy until the command ends.
    queue = up.queue()
    group = taskcluster.slugId()
    queue.createTask(group, definition(group, "long-running", command="echo started; sleep 25"))
    wait_for_state(queue, group, "running", timeout=60)
    sign_in(browser, up, "alice")
    browser.open(f"{up.root_url}/tasks/{group}")
    assert "go straight to the queue" in browser.text()
    browser.screenshot("running task")
    button(browser, "Cancel").click()
    browser.wait_for_text("is exception (cancelTask)")
    browser.screenshot("cancelled")
    browser.find("main p a").click()
    browser.wait_for_text("Run 0: exception")
    assert queue.status(group)["status"]["runs"][0]["reasonResolved"] == "canceled"
    browser.screenshot("task after cancel")
