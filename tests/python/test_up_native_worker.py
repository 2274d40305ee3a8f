"""The README's first command, ``bbb up``: the queue plus a native worker on
``bbb/native``. A task created with the official Python client runs as a
process on that worker, and its log comes back through getLatestArtifact."""

from __future__ import annotations

import pytest
import requests
import taskcluster

from bbbtest import UpProcess, task_definition, wait_for_state


@pytest.fixture
def up(tmp_path):
    """A ``bbb up`` process on a free port with its own data directory."""
    with UpProcess(tmp_path) as up:
        yield up.queue(), tmp_path


def test_python_task_runs_on_the_native_worker(up):
    """createTask → the worker runs the command → completed, with the live log
    replaced by a link to the backing log that holds the command's output."""
    queue, tmp_path = up
    task_id = taskcluster.slugId()
    definition = task_definition("bbb/native")
    definition["payload"] = {
        "command": [["sh", "-c", "echo hello from the native worker; echo to stderr >&2"]],
        "maxRunTime": 60,
    }
    queue.createTask(task_id, definition)
    status = wait_for_state(queue, task_id, "completed", timeout=60)
    run = status["runs"][0]
    assert run["workerGroup"] and run["workerId"]

    backing = queue.getLatestArtifact(task_id, "public/logs/live_backing.log")
    text = requests.get(backing["url"], timeout=10).text
    assert "hello from the native worker" in text
    assert "to stderr" in text
    assert task_id in text  # the log header names the task

    # live.log now links to the backing log.
    live = queue.getLatestArtifact(task_id, "public/logs/live.log")
    assert requests.get(live["url"], timeout=10).text == text
    names = [a["name"] for a in queue.listLatestArtifacts(task_id)["artifacts"]]
    assert "public/logs/live.log" in names and "public/logs/live_backing.log" in names


def test_failing_command_resolves_failed(up):
    """A non-zero exit resolves the run failed, and the log says so."""
    queue, _ = up
    task_id = taskcluster.slugId()
    definition = task_definition("bbb/native")
    definition["payload"] = {"command": [["sh", "-c", "echo about to fail; exit 3"]], "maxRunTime": 60}
    queue.createTask(task_id, definition)
    wait_for_state(queue, task_id, "failed", timeout=60)
    backing = queue.getLatestArtifact(task_id, "public/logs/live_backing.log")
    text = requests.get(backing["url"], timeout=10).text
    assert "about to fail" in text
    assert "Exit Code: 3" in text
    assert "Result: failed" in text
