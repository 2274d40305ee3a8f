"""``bbb task`` and ``bbb group``: upstream's ``taskcluster task`` and
``taskcluster group`` verbs, run as the real ``bbb`` binary against a running
``bbb up`` with credentials from the ``TASKCLUSTER_*`` variables. Tasks are
made with the official Python client: native ones on ``bbb/native`` (the
worker of ``bbb up`` runs them), bridged ones on the sandbox master, and
tasks no worker serves (they stay pending)."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
import taskcluster

from bbbtest import UpProcess, bbb_binary, new_task_queue, task_definition, wait_for, wait_for_state


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """One ``bbb up`` for the module (its demo tasks live in groups of their own)."""
    with UpProcess(tmp_path_factory.mktemp("cli")) as up:
        yield up


@pytest.fixture
def queue(up) -> taskcluster.Queue:
    return up.queue()


def cli(up, *args: str, credentials: dict | None | bool = True, answer: str = "", env: dict | None = None):
    """Runs ``bbb <args>`` with the root credentials (``credentials=True``),
    others, or none (``None``); ``answer`` is its standard input."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCLUSTER_", "BBB_"))}
    environment["TASKCLUSTER_ROOT_URL"] = up.root_url
    if credentials is True:
        credentials = up.root_credentials()
    if credentials:
        environment["TASKCLUSTER_CLIENT_ID"] = credentials["clientId"]
        environment["TASKCLUSTER_ACCESS_TOKEN"] = credentials["accessToken"]
        if credentials.get("certificate"):
            certificate = credentials["certificate"]
            environment["TASKCLUSTER_CERTIFICATE"] = (
                certificate if isinstance(certificate, str) else json.dumps(certificate)
            )
    environment.update(env or {})
    return subprocess.run(
        [str(bbb_binary()), *args],
        env=environment,
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result) -> str:
    """The standard output of a command that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def refused(result, *fragments: str) -> str:
    """The error line of a command that must have failed with status 1."""
    assert result.returncode == 1, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error, result.stderr
    text = result.stderr[result.stderr.index("Error: ") :]
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def native(queue, script: str, **overrides) -> str:
    """Creates a task that runs ``sh -c script`` on the native worker."""
    task_id = taskcluster.slugId()
    definition = task_definition("bbb/native", **overrides)
    definition["payload"] = {"command": [["sh", "-c", script]], "maxRunTime": 300}
    queue.createTask(task_id, definition)
    return task_id


def parked(queue, task_queue_id: str | None = None, **overrides) -> str:
    """Creates a task on a task queue no worker serves: it stays pending."""
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(task_queue_id or new_task_queue(), **overrides))
    return task_id


def test_status_def_name_group_and_artifacts(up, queue):
    group = taskcluster.slugId()
    task_id = native(queue, "echo hello from bbb task", taskGroupId=group)
    wait_for_state(queue, task_id, "completed", timeout=60)

    # As upstream: the state, then the reason it was resolved.
    assert ok(cli(up, "task", "status", task_id)) == "completed 'completed'\n"
    assert ok(cli(up, "task", "status", "--all-runs", task_id)) == "Run #0: completed 'completed'\n"
    assert ok(cli(up, "task", "status", "-r", "0", task_id)) == "completed 'completed'\n"
    refused(cli(up, "task", "status", "--run", "3", task_id), "Error: there is no run #3")
    refused(cli(up, "task", "status", "-a", "-r", "0", task_id), "can't specify both all-runs and a specific run")

    assert json.loads(ok(cli(up, "task", "def", task_id))) == queue.task(task_id)
    assert ok(cli(up, "task", "name", task_id)) == "bbb compatibility test task\n"
    assert ok(cli(up, "task", "group", task_id)) == f"{group}\n"

    names = ok(cli(up, "task", "artifacts", task_id)).splitlines()
    assert names == [a["name"] for a in queue.listLatestArtifacts(task_id)["artifacts"]]
    assert {"public/logs/live.log", "public/logs/live_backing.log"} <= set(names)
    assert ok(cli(up, "task", "artifacts", "--run", "0", task_id)).splitlines() == names
    refused(cli(up, "task", "artifacts", "-r", "1", task_id), "there is no run #1")


def test_an_unknown_task_is_a_clear_error(up):
    unknown = taskcluster.slugId()
    for verb, words in [
        ("status", "could not get the status of the task"),
        ("def", "could not get the task"),
        ("artifacts", "could not get the status of the task"),
        ("log", "could not get the status of the task"),
        ("cancel", "could not cancel the task"),
        ("rerun", "could not get status of the task"),
        ("retrigger", "could not get the task"),
    ]:
        error = refused(cli(up, "task", verb, unknown), f"Error: {words} {unknown}: ", f"Task {unknown} not found")
        assert "404" in error, error
    for verb in ("status", "list", "cancel"):
        refused(
            cli(up, "group", verb, "-f" if verb == "cancel" else "-a", unknown)
            if verb != "status"
            else cli(up, "group", verb, unknown),
            f"Error: could not fetch tasks for group {unknown}: ",
            f"Task group {unknown} not found",
            "404",
        )


def test_log_of_finished_native_and_bridged_tasks(up, queue):
    task_id = native(queue, "echo the native output")
    wait_for_state(queue, task_id, "completed", timeout=60)
    log = ok(cli(up, "task", "log", task_id))
    backing = requests.get(queue.getLatestArtifact(task_id, "public/logs/live_backing.log")["url"], timeout=10).text
    assert "the native output" in log
    assert log == (backing if backing.endswith("\n") else backing + "\n")

    # A bridged task has no live log: its build's log, from the sandbox master.
    bridged = taskcluster.slugId()
    definition = task_definition("buildbot-bridge/buildbot-bridge")
    definition["payload"] = {
        "buildername": "linux.build",
        "properties": {"product": "firefox", "sim_duration_ms": 100},
        "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": "abcdef012345"},
    }
    queue.createTask(bridged, definition)
    wait_for_state(queue, bridged, "completed", timeout=60)
    log = ok(cli(up, "task", "log", bridged))
    assert log.startswith("builder: linux.build\n"), log
    assert f"the build of task {bridged}, build request " in log, log

    pending = parked(queue)
    refused(
        cli(up, "task", "log", pending),
        f"Error: could not fetch the logs of task {pending} because it's in a pending state",
    )


def test_log_follows_a_running_task(up, queue):
    marker = Path(f"/tmp/bbb-cli-{uuid.uuid4().hex}")
    task_id = native(
        queue,
        f"echo first line; while [ ! -e {marker} ]; do sleep 0.1; done; echo last line",
    )
    wait_for_state(queue, task_id, "running", timeout=60)
    # The worker posts the live log's artifact as the task starts.
    wait_for(
        lambda: "public/logs/live.log" in [a["name"] for a in queue.listLatestArtifacts(task_id)["artifacts"]],
        60,
        "the live log's artifact",
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCLUSTER_", "BBB_"))}
    environment["TASKCLUSTER_ROOT_URL"] = up.root_url
    follower = subprocess.Popen(
        [str(bbb_binary()), "task", "log", task_id],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        # The task cannot end before the marker exists: what is read now
        # comes from the live log while the task runs.
        while not any("first line" in line for line in seen):
            line = follower.stdout.readline()
            assert line, f"the log ended early: {seen} {follower.stderr.read()}"
            seen.append(line)
        assert queue.status(task_id)["status"]["state"] == "running"
        marker.touch()
        rest = follower.stdout.read()
        assert follower.wait(timeout=60) == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
        marker.unlink(missing_ok=True)
    assert "last line" in rest, "".join(seen) + rest
    wait_for_state(queue, task_id, "completed", timeout=60)


def test_cancel_rerun_complete_and_retrigger(up, queue):
    task_id = parked(queue)
    name = "bbb compatibility test task"
    assert ok(cli(up, "task", "cancel", "--noop", task_id)) == f"Would cancel {name} taskid: {task_id} (state: pending)\n"
    asked = ok(cli(up, "task", "cancel", "--confirm", task_id, answer="n\n"))
    assert asked == f"Cancels {name} taskId: {task_id} (state: pending). Are you sure you want to proceed?(y/N) "
    assert queue.status(task_id)["status"]["state"] == "pending"
    assert ok(cli(up, "task", "cancel", "-c", task_id, answer="maybe\nyes\n")).endswith("exception 'canceled'\n")
    status = queue.status(task_id)["status"]
    assert (status["state"], status["runs"][0]["reasonResolved"]) == ("exception", "canceled")

    assert ok(cli(up, "task", "rerun", "-n", task_id)) == f"Would re-run {name} taskid: {task_id} (state: exception)\n"
    assert ok(cli(up, "task", "rerun", task_id)) == "pending\n"
    assert [r["state"] for r in queue.status(task_id)["status"]["runs"]] == ["exception", "pending"]

    assert ok(cli(up, "task", "complete", task_id)) == "completed 'completed'\n"
    assert queue.status(task_id)["status"]["runs"][1]["workerId"] == "taskcluster-cli"
    refused(
        cli(up, "task", "rerun", task_id),
        f"Error: task {task_id} is in state completed. Disallowing rerun of a non-failed and non-exception task without --force",
    )
    assert ok(cli(up, "task", "rerun", "--force", task_id)) == "pending\n"

    # A retrigger is a new task: new times, no retries, and without its
    # dependencies and routes unless --exact.
    route = f"index.bbb.cli-test.{taskcluster.slugId().lower()}"
    original = parked(queue, dependencies=[task_id], routes=[route], retries=3)
    out = ok(cli(up, "task", "retrigger", original))
    assert out.startswith("Task ") and out.endswith(" created\n"), out
    copy = out.split()[1]
    assert copy != original
    source, made = queue.task(original), queue.task(copy)
    assert (made["dependencies"], made["routes"], made["retries"]) == ([], [], 0)
    for field in ("payload", "metadata", "taskGroupId", "schedulerId", "taskQueueId", "priority", "scopes", "tags", "extra"):
        assert made[field] == source[field], field
    def span(task, field):
        moment = lambda name: datetime.datetime.fromisoformat(task[name].replace("Z", "+00:00"))  # noqa: E731
        return moment(field) - moment("created")

    assert span(made, "deadline") == span(source, "deadline")
    assert span(made, "expires") == span(source, "expires")
    assert made["created"] > source["created"]
    exact = ok(cli(up, "task", "retrigger", "--exact", original)).split()[1]
    made = queue.task(exact)
    assert (made["dependencies"], made["routes"]) == ([task_id], [route])


def test_group_list_status_and_cancel(up, queue):
    group = taskcluster.slugId()
    here, there = new_task_queue(), new_task_queue()
    first = parked(queue, here, taskGroupId=group)
    second = parked(queue, here, taskGroupId=group)
    other = parked(queue, there, taskGroupId=group)
    done = native(queue, "true", taskGroupId=group)
    wait_for_state(queue, done, "completed", timeout=60)
    pending = {first, second, other}

    assert ok(cli(up, "group", "status", group)) == "completed: 1\npending: 3\n"
    assert ok(cli(up, "group", "list", group)) == ""  # no state asked for, as upstream
    lines = ok(cli(up, "group", "list", "--pending", group)).splitlines()
    assert sorted(lines) == sorted(f"{t} bbb compatibility test task pending" for t in pending)
    assert ok(cli(up, "group", "list", "-c", group)) == f"{done} bbb compatibility test task completed\n"
    listed = ok(cli(up, "group", "list", "--all", "--format-string", "{{.Status.TaskID}}={{ .Status.WorkerType }}", group))
    worker_type = {t: q.split("/")[1] for t, q in [(first, here), (second, here), (other, there), (done, "bbb/native")]}
    assert sorted(listed.splitlines()) == sorted(f"{t}={w}" for t, w in worker_type.items())
    refused(cli(up, "group", "list", "-a", "--format-string", "{{ if .Status }}x{{ end }}", group), "template")

    asked = ok(cli(up, "group", "cancel", group, answer="n\n"))
    assert asked.startswith("The following 3 tasks will be cancelled:\n"), asked
    for task_id in pending:
        assert f"\tTask {task_id}: bbb compatibility test task\n" in asked
    assert asked.endswith("Are you sure you want to cancel these tasks? [y/n] Cancellation of tasks aborted.\n"), asked
    assert ok(cli(up, "group", "status", group)) == "completed: 1\npending: 3\n"

    assert ok(cli(up, "group", "cancel", "--force", "-w", there.split("/")[1], group)) == f"cancelling task {other}\n"
    assert queue.status(other)["status"]["state"] == "exception"
    assert queue.status(first)["status"]["state"] == "pending"

    cancelled = ok(cli(up, "group", "cancel", group, answer="y\n"))
    # The first follows the question on its line (the answer came from a pipe).
    assert sorted(re.findall(r"cancelling task \S+", cancelled)) == sorted(
        f"cancelling task {t}" for t in (first, second)
    )
    assert ok(cli(up, "group", "cancel", "-f", group)) == "No suitable tasks found for cancellation.\n"
    assert ok(cli(up, "group", "status", group)) == "completed: 1\nexception: 3\n"


def test_a_missing_scope_shows_the_queues_refusal(up, queue):
    task_id = parked(queue)
    now = datetime.datetime.now(datetime.timezone.utc)
    readonly = taskcluster.createTemporaryCredentials(
        "root",
        up.token,
        now - datetime.timedelta(minutes=1),
        now + datetime.timedelta(hours=1),
        ["queue:get-task:*", "queue:status:*"],
    )
    # Temporary credentials (TASKCLUSTER_CERTIFICATE) read fine...
    assert ok(cli(up, "task", "status", task_id, credentials=readonly)) == "pending\n"
    # ...and cannot cancel: the queue's refusal names the scope.
    refused(
        cli(up, "task", "cancel", task_id, credentials=readonly),
        f"Error: could not cancel the task {task_id}: ",
        "queue:cancel-task",
        "403",
    )
    refused(cli(up, "group", "cancel", "-f", task_id, credentials=None), "could not cancel all tasks", "403")
    assert queue.status(task_id)["status"]["state"] == "pending"


def test_the_root_url_is_required(up):
    result = cli(up, "task", "status", taskcluster.slugId(), env={"TASKCLUSTER_ROOT_URL": ""})
    refused(result, "TASKCLUSTER_ROOT_URL")
