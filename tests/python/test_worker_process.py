"""``bbb worker`` as its own process against ``bbb queue``, with the worker
client's limited credentials (the worker's own scopes for claiming; task
credentials for everything about a task). A task created with the official
Python client runs there, its log is fetched back through getLatestArtifact,
and SIGTERM stops the worker cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

import pytest
import requests
import taskcluster

from bbbtest import WORKER_GROUP, new_task_queue, task_definition, wait_for, wait_for_state


@pytest.fixture
def worker_process(server, tmp_path):
    """A ``bbb worker`` on a fresh task queue of the server, as the ``worker`` client."""
    task_queue = new_task_queue()
    creds = server.clients["worker"]
    env = dict(
        os.environ,
        BBB_QUEUE_ROOT_URL=server.root_url,
        BBB_QUEUE_CLIENT_ID=creds["clientId"],
        BBB_QUEUE_ACCESS_TOKEN=creds["accessToken"],
        BBB_WORKER_TASK_QUEUE=task_queue,
        BBB_WORKER_GROUP=WORKER_GROUP,
        BBB_WORKER_ID="proc-1",
        BBB_WORKER_CAPACITY="2",
        BBB_WORKER_LIVELOG_LISTEN="127.0.0.1:0",
        BBB_LOG="info",
    )
    # Run as root, the worker runs each task as an OS user of its own, which
    # must reach its task directory: pytest's tmp_path is closed to others, so
    # the task directories go to a fresh directory in the system's temporary
    # directory.
    tasks_dir = tempfile.mkdtemp(prefix="bbb-worker-tasks-")
    config = tmp_path / "worker.toml"
    config.write_text(f'[worker]\nshutdown_grace_s = 2\ntasks_dir = "{tasks_dir}"\n')
    log_path = tmp_path / "worker.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(server.binary), "worker", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    yield task_queue, proc, log_path
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    log.close()
    shutil.rmtree(tasks_dir, ignore_errors=True)


def test_task_from_python_client_runs_on_bbb_worker(server, queue, worker_process):
    """createTask (Python client) → bbb worker runs it → completed; the
    backing log holds the output and live.log links to it."""
    task_queue, proc, log_path = worker_process
    task_id = taskcluster.slugId()
    definition = task_definition(task_queue)
    definition["payload"] = {"command": [["sh", "-c", "echo from a separate worker process"]], "maxRunTime": 60}
    queue.createTask(task_id, definition)
    status = wait_for_state(queue, task_id, "completed", timeout=60)
    assert status["runs"][0]["workerId"] == "proc-1", log_path.read_text()
    assert status["runs"][0]["workerGroup"] == WORKER_GROUP

    backing = queue.getLatestArtifact(task_id, "public/logs/live_backing.log")
    text = requests.get(backing["url"], timeout=10).text
    assert "from a separate worker process" in text
    live = queue.getLatestArtifact(task_id, "public/logs/live.log")
    assert requests.get(live["url"], timeout=10).text == text

    # SIGTERM with nothing running: the worker stops claiming and exits 0.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log_path.read_text()


def test_sigterm_with_a_running_task_hands_it_back(server, queue, worker_process):
    """SIGTERM while a task runs past the grace period: the run resolves
    exception/worker-shutdown and the queue schedules a retry run."""
    task_queue, proc, log_path = worker_process
    task_id = taskcluster.slugId()
    definition = task_definition(task_queue)
    definition["payload"] = {"command": [["sleep", "600"]], "maxRunTime": 900}
    queue.createTask(task_id, definition)
    wait_for_state(queue, task_id, "running", timeout=60)
    proc.send_signal(signal.SIGTERM)

    def retried():
        runs = queue.status(task_id)["status"]["runs"]
        return runs if len(runs) == 2 else None

    # The grace period is 2 s (worker.toml); then the run is handed back.
    runs = wait_for(retried, 60, "the run to be handed back")
    assert runs[0]["reasonResolved"] == "worker-shutdown", log_path.read_text()
    assert runs[1]["reasonCreated"] == "retry"
    assert proc.wait(timeout=30) == 0, log_path.read_text()
