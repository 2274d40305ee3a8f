"""Task definition, status, idempotency, dependencies, rerun and cancel,
through the official ``taskcluster.Queue`` client."""

import datetime

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from bbbtest import (
    PROVISIONER,
    WORKER_GROUP,
    claim_one,
    create_and_claim,
    create_blocked,
    error_code,
    from_now,
    iso,
    new_task_queue,
    parse_date,
    runs_of,
    task_definition,
    wait_for_state,
)


def test_create_task_returns_pending_status_and_stores_defaults(queue):
    """createTask answers with the status of a freshly scheduled task, and
    task() returns the definition with every default filled in."""
    task_id = taskcluster.slugId()
    tq = new_task_queue()
    definition = task_definition(tq)

    result = queue.createTask(task_id, definition)

    status = result["status"]
    task = queue.task(task_id)
    # The status and the definition name the same queue, scheduler, project
    # and group.
    for record in (status, task):
        assert record["taskQueueId"] == tq
        assert record["provisionerId"] == PROVISIONER
        assert record["workerType"] == tq.split("/")[1]
        assert record["schedulerId"] == "-"
        assert record["projectId"] == "none"
        assert record["taskGroupId"] == task_id
    assert status["taskId"] == task_id
    assert status["priority"] == "lowest"
    assert status["retriesLeft"] == 5
    assert status["deadline"] == definition["deadline"]
    assert status["state"] == "pending"
    assert len(status["runs"]) == 1
    run = status["runs"][0]
    assert run["runId"] == 0
    assert run["state"] == "pending"
    assert run["reasonCreated"] == "scheduled"
    assert "scheduled" in run
    assert "workerGroup" not in run and "takenUntil" not in run

    assert task["dependencies"] == []
    assert task["requires"] == "all-completed"
    assert task["routes"] == []
    assert task["priority"] == "lowest"
    assert task["retries"] == 5
    assert task["created"] == definition["created"]
    assert task["deadline"] == definition["deadline"]
    # expires defaults to deadline + 1 year
    expires = parse_date(task["expires"])
    deadline = parse_date(definition["deadline"])
    assert datetime.timedelta(days=364) < expires - deadline < datetime.timedelta(days=367)
    assert task["scopes"] == []
    assert task["payload"] == definition["payload"]
    assert task["metadata"] == definition["metadata"]
    assert task["tags"] == {}
    assert task["extra"] == {}

    assert queue.status(task_id) == {"status": status}


def test_create_task_with_provisioner_and_worker_type(queue):
    """The legacy provisionerId/workerType form is accepted and answered with
    the derived taskQueueId."""
    task_id = taskcluster.slugId()
    tq = new_task_queue()
    provisioner, worker_type = tq.split("/")
    definition = task_definition(tq)
    del definition["taskQueueId"]
    definition.update(provisionerId=provisioner, workerType=worker_type, priority="high")

    status = queue.createTask(task_id, definition)["status"]

    assert status["taskQueueId"] == tq
    assert status["priority"] == "high"
    task = queue.task(task_id)
    assert (task["provisionerId"], task["workerType"], task["taskQueueId"]) == (provisioner, worker_type, tq)


def test_create_task_is_idempotent(queue):
    """The same definition again gives 200 with the current status; a
    different definition under the same taskId gives 409 RequestConflict."""
    task_id = taskcluster.slugId()
    definition = task_definition(new_task_queue(), tags={"purpose": "idempotency"})
    first = queue.createTask(task_id, definition)

    again = queue.createTask(task_id, definition)
    assert again == first
    assert again["status"]["state"] == "pending"
    assert len(again["status"]["runs"]) == 1

    different = dict(definition, payload={"command": ["echo", "something else"]})
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(task_id, different)
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"

    # The stored definition is unchanged.
    assert queue.task(task_id)["payload"] == definition["payload"]


