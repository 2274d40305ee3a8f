"""``bbb up`` also runs the bridge against the in-memory sandbox Buildbot
master: tasks on ``buildbot-bridge/buildbot-bridge`` created with the official
Python client become builds and come back resolved, with their artifacts (the
build's properties, and its log as ``public/logs/live_backing.log``); the
demo task goes pending → running → completed; ``/metrics`` counts it all."""

from __future__ import annotations

import json

import pytest
import requests
import taskcluster

from bbbtest import UpProcess, free_port, task_definition, wait_for, wait_for_state

BRIDGE_QUEUE = "buildbot-bridge/buildbot-bridge"


@pytest.fixture
def up(tmp_path):
    """A ``bbb up`` process with its metrics on a known port."""
    metrics_port = free_port()
    with UpProcess(tmp_path, BBB_METRICS_LISTEN=f"127.0.0.1:{metrics_port}") as up:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        # /metrics answers once the bridge has subscribed to the queue's
        # exchanges; a task created before that is only adopted by the
        # reflector's next pass.
        wait_for(lambda: up.answers(metrics_url), 60, "the bridge's /metrics to answer")
        yield up.queue(), up.log_path, metrics_url


def bridged(builder: str, **properties) -> dict:
    definition = task_definition(BRIDGE_QUEUE)
    definition["payload"] = {
        "buildername": builder,
        "properties": {"product": "firefox", **properties},
        "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": "abcdef012345"},
    }
    return definition


def test_the_demo_task_goes_pending_running_completed(up):
    _, log_path, _ = up
    wait_for(lambda: ": completed" in log_path.read_text(), 60, "the demo task to complete")
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("demo task")]
    states = [line.rsplit(": ", 1)[1] for line in lines if line.endswith((": pending", ": running", ": completed"))]
    assert states == ["pending", "running", "completed"], lines


def test_a_bridged_task_completes_with_its_build_properties(up):
    queue, _, _ = up
    task_id = taskcluster.slugId()
    queue.createTask(task_id, bridged("linux.build", who="sheriff", sim_duration_ms=300))
    status = wait_for_state(queue, task_id, "completed", timeout=60)
    run = status["runs"][0]
    assert (run["workerGroup"], run["workerId"]) == ("buildbot-bridge", "buildbot-bridge")
    props = requests.get(queue.getLatestArtifact(task_id, "public/properties.json")["url"], timeout=10).json()
    assert props["taskId"][0] == task_id
    assert props["who"][0] == "sheriff"
    assert props["buildername"][0] == "linux.build"
    # The build's log, under the name Treeherder links every run's log by:
    # the sandbox master's text of the build's steps, uploaded as text.
    log_url = queue.getLatestArtifact(task_id, "public/logs/live_backing.log")["url"]
    response = requests.get(log_url, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    log = response.text
    assert log.startswith("builder: linux.build\n"), log
    assert "results: success (0)\n" in log, log
    assert f"the build of task {task_id}, build request " in log, log
    assert "========= Finished run script (results: 0, " in log, log
    # As Treeherder's log parser fetches it: the queue's URL, no credentials.
    anonymous = requests.get(queue.buildUrl("getLatestArtifact", task_id, "public/logs/live_backing.log"), timeout=10)
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.text == log
    artifacts = sorted(a["name"] for a in queue.listLatestArtifacts(task_id)["artifacts"])
    assert artifacts == ["public/logs/live_backing.log", "public/properties.json"]


def test_a_retried_build_continues_in_the_next_run(up):
    queue, _, _ = up
    task_id = taskcluster.slugId()
    queue.createTask(task_id, bridged("linux.test", sim_result="RETRY,SUCCESS", sim_duration_ms=100))

    def second_run_completed():
        runs = queue.status(task_id)["status"]["runs"]
        return len(runs) == 2 and runs[1]["state"] == "completed" and runs

    runs = wait_for(second_run_completed, 60, "run 1 to complete")
    assert (runs[0]["state"], runs[0]["reasonResolved"]) == ("exception", "worker-shutdown")
    assert runs[1]["reasonCreated"] == "retry"


def test_failures_and_unknown_builders(up):
    queue, _, _ = up
    failing = taskcluster.slugId()
    queue.createTask(failing, bridged("win.build", sim_result="FAILURE", sim_duration_ms=100))
    unknown = taskcluster.slugId()
    queue.createTask(unknown, bridged("no-such-builder"))
    wait_for_state(queue, failing, "failed", timeout=60)
    failed_log = requests.get(queue.getLatestArtifact(failing, "public/logs/live_backing.log")["url"], timeout=10).text
    assert "results: failure (2)\n" in failed_log and "the script ends FAILURE" in failed_log, failed_log
    status = wait_for_state(queue, unknown, "exception", timeout=60)
    assert status["runs"][0]["reasonResolved"] == "malformed-payload"
    log = requests.get(queue.getLatestArtifact(unknown, "public/logs/live_backing.log")["url"], timeout=10).text
    assert "no-such-builder" in log and "does not exist" in log


def test_metrics_count_events_and_rows(up):
    queue, _, metrics_url = up
    task_id = taskcluster.slugId()
    queue.createTask(task_id, bridged("linux.build", sim_duration_ms=100))
    wait_for_state(queue, task_id, "completed", timeout=60)

    def resolved_rows():
        text = requests.get(metrics_url, timeout=5).text
        for line in text.splitlines():
            if line.startswith('bbb_bridge_rows{state="resolved"}'):
                return int(line.split()[-1]) >= 1 and text
        return False

    text = wait_for(resolved_rows, 30, "a resolved row in /metrics")
    assert 'bbb_bridge_events_total{type="task-pending",outcome="injected"}' in text
    assert 'bbb_bridge_resolutions_total{resolution="completed"}' in text
    assert "bbb_bridge_handler_seconds_bucket" in text
    json.dumps(text)  # plain text, no binary
