"""Artifacts: the ``s3`` upload flow (createArtifact, PUT to putUrl,
getArtifact / getLatestArtifact redirects), signed URLs for private
artifacts, ``reference`` and ``error`` artifacts."""

import datetime

import pytest
import requests
import taskcluster
import taskcluster.download
from taskcluster.exceptions import TaskclusterArtifactError, TaskclusterRestFailure

from bbbtest import create_and_claim, error_code, from_now, parse_date


@pytest.fixture
def running(server, queue, worker_queue):
    """A claimed task: (taskId, claim, client with the task credentials)."""
    return create_and_claim(server, queue, worker_queue)


def upload_s3(task_queue, task_id, run_id, name, content: bytes, content_type="text/plain"):
    """createArtifact(storageType s3) and PUT the bytes to the returned
    putUrl; return the artifact's ``expires``."""
    expires = from_now(24 * 3600)
    response = task_queue.createArtifact(
        task_id,
        run_id,
        name,
        {"storageType": "s3", "contentType": content_type, "expires": expires, "contentLength": len(content)},
    )
    assert response["storageType"] == "s3"
    assert response["contentType"] == content_type
    # For s3, ``expires`` is when the signed putUrl stops working (45 min).
    url_lifetime = parse_date(response["expires"]) - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=30) < url_lifetime < datetime.timedelta(minutes=60)
    assert response["putUrl"].startswith("http")
    put = requests.put(
        response["putUrl"],
        data=content,
        headers={"Content-Type": content_type, "Content-Length": str(len(content))},
        timeout=30,
    )
    assert put.status_code in (200, 201, 204), f"PUT to putUrl failed: {put.status_code} {put.text[:500]}"
    return expires


def test_s3_artifact_roundtrip(server, queue, running):
    """Bytes uploaded to putUrl come back through the URLs that getArtifact
    and getLatestArtifact return (the JSON body of their 303 answers)."""
    task_id, _, task_queue = running
    content = b"bbb artifact \x00\x01\x02 " + bytes(range(256)) * 40
    name = "public/build/output.bin"
    expires = upload_s3(task_queue, task_id, 0, name, content, "application/octet-stream")

    for result in (queue.getArtifact(task_id, 0, name), queue.getLatestArtifact(task_id, name)):
        assert result["storageType"] == "s3"
        download = requests.get(result["url"], timeout=30)
        assert download.status_code == 200
        assert download.content == content

    listing = queue.listArtifacts(task_id, 0)
    entries = [a for a in listing["artifacts"] if a["name"] == name]
    assert len(entries) == 1
    assert entries[0]["storageType"] == "s3"
    assert entries[0]["contentType"] == "application/octet-stream"
    assert entries[0]["expires"] == expires
    assert [a["name"] for a in queue.listLatestArtifacts(task_id)["artifacts"]] == [name]


def test_public_artifact_is_readable_without_credentials(server, running):
    """The anonymous role may read ``public/*``: an unauthenticated GET of
    the artifact URL redirects to the content."""
    task_id, _, task_queue = running
    content = b"hello, anonymous reader\n"
    upload_s3(task_queue, task_id, 0, "public/logs/live.log", content)

    anonymous = server.queue()
    url = anonymous.buildUrl("getLatestArtifact", task_id, "public/logs/live.log")
    assert "public%2Flogs%2Flive.log" in url
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == content
    assert response.history and response.history[0].status_code == 303
    assert response.history[0].headers["x-taskcluster-artifact-storage-type"] == "s3"


def test_private_artifact_needs_a_signed_url(server, queue, running):
    """A private artifact refuses anonymous reads (403 InsufficientScopes) and
    is served through a bewit-signed URL from buildSignedUrl."""
    task_id, _, task_queue = running
    content = b"secret build log\n"
    name = "private/logs/secret.log"
    upload_s3(task_queue, task_id, 0, name, content)

    anonymous = server.queue()
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        anonymous.getLatestArtifact(task_id, name)
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"

    signed = queue.buildSignedUrl("getLatestArtifact", task_id, name)
    assert "bewit=" in signed
    response = requests.get(signed, timeout=30)
    assert response.status_code == 200
    assert response.content == content

    signed_run = queue.buildSignedUrl("getArtifact", task_id, 0, name)
    assert requests.get(signed_run, timeout=30).content == content


