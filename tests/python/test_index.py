"""The index service beside the queue, through the official client's
``Index``: insertTask, findTask, listTasks and listNamespaces (paged),
findArtifactFromTask, and entries made from completed tasks' ``index.``
routes (the built-in workers complete them)."""

import pytest
import requests
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from bbbtest import claim_one, error_code, from_now, new_task_queue, random_word, task_definition, wait_for


@pytest.fixture
def index(server) -> taskcluster.Index:
    """Index client with the root credentials (scope ``*``)."""
    return server.index("root")


def test_inserted_tasks_are_found_and_listed(index):
    """insertTask answers the entry; findTask finds it; listTasks and
    listNamespaces page through what is there."""
    top = f"py{random_word()}"
    expires = from_now(3600)
    ids = {}
    for leaf in ["c", "a", "b"]:
        task_id = taskcluster.slugId()
        body = {"taskId": task_id, "rank": 1, "data": {"leaf": leaf}, "expires": expires}
        entry = index.insertTask(f"{top}.app.{leaf}", body)
        assert entry == {"namespace": f"{top}.app.{leaf}", **body}
        ids[leaf] = task_id
    assert index.findTask(f"{top}.app.b")["taskId"] == ids["b"]

    names, token, pages = [], None, 0
    while True:
        query = {"limit": 2}
        if token:
            query["continuationToken"] = token
        page = index.listTasks(f"{top}.app", query=query)
        pages += 1
        names += [t["namespace"] for t in page["tasks"]]
        token = page.get("continuationToken")
        if not token:
            break
    assert names == [f"{top}.app.a", f"{top}.app.b", f"{top}.app.c"]
    assert pages == 2

    namespaces = index.listNamespaces(top)["namespaces"]
    assert [n["namespace"] for n in namespaces] == [f"{top}.app"]
    root = index.listNamespaces("")["namespaces"]
    assert top in [n["name"] for n in root]


def test_a_lower_rank_keeps_the_entry(index):
    """An insert with a lower rank answers 200 with the entry that stays."""
    path = f"py{random_word()}.ranked"
    high, low = taskcluster.slugId(), taskcluster.slugId()
    index.insertTask(path, {"taskId": high, "rank": 10, "data": {}, "expires": from_now(3600)})
    kept = index.insertTask(path, {"taskId": low, "rank": 9, "data": {}, "expires": from_now(3600)})
    assert kept["taskId"] == high
    assert index.findTask(path)["taskId"] == high


def test_unknown_paths_and_missing_scopes(server, index):
    """findTask of nothing is 404 ResourceNotFound; insertTask without the
    scope is 403 InsufficientScopes; a bad namespace is 400."""
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        index.findTask(f"py{random_word()}.nothing")
    assert excinfo.value.status_code == 404
    assert error_code(excinfo) == "ResourceNotFound"

    limited = server.index("limited")
    body = {"taskId": taskcluster.slugId(), "rank": 0, "data": {}, "expires": from_now(60)}
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        limited.insertTask("py.forbidden", body)
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        index.insertTask("py..bad", body)
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InvalidRequestArguments"


def test_completed_tasks_are_indexed_by_their_routes(queue, index):
    """A task on ``built-in/succeed`` with ``index.`` routes completes at once
    and is found under each route with its ``extra.index`` options."""
    top = f"py{random_word()}"
    task_id = taskcluster.slugId()
    expires = from_now(7200)
    queue.createTask(
        task_id,
        task_definition(
            "built-in/succeed",
            payload={},
            routes=[f"index.{top}.latest", f"index.{top}.rev.abc"],
            extra={"index": {"rank": 3, "data": {"rev": "abc"}, "expires": expires}},
        ),
    )
    for path in [f"{top}.latest", f"{top}.rev.abc"]:
        entry = wait_for(lambda: _found(index, path), timeout=30, what=f"an entry at {path}")
        assert entry == {
            "namespace": path,
            "taskId": task_id,
            "rank": 3,
            "data": {"rev": "abc"},
            "expires": expires,
        }
    assert queue.status(task_id)["status"]["state"] == "completed"

    failed = taskcluster.slugId()
    queue.createTask(failed, task_definition("built-in/fail", payload={}, routes=[f"index.{top}.failed"]))
    wait_for(lambda: queue.status(failed)["status"]["state"] == "failed", timeout=30, what="the failing task")
    assert _found(index, f"{top}.failed") is None


def _found(index, path):
    try:
        return index.findTask(path)
    except TaskclusterRestFailure as e:
        if e.status_code == 404:
            return None
        raise


def test_find_artifact_from_task_leads_to_the_bytes(server, queue, worker_queue, index):
    """findArtifactFromTask redirects to the latest run's artifact: a public
    one without credentials, a private one through the signed URL."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    task_queue = server.queue_with(claim_one(worker_queue, tq)["credentials"])
    for name, content in [("public/out.txt", b"public bytes"), ("private/out.txt", b"private bytes")]:
        created = task_queue.createArtifact(
            task_id, 0, name, {"storageType": "s3", "contentType": "text/plain", "expires": from_now(3600)}
        )
        put = requests.put(created["putUrl"], data=content, headers={"Content-Type": "text/plain"}, timeout=30)
        assert put.status_code in (200, 201, 204)
    task_queue.reportCompleted(task_id, 0)
    path = f"py{random_word()}.artifacts"
    index.insertTask(path, {"taskId": task_id, "rank": 0, "data": {}, "expires": from_now(3600)})

    anonymous = server.index()
    response = requests.get(anonymous.buildUrl("findArtifactFromTask", path, "public/out.txt"), timeout=30)
    assert response.status_code == 200
    assert response.content == b"public bytes"
    assert response.history[0].status_code == 303

    denied = requests.get(anonymous.buildUrl("findArtifactFromTask", path, "private/out.txt"), timeout=30)
    assert denied.status_code == 403
    signed = index.buildSignedUrl("findArtifactFromTask", path, "private/out.txt")
    response = requests.get(signed, timeout=30)
    assert response.status_code == 200
    assert response.content == b"private bytes"
