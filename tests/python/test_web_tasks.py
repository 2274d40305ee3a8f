"""The web UI's task-group inspector and task pages in headless Chromium,
against ``bbb up`` on SQLite and ``bbb up`` on a PostgreSQL database (its
native worker runs the tasks, its hooks service fires the actions).

Users are signed in by their session cookie, holding temporary credentials
for ``assume:login-identity:<user>`` (what the sign-in issues); ``alice``'s
role grants what the pages offer, ``bob``'s nothing. Every page looked at
is kept as a screenshot (``target/test-logs/screenshots``).
"""

from __future__ import annotations

import base64
import datetime
import json

import pytest
import taskcluster
from selenium.webdriver.common.by import By

from bbbtest import PostgresDatabase, UpProcess, wait_for, wait_for_state
from browser import PHONE, Browser

#: Tasks run on bbb up's native worker; each test takes a while.
TEST_TIMEOUT_S = 240

HOOK_GROUP = "web-test"

ROLES = {
    "login-identity:alice": [
        "queue:rerun-task:*",
        "queue:cancel-task:*",
        "queue:create-task:*",
        "queue:scheduler-id:web-test",
        "queue:claim-task:null-provisioner/human-decision",
        "queue:worker-id:human-decision/alice",
        f"hooks:trigger-hook:{HOOK_GROUP}/*",
    ],
    "login-identity:bob": [],
    f"hook-id:{HOOK_GROUP}/*": ["queue:create-task:*", "queue:scheduler-id:web-test"],
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def up(request, tmp_path_factory):
    """``bbb up`` on SQLite, or on a fresh PostgreSQL database; with the
    users' roles and the action hook."""
    env = {}
    if request.param == "postgres":
        db = PostgresDatabase.create()
        request.addfinalizer(db.drop)
        env["BBB_DATABASE_URL"] = db.url
    process = UpProcess(tmp_path_factory.mktemp(f"web-{request.param}"), **env)
    process.start(timeout=120)
    request.addfinalizer(process.stop)
    auth = process.client("Auth")
    for role, scopes in ROLES.items():
        auth.createRole(role, {"description": "web UI tests", "scopes": scopes})
    wait_for(
        lambda: "queue:rerun-task:*" in auth.expandScopes({"scopes": ["assume:login-identity:alice"]})["scopes"],
        10,
        "the users' roles in force",
    )
    hook = {
        "metadata": {"name": "an action", "description": "what the web tests' actions fire", "owner": "web@example.com"},
        "task": {
            "taskQueueId": "built-in/succeed",
            "taskGroupId": "${payload.user.taskGroupId}",
            "schedulerId": "web-test",
            "payload": {"given": {"$eval": "payload"}},
            "metadata": {
                "name": "retriggered ${payload.user.input.times}x",
                "description": "made by an action",
                "owner": "web@example.com",
                "source": "https://example.com/web",
            },
        },
        "triggerSchema": {"type": "object"},
    }
    process.client("Hooks").createHook(HOOK_GROUP, "act", hook)
    return process


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


def sign_in(browser: Browser, up: UpProcess, user: str) -> None:
    """Sign ``user`` in: the session cookie the sign-in would set."""
    now = datetime.datetime.now(datetime.timezone.utc)
    expires = now + datetime.timedelta(hours=1)
    creds = taskcluster.createTemporaryCredentials(
        "root", up.token, now - datetime.timedelta(minutes=1), expires, [f"assume:login-identity:{user}"]
    )
    session = {
        "user": user,
        # The Python client gives some of these as bytes.
        "credentials": {
            k: creds[k].decode() if isinstance(creds[k], bytes) else creds[k]
            for k in ("clientId", "accessToken", "certificate")
        },
        "expires": expires.isoformat().replace("+00:00", "Z"),
    }
    value = base64.urlsafe_b64encode(json.dumps(session).encode()).decode().rstrip("=")
    browser.set_cookie(up.root_url, "bbb-session", value)


def button(browser: Browser, label: str):
    return browser.driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']")


def actions_json() -> dict:
    payload = {
        "decision": {"from": "the decision task"},
        "user": {"input": {"$eval": "input"}, "taskId": {"$eval": "taskId"}, "taskGroupId": {"$eval": "taskGroupId"}},
    }
    return {
        "version": 1,
        "variables": {},
        "actions": [
            {
                "name": "retrigger",
                "title": "Retrigger",
                "kind": "hook",
                "context": [{"kind": "test"}],
                "description": "Create a clone of the task.",
                "hookGroupId": HOOK_GROUP,
                "hookId": "act",
                "hookPayload": payload,
                "schema": {
                    "type": "object",
                    "properties": {
                        "times": {"type": "integer", "default": 1, "minimum": 1, "maximum": 10, "title": "Times"},
                        "downstream": {"type": "boolean", "default": False, "title": "Downstream"},
                    },
                    "required": ["times"],
                    "additionalProperties": False,
                },
            },
            {
                "name": "cancel-all",
                "title": "Cancel all",
                "kind": "hook",
                "context": [],
                "hookGroupId": HOOK_GROUP,
                "hookId": "act",
                "hookPayload": payload,
            },
        ],
    }


def test_retrigger_through_an_action_button(up, browser):
    queue = up.queue()
    group = taskcluster.slugId()
    # The decision task publishes its actions as taskgraph's does.
    queue.createTask(
        group,
        definition(
            group,
            "Decision Task",
            command="mkdir -p out && printf '%s' \"$ACTIONS\" > out/actions.json",
            scopes=[f"in-tree:hook-action:{HOOK_GROUP}/act"],
            payload={
                "command": [["sh", "-c", "mkdir -p out && printf '%s' \"$ACTIONS\" > out/actions.json"]],
                "env": {"ACTIONS": json.dumps(actions_json())},
                "artifacts": [{"type": "file", "path": "out/actions.json", "name": "public/actions.json"}],
                "maxRunTime": 60,
            },
        ),
    )
    wait_for_state(queue, group, "completed", timeout=60)
    target = taskcluster.slugId()
    queue.createTask(target, definition(group, "test-unit"))
    wait_for_state(queue, target, "completed", timeout=60)

    sign_in(browser, up, "alice")
    browser.open(f"{up.root_url}/groups/{group}")
    assert browser.title == f"Task group {group} · bbb"
    browser.wait_for_text("Cancel all")
    browser.screenshot("group with actions")
    browser.open(f"{up.root_url}/tasks/{target}")
    browser.find("details.action summary").click()
    times = browser.find("details.action input[type=number]")
    assert browser.driver.find_element(By.CSS_SELECTOR, f"label[for='{times.get_attribute('id')}']").text.startswith("Times")
    times.clear()
    times.send_keys("2")
    browser.screenshot("retrigger form")
    button(browser, "Retrigger").click()
    browser.wait_for_text("New tasks")
    browser.screenshot("retriggered")
    new_id = browser.find("ul.created a").text
    assert queue.task(new_id)["metadata"]["name"] == "retriggered 2x"
    assert queue.task(new_id)["payload"]["given"]["user"] == {
        "input": {"times": 2, "downstream": False},
        "taskId": target,
        "taskGroupId": group,
    }
    browser.open(f"{up.root_url}/groups/{group}")
    browser.wait_for_text(new_id)
    assert "retriggered 2x" in browser.text()
    browser.screenshot("group with the new task")


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