def test_create_task_idempotency_ignores_date_precision(queue):
    """Dates are normalised before comparison: whole seconds without the
    milliseconds part are equal to the same instant with ``.000``."""
    task_id = taskcluster.slugId()
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    definition = task_definition(
        new_task_queue(),
        created=iso(now),
        deadline=iso(now + datetime.timedelta(hours=1)),
    )
    assert definition["created"].endswith(".000Z")
    queue.createTask(task_id, definition)

    short = dict(
        definition,
        created=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        deadline=(now + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert queue.createTask(task_id, short)["status"]["taskId"] == task_id
    assert queue.task(task_id)["created"] == definition["created"]


def test_unknown_task_is_not_found(queue):
    """status/task of a taskId that was never created give 404 ResourceNotFound."""
    task_id = taskcluster.slugId()
    for call in (queue.status, queue.task):
        with pytest.raises(TaskclusterRestFailure) as excinfo:
            call(task_id)
        assert excinfo.value.status_code == 404
        assert error_code(excinfo) == "ResourceNotFound"


def complete(queue, worker_queue, server, tq, task_id):
    """Claim the only pending task of ``tq`` (which must be ``task_id``) and
    report it completed; return the final status."""
    claim = claim_one(worker_queue, tq)
    assert claim["status"]["taskId"] == task_id
    task_queue = server.queue_with(claim["credentials"])
    return task_queue.reportCompleted(task_id, claim["runId"])["status"]


def test_dependent_task_waits_for_its_dependency(server, queue, worker_queue):
    """A task depending on an unfinished task is created ``unscheduled`` with
    no runs, and becomes ``pending`` (reasonCreated ``scheduled``) once the
    dependency completes."""
    tq = new_task_queue()
    first = taskcluster.slugId()
    queue.createTask(first, task_definition(tq))
    second = taskcluster.slugId()
    status = queue.createTask(second, task_definition(new_task_queue(), dependencies=[first]))["status"]

    assert status["state"] == "unscheduled"
    assert status["runs"] == []
    assert queue.task(second)["dependencies"] == [first]
    dependents = queue.listDependentTasks(first)
    assert dependents["taskId"] == first
    assert [t["status"]["taskId"] for t in dependents["tasks"]] == [second]

    assert complete(queue, worker_queue, server, tq, first)["state"] == "completed"

    status = wait_for_state(queue, second, "pending")
    assert [(r["runId"], r["state"], r["reasonCreated"]) for r in status["runs"]] == [
        (0, "pending", "scheduled")
    ]


def test_dependency_on_completed_task_schedules_at_once(server, queue, worker_queue):
    """A dependency that is already completed at create time is satisfied
    immediately: the new task is ``pending`` straight away."""
    tq = new_task_queue()
    first = taskcluster.slugId()
    queue.createTask(first, task_definition(tq))
    complete(queue, worker_queue, server, tq, first)

    second = taskcluster.slugId()
    status = queue.createTask(second, task_definition(new_task_queue(), dependencies=[first]))["status"]
    assert status["state"] == "pending"
    assert status["runs"][0]["reasonCreated"] == "scheduled"


def test_all_resolved_and_all_completed_after_a_failure(server, queue, worker_queue):
    """When a dependency fails, an ``all-resolved`` dependent is scheduled,
    while an ``all-completed`` dependent stays ``unscheduled``."""
    tq = new_task_queue()
    failing = taskcluster.slugId()
    queue.createTask(failing, task_definition(tq))
    resolved_dep = taskcluster.slugId()
    queue.createTask(
        resolved_dep,
        task_definition(new_task_queue(), dependencies=[failing], requires="all-resolved"),
    )
    completed_dep = taskcluster.slugId()
    queue.createTask(completed_dep, task_definition(new_task_queue(), dependencies=[failing]))
    assert queue.task(resolved_dep)["requires"] == "all-resolved"

    claim = claim_one(worker_queue, tq)
    failed = server.queue_with(claim["credentials"]).reportFailed(failing, 0)["status"]
    assert failed["state"] == "failed"
    assert failed["runs"][0]["reasonResolved"] == "failed"

    wait_for_state(queue, resolved_dep, "pending")
    status = queue.status(completed_dep)["status"]
    assert status["state"] == "unscheduled"
    assert status["runs"] == []


def test_missing_dependency_is_an_input_error(queue):
    """Depending on a task that does not exist gives 400 InputError, and no
    task is left behind."""
    task_id = taskcluster.slugId()
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(task_id, task_definition(new_task_queue(), dependencies=[taskcluster.slugId()]))
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputError"
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.status(task_id)
    assert excinfo.value.status_code == 404


def test_schedule_task_starts_an_unscheduled_task(queue):
    """scheduleTask on a task blocked by a dependency makes it pending with
    reasonCreated ``scheduled``; a second call changes nothing."""
    task_id = create_blocked(queue)

    status = queue.scheduleTask(task_id)["status"]
    assert status["state"] == "pending"
    assert [(r["runId"], r["reasonCreated"]) for r in status["runs"]] == [(0, "scheduled")]
    assert queue.scheduleTask(task_id)["status"]["runs"] == status["runs"]


def test_rerun_task_adds_a_rerun_run(server, queue, worker_queue):
    """rerunTask on a completed task appends a pending run with reasonCreated
    ``rerun``; on a pending task it returns the status unchanged."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    complete(queue, worker_queue, server, tq, task_id)

    status = queue.rerunTask(task_id)["status"]
    assert status["state"] == "pending"
    assert [(r["runId"], r["state"], r["reasonCreated"]) for r in status["runs"]] == [
        (0, "completed", "scheduled"),
        (1, "pending", "rerun"),
    ]

    again = queue.rerunTask(task_id)["status"]
    assert again["runs"] == status["runs"]

    claim = claim_one(worker_queue, tq)
    assert (claim["status"]["taskId"], claim["runId"]) == (task_id, 1)


def test_cancel_pending_task(queue):
    """cancelTask resolves a pending run as ``exception``/``canceled``;
    cancelling again is a no-op."""
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue()))

    status = queue.cancelTask(task_id)["status"]
    assert status["state"] == "exception"
    assert runs_of(status) == [(0, "exception", "scheduled", "canceled")]
    assert "resolved" in status["runs"][0]

    assert queue.cancelTask(task_id)["status"] == status


def test_cancel_unscheduled_task_creates_an_exception_run(queue):
    """Cancelling a task without runs adds one run that is created and
    resolved at once: reasonCreated ``exception``, reasonResolved ``canceled``."""
    task_id = create_blocked(queue)

    status = queue.cancelTask(task_id)["status"]
    assert status["state"] == "exception"
    assert runs_of(status) == [(0, "exception", "exception", "canceled")]
    run = status["runs"][0]
    assert run["scheduled"] == run["resolved"]


def test_cancel_running_task_makes_reclaim_conflict(server, queue, worker_queue):
    """The worker of a cancelled running task learns about it through a 409
    on reclaimTask."""
    task_id, _, task_queue = create_and_claim(server, queue, worker_queue)

    status = queue.cancelTask(task_id)["status"]
    assert status["runs"][0]["state"] == "exception"
    assert status["runs"][0]["reasonResolved"] == "canceled"
    assert status["runs"][0]["workerGroup"] == WORKER_GROUP

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        task_queue.reclaimTask(task_id, 0)
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"


def test_seal_task_group_refuses_new_tasks(queue):
    """After sealTaskGroup, createTask into that group gives 409
    RequestConflict; getTaskGroup reports the seal."""
    group = taskcluster.slugId()
    tq = new_task_queue()
    first = taskcluster.slugId()
    definition = task_definition(tq, taskGroupId=group)
    queue.createTask(first, definition)

    sealed = queue.sealTaskGroup(group)
    assert sealed["taskGroupId"] == group
    assert sealed["schedulerId"] == "-"
    assert "expires" in sealed
    assert sealed.get("sealed")
    assert queue.getTaskGroup(group) == sealed
    # Sealing is idempotent.
    assert queue.sealTaskGroup(group)["sealed"] == sealed["sealed"]

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), task_definition(tq, taskGroupId=group))
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"

    # Re-sending the existing task is still idempotent.
    assert queue.createTask(first, definition)["status"]["taskId"] == first


def test_cancel_task_group(server, queue, worker_queue):
    """cancelTaskGroup needs a sealed group (409 before), then cancels every
    unresolved task and reports exactly which."""
    group = taskcluster.slugId()
    tq = new_task_queue()
    done = taskcluster.slugId()
    queue.createTask(done, task_definition(tq, taskGroupId=group))
    complete(queue, worker_queue, server, tq, done)
    open_ids = sorted(taskcluster.slugId() for _ in range(2))
    for task_id in open_ids:
        queue.createTask(task_id, task_definition(new_task_queue(), taskGroupId=group))

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.cancelTaskGroup(group)
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"

    queue.sealTaskGroup(group)
    result = queue.cancelTaskGroup(group)
    assert result["taskGroupId"] == group
    assert result["taskGroupSize"] == 3
    assert result["cancelledCount"] == 2
    assert sorted(result["taskIds"]) == open_ids

    for task_id in open_ids:
        run = queue.status(task_id)["status"]["runs"][-1]
        assert (run["state"], run["reasonResolved"]) == ("exception", "canceled")
    assert queue.status(done)["status"]["state"] == "completed"


def test_list_task_group_pages_with_limit(queue):
    """listTaskGroup honours ``limit`` and returns every task exactly once
    across the continuationToken pages."""
    group = taskcluster.slugId()
    tq = new_task_queue()
    created = set()
    for _ in range(5):
        task_id = taskcluster.slugId()
        queue.createTask(task_id, task_definition(tq, taskGroupId=group))
        created.add(task_id)

    seen = []
    pages = 0
    query = {"limit": 2}
    while True:
        page = queue.listTaskGroup(group, query=query)
        pages += 1
        assert page["taskGroupId"] == group
        assert page["schedulerId"] == "-"
        assert len(page["tasks"]) <= 2
        for item in page["tasks"]:
            assert item["task"]["taskGroupId"] == group
            assert item["task"]["taskQueueId"] == tq
            assert item["status"]["state"] == "pending"
            seen.append(item["status"]["taskId"])
        if not page.get("continuationToken"):
            break
        query = {"limit": 2, "continuationToken": page["continuationToken"]}
        assert pages < 10, "listTaskGroup keeps returning continuation tokens"

    assert pages >= 3
    assert sorted(seen) == sorted(created)

    # The client's own paging loop gives the same result.
    handled = []
    queue.listTaskGroup(
        group,
        paginationHandler=lambda page: handled.extend(t["status"]["taskId"] for t in page["tasks"]),
        paginationLimit=2,
    )
    assert sorted(handled) == sorted(created)


def test_task_queue_ids_with_a_slash_are_percent_encoded(queue, worker_queue):
    """The client sends ``bbb-test/wt-..`` as ``bbb-test%2Fwt-..`` in the path;
    pendingTasks, taskQueueCounts and claimWork all understand it."""
    tq = new_task_queue()
    assert "%2F" in queue.buildUrl("pendingTasks", tq)
    provisioner, worker_type = tq.split("/")
    task_ids = {taskcluster.slugId() for _ in range(2)}
    for task_id in task_ids:
        queue.createTask(task_id, task_definition(tq))

    assert queue.pendingTasks(tq) == {
        "provisionerId": provisioner,
        "workerType": worker_type,
        "taskQueueId": tq,
        "pendingTasks": 2,
    }
    counts = queue.taskQueueCounts(tq)
    assert counts["taskQueueId"] == tq
    assert counts["pendingTasks"] == 2
    assert counts["claimedTasks"] == 0

    claim = claim_one(worker_queue, tq)
    assert claim["status"]["taskId"] in task_ids
    counts = queue.taskQueueCounts(tq)
    assert (counts["pendingTasks"], counts["claimedTasks"]) == (1, 1)


def test_deadline_resolves_a_pending_task(queue):
    """A pending task whose deadline passes becomes ``exception`` with
    reasonResolved ``deadline-exceeded`` (BBB_DEADLINE_DELAY_S=0)."""
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue(), deadline=from_now(3)))

    status = wait_for_state(queue, task_id, "exception", timeout=20)
    assert runs_of(status) == [(0, "exception", "scheduled", "deadline-exceeded")]

    # After the deadline the task is immutable.
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.rerunTask(task_id)
    assert excinfo.value.status_code == 409


def test_deadline_resolves_an_unscheduled_task(queue):
    """An unscheduled task whose deadline passes gets a single synthetic run:
    reasonCreated ``exception``, reasonResolved ``deadline-exceeded``."""
    task_id = create_blocked(queue, deadline=from_now(3))

    status = wait_for_state(queue, task_id, "exception", timeout=20)
    assert runs_of(status) == [(0, "exception", "exception", "deadline-exceeded")]