def test_reference_artifact_redirects_to_its_url(queue, running):
    """A ``reference`` artifact's getArtifact body carries the referenced URL."""
    task_id, _, task_queue = running
    url = "https://example.com/bbb/some/file.txt"
    response = task_queue.createArtifact(
        task_id,
        0,
        "public/reference.txt",
        {"storageType": "reference", "contentType": "text/plain", "expires": from_now(3600), "url": url},
    )
    assert response["storageType"] == "reference"

    result = queue.getArtifact(task_id, 0, "public/reference.txt")
    assert result == {"storageType": "reference", "url": url}


def test_error_artifact_answers_424(queue, running):
    """An ``error`` artifact is answered with 424 and its reason and message."""
    task_id, _, task_queue = running
    task_queue.createArtifact(
        task_id,
        0,
        "public/missing.txt",
        {
            "storageType": "error",
            "expires": from_now(3600),
            "reason": "file-missing-on-worker",
            "message": "the file was not there",
        },
    )

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.getArtifact(task_id, 0, "public/missing.txt")
    assert excinfo.value.status_code == 424
    assert excinfo.value.body["reason"] == "file-missing-on-worker"
    assert excinfo.value.body["message"] == "the file was not there"


def test_artifacts_are_refused_after_completion(queue, running):
    """Once the run is completed, createArtifact gives 409 RequestConflict."""
    task_id, _, task_queue = running
    task_queue.reportCompleted(task_id, 0)

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        task_queue.createArtifact(
            task_id,
            0,
            "public/late.txt",
            {"storageType": "s3", "contentType": "text/plain", "expires": from_now(3600)},
        )
    assert excinfo.value.status_code == 409
    assert error_code(excinfo) == "RequestConflict"


def test_unknown_artifact_is_not_found(queue, running):
    """getArtifact of a name that was never created gives 404 ResourceNotFound."""
    task_id, _, _ = running
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.getArtifact(task_id, 0, "public/nothing-here.txt")
    assert excinfo.value.status_code == 404
    assert error_code(excinfo) == "ResourceNotFound"


def test_artifact_content_and_the_download_helpers(server, queue, running):
    """``artifact``/``latestArtifact`` answer where the content is (JSON, no
    redirect), and the client's download helpers, which call them, fetch the
    bytes of ``s3`` and ``reference`` artifacts and raise for ``error`` ones."""
    task_id, _, task_queue = running
    content = b"downloaded through the helpers\n"
    upload_s3(task_queue, task_id, 0, "public/dl.txt", content)
    reference_url = f"{server.root_url}/api/queue/v1/ping"
    task_queue.createArtifact(
        task_id,
        0,
        "public/ref",
        {
            "storageType": "reference",
            "contentType": "application/json",
            "expires": from_now(3600),
            "url": reference_url,
        },
    )
    task_queue.createArtifact(
        task_id,
        0,
        "public/err",
        {"storageType": "error", "expires": from_now(3600), "reason": "file-missing-on-worker", "message": "gone"},
    )

    for result in (queue.artifact(task_id, 0, "public/dl.txt"), queue.latestArtifact(task_id, "public/dl.txt")):
        assert set(result) == {"storageType", "url"}
        assert result["storageType"] == "s3"
        assert requests.get(result["url"], timeout=30).content == content
    assert queue.latestArtifact(task_id, "public/ref") == {"storageType": "reference", "url": reference_url}
    assert queue.artifact(task_id, 0, "public/err") == {
        "storageType": "error",
        "reason": "file-missing-on-worker",
        "message": "gone",
    }

    anonymous = server.queue()
    buf, content_type = taskcluster.download.downloadArtifactToBuf(
        taskId=task_id, name="public/dl.txt", queueService=anonymous
    )
    assert (bytes(buf), content_type) == (content, "text/plain")
    buf, _ = taskcluster.download.downloadArtifactToBuf(
        taskId=task_id, runId=0, name="public/ref", queueService=anonymous
    )
    assert b'"alive"' in bytes(buf)
    with pytest.raises(TaskclusterArtifactError):
        taskcluster.download.downloadArtifactToBuf(taskId=task_id, name="public/err", queueService=anonymous)

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        anonymous.latestArtifact(task_id, "private/none")
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"
