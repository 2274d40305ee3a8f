"""The worker protocol: claimWork, task credentials, reclaimTask and the
three ways to resolve a run."""

import datetime

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from bbbtest import (
    WORKER_GROUP,
    claim_one,
    create_and_claim,
    error_code,
    new_task_queue,
    new_worker_id,
    parse_date,
    runs_of,
    task_definition,
)


def test_claim_work_returns_task_credentials_and_taken_until(queue, worker_queue):
    """claimWork hands out the task with its full definition, the running
    status, takenUntil about 20 minutes ahead and named temporary credentials."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, scopes=["secrets:get:bbb-test/one"]))
    worker_id = new_worker_id()

    before = datetime.datetime.now(datetime.timezone.utc)
    response = worker_queue.claimWork(tq, {"workerGroup": WORKER_GROUP, "workerId": worker_id, "tasks": 4})

    assert len(response["tasks"]) == 1
    claim = response["tasks"][0]
    assert claim["runId"] == 0
    assert claim["workerGroup"] == WORKER_GROUP
    assert claim["workerId"] == worker_id
    assert claim["task"] == queue.task(task_id)

    taken_until = parse_date(claim["takenUntil"])
    assert datetime.timedelta(minutes=19) < taken_until - before < datetime.timedelta(minutes=21)

    status = claim["status"]
    assert status["taskId"] == task_id
    assert status["state"] == "running"
    run = status["runs"][0]
    assert (run["runId"], run["state"], run["workerGroup"], run["workerId"]) == (
        0,
        "running",
        WORKER_GROUP,
        worker_id,
    )
    assert run["takenUntil"] == claim["takenUntil"]
    assert "started" in run
    assert queue.status(task_id)["status"] == status

    creds = claim["credentials"]
    assert set(creds) >= {"clientId", "accessToken", "certificate"}
    assert creds["clientId"].startswith(f"task-client/{task_id}/0/on/{WORKER_GROUP}/{worker_id}/until/")


def test_reclaim_with_task_credentials_rotates_them(server, queue, worker_queue):
    """reclaimTask, called with the task credentials from the claim, extends
    the claim and returns new credentials that work for resolving the run."""
    task_id, claim, task_queue = create_and_claim(server, queue, worker_queue)

    reclaim = task_queue.reclaimTask(task_id, 0)
    assert reclaim["runId"] == 0
    assert reclaim["workerGroup"] == WORKER_GROUP
    assert reclaim["workerId"] == claim["workerId"]
    assert parse_date(reclaim["takenUntil"]) >= parse_date(claim["takenUntil"])
    assert reclaim["status"]["state"] == "running"
    assert reclaim["status"]["runs"][0]["takenUntil"] == reclaim["takenUntil"]
    assert set(reclaim["credentials"]) >= {"clientId", "accessToken", "certificate"}

    new_queue = server.queue_with(reclaim["credentials"])
    status = new_queue.reportCompleted(task_id, 0)["status"]
    assert status["state"] == "completed"


def test_task_credentials_are_limited_to_their_run(server, queue, worker_queue):
    """Task credentials of one task cannot resolve another task: 403
    InsufficientScopes."""
    task_id, _, task_queue = create_and_claim(server, queue, worker_queue)
    other_id, _, _ = create_and_claim(server, queue, worker_queue)

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        task_queue.reportCompleted(other_id, 0)
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"
    assert queue.status(other_id)["status"]["state"] == "running"
    assert task_queue.reportCompleted(task_id, 0)["status"]["state"] == "completed"


def test_report_completed_is_idempotent_and_final(server, queue, worker_queue):
    """reportCompleted resolves the run; repeating it returns 200 with the
    same status; reportFailed afterwards is a 409, and so is reclaim."""
    task_id, claim, task_queue = create_and_claim(server, queue, worker_queue)

    status = task_queue.reportCompleted(task_id, 0)["status"]
    assert status["state"] == "completed"
    run = status["runs"][0]
    assert (run["state"], run["reasonResolved"], run["workerId"]) == (
        "completed",
        "completed",
        claim["workerId"],
    )
    assert "resolved" in run

    assert task_queue.reportCompleted(task_id, 0)["status"] == status

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        task_queue.reportFailed(task_id, 0)
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        task_queue.reclaimTask(task_id, 0)
    assert excinfo.value.status_code == 409


def test_report_failed(server, queue, worker_queue):
    """reportFailed resolves the run as ``failed`` and adds no retry run."""
    task_id, _, task_queue = create_and_claim(server, queue, worker_queue)

    status = task_queue.reportFailed(task_id, 0)["status"]
    assert status["state"] == "failed"
    assert [(r["state"], r["reasonResolved"]) for r in status["runs"]] == [("failed", "failed")]
    assert status["retriesLeft"] == 5


def test_report_exception_worker_shutdown_retries(server, queue, worker_queue):
    """reportException(worker-shutdown) resolves the run and immediately adds
    a pending ``retry`` run, using up one retry; the retry can be claimed."""
    task_id, claim, task_queue = create_and_claim(server, queue, worker_queue)

    status = task_queue.reportException(task_id, 0, {"reason": "worker-shutdown"})["status"]
    assert status["state"] == "pending"
    assert status["retriesLeft"] == 4
    assert runs_of(status) == [
        (0, "exception", "scheduled", "worker-shutdown"),
        (1, "pending", "retry", None),
    ]

    tq = claim["task"]["taskQueueId"]
    retry = claim_one(worker_queue, tq)
    assert (retry["status"]["taskId"], retry["runId"]) == (task_id, 1)


def test_report_exception_without_retry(server, queue, worker_queue):
    """reportException(malformed-payload) is final: state ``exception`` and
    no new run."""
    task_id, _, task_queue = create_and_claim(server, queue, worker_queue)

    status = task_queue.reportException(task_id, 0, {"reason": "malformed-payload"})["status"]
    assert status["state"] == "exception"
    assert [(r["state"], r["reasonResolved"]) for r in status["runs"]] == [("exception", "malformed-payload")]
    assert status["retriesLeft"] == 5


def test_worker_shutdown_without_retries_left(server, queue, worker_queue):
    """With ``retries: 0`` a worker-shutdown exception is final."""
    task_id, _, task_queue = create_and_claim(server, queue, worker_queue, retries=0)

    status = task_queue.reportException(task_id, 0, {"reason": "worker-shutdown"})["status"]
    assert status["state"] == "exception"
    assert len(status["runs"]) == 1
    assert status["retriesLeft"] == 0


def test_report_exception_rejects_unknown_reason(server, queue, worker_queue):
    """``superseded`` is no longer an accepted reason: 400 InputValidationError."""
    task_id, _, task_queue = create_and_claim(server, queue, worker_queue)

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        task_queue.reportException(task_id, 0, {"reason": "superseded"})
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputValidationError"
    assert queue.status(task_id)["status"]["state"] == "running"


def test_worker_cannot_claim_from_another_provisioner(server, queue, worker_queue):
    """The worker client may only claim from ``bbb-test/*``: 403 elsewhere."""
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        worker_queue.claimWork(
            "other-provisioner/wt", {"workerGroup": WORKER_GROUP, "workerId": new_worker_id(), "tasks": 1}
        )
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"


def test_claim_work_hands_out_tasks_by_priority(queue, worker_queue):
    """A higher-priority task is claimed before an older lower-priority one."""
    tq = new_task_queue()
    low = taskcluster.slugId()
    queue.createTask(low, task_definition(tq, priority="low"))
    high = taskcluster.slugId()
    queue.createTask(high, task_definition(tq, priority="very-high"))

    first = claim_one(worker_queue, tq)
    second = claim_one(worker_queue, tq)
    assert [first["status"]["taskId"], second["status"]["taskId"]] == [high, low]
