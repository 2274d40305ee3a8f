"""Claim expiry, on a queue with a very short claim timeout
(``BBB_CLAIM_TIMEOUT_S=3``)."""

import datetime
import time

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from bbbtest import (
    BACKENDS,
    RESOLVER_INTERVAL_MS,
    claim_one,
    create_and_claim,
    error_code,
    new_task_queue,
    parse_date,
    runs_of,
    start_server,
    task_definition,
    wait_for,
)

CLAIM_TIMEOUT_S = 3


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    """A queue whose claims expire after CLAIM_TIMEOUT_S seconds."""
    return start_server(
        request,
        tmp_path_factory,
        BBB_CLAIM_TIMEOUT_S=str(CLAIM_TIMEOUT_S),
        BBB_DEADLINE_DELAY_S="0",
        BBB_RESOLVER_INTERVAL_MS=str(RESOLVER_INTERVAL_MS),
    )


def wait_for_runs(queue, task_id, count, timeout=20):
    """Poll until the task's status has at least ``count`` runs."""

    def check():
        status = queue.status(task_id)["status"]
        return status if len(status["runs"]) >= count and status["runs"][0]["state"] != "running" else None

    return wait_for(check, timeout, f"task {task_id} to have {count} runs")


def test_claim_timeout_is_configurable(queue, worker_queue):
    """takenUntil is the configured claim timeout after the claim."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    before = datetime.datetime.now(datetime.timezone.utc)
    claim = claim_one(worker_queue, tq)
    taken_until = parse_date(claim["takenUntil"])
    assert datetime.timedelta(seconds=CLAIM_TIMEOUT_S - 1) <= taken_until - before
    assert taken_until - before <= datetime.timedelta(seconds=CLAIM_TIMEOUT_S + 2)


def test_expired_claim_becomes_claim_expired_with_a_retry_run(server, queue, worker_queue):
    """A claim that is not reclaimed in time resolves the run as
    ``exception``/``claim-expired`` and adds a pending ``retry`` run; the old
    task credentials can no longer resolve it."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    claim = claim_one(worker_queue, tq)

    status = wait_for_runs(queue, task_id, 2)
    assert status["state"] == "pending"
    assert status["retriesLeft"] == 4
    assert runs_of(status) == [
        (0, "exception", "scheduled", "claim-expired"),
        (1, "pending", "retry", None),
    ]

    # The task credentials are still within their validity (5 min of clock
    # skew are allowed), but the run is resolved: 409.
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        server.queue_with(claim["credentials"]).reportCompleted(task_id, 0)
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"

    retry = claim_one(worker_queue, tq)
    assert (retry["status"]["taskId"], retry["runId"]) == (task_id, 1)


def test_expired_claim_without_retries_is_final(queue, worker_queue):
    """With ``retries: 0`` an expired claim resolves the task as exception."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, retries=0))
    claim_one(worker_queue, tq)

    status = wait_for_runs(queue, task_id, 1)
    assert status["state"] == "exception"
    assert [(r["state"], r["reasonResolved"]) for r in status["runs"]] == [("exception", "claim-expired")]


def test_reclaim_keeps_the_claim_alive(server, queue, worker_queue):
    """Reclaiming before takenUntil keeps the run running past the original
    claim timeout."""
    task_id, claim, _ = create_and_claim(server, queue, worker_queue)
    credentials = claim["credentials"]
    original = parse_date(claim["takenUntil"])

    # Reclaim every second for 2 claim timeouts.
    for _ in range(2 * CLAIM_TIMEOUT_S):
        reclaim = server.queue_with(credentials).reclaimTask(task_id, 0)
        credentials = reclaim["credentials"]
        time.sleep(1)

    assert parse_date(reclaim["takenUntil"]) > original
    status = queue.status(task_id)["status"]
    assert status["state"] == "running"
    assert len(status["runs"]) == 1
    assert server.queue_with(credentials).reportCompleted(task_id, 0)["status"]["state"] == "completed"
