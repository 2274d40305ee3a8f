"""``s3`` artifacts in an S3-compatible store: a queue configured through the
``BBB_BLOB_*`` environment variables against a real S3 server (moto), driven
by the official client: createArtifact, a PUT to the putUrl as workers send it,
and downloads through getArtifact's redirect and a signed getArtifact URL. The
presigned putUrl is also checked against boto3's own presigning."""

from __future__ import annotations

import contextlib
import datetime
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from unittest import mock

import boto3
import botocore.auth
import botocore.config
import pytest
import requests
import taskcluster

from bbbtest import BACKENDS, claim_one, free_port, from_now, new_task_queue, parse_date, start_server, task_definition

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto():
    """A ``moto_server`` (from the same virtualenv as pytest) on a free port;
    yields its URL."""
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"moto_server exited with {process.returncode}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/moto-api/", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "moto_server did not answer within 60s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module", params=BACKENDS)
def s3_server(request, tmp_path_factory, moto):
    """A queue whose ``s3`` artifacts go to a fresh bucket on the moto server."""
    bucket = f"bbb-{request.param}-{taskcluster.slugId().lower().replace('_', '-')[:12]}"
    server = start_server(
        request,
        tmp_path_factory,
        BBB_BLOB_KIND="s3",
        BBB_BLOB_S3_ENDPOINT=moto,
        BBB_BLOB_S3_BUCKET=bucket,
        BBB_BLOB_S3_REGION=REGION,
        BBB_BLOB_S3_ACCESS_KEY_ID=ACCESS_KEY_ID,
        BBB_BLOB_S3_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        BBB_BLOB_S3_CREATE_BUCKET="true",
    )
    server.bucket = bucket
    server.moto = moto
    return server


def boto3_put_url(moto: str, bucket: str, key: str, content_type: str, amz_date: str, expires_in: int) -> str:
    """The URL boto3 presigns for the same PUT at the same moment."""
    moment = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    s3 = boto3.client(
        "s3",
        endpoint_url=moto,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=moment):
        return s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires_in,
        )


def test_s3_store_upload_and_download(s3_server):
    queue = s3_server.queue("root")
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    claim = claim_one(s3_server.queue("worker"), tq)
    task_queue = s3_server.queue_with(claim["credentials"])

    name = "public/logs/build log.txt"
    content_type = "text/plain; charset=utf-8"
    content = "compiled ✓\n".encode() * 1000
    response = task_queue.createArtifact(
        task_id,
        0,
        name,
        {"storageType": "s3", "contentType": content_type, "expires": from_now(3600), "contentLength": len(content)},
    )
    assert response["storageType"] == "s3"
    assert response["contentType"] == content_type
    put_url = response["putUrl"]
    key = f"{task_id}/0/{name}"
    assert put_url.startswith(f"{s3_server.moto}/{s3_server.bucket}/{urllib.parse.quote(key)}?")
    lifetime = parse_date(response["expires"]) - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=40) < lifetime < datetime.timedelta(minutes=50)

    # The signature is the one boto3 makes for the same request.
    ours = urllib.parse.parse_qs(urllib.parse.urlsplit(put_url).query)
    theirs_url = boto3_put_url(
        s3_server.moto, s3_server.bucket, key, content_type, ours["X-Amz-Date"][0], int(ours["X-Amz-Expires"][0])
    )
    theirs = urllib.parse.parse_qs(urllib.parse.urlsplit(theirs_url).query)
    assert urllib.parse.urlsplit(theirs_url).path == urllib.parse.urlsplit(put_url).path
    for param in ("X-Amz-Credential", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        assert ours[param] == theirs[param], param

    # Upload as a worker does: the contentType given to createArtifact.
    put = requests.put(put_url, data=content, headers={"Content-Type": content_type}, timeout=30)
    assert put.status_code == 200, put.text[:500]

    # getArtifact's redirect, and a signed URL followed by requests.
    result = queue.getArtifact(task_id, 0, name)
    assert result["storageType"] == "s3"
    assert result["url"].startswith(s3_server.moto)
    for url in (result["url"], queue.buildSignedUrl("getLatestArtifact", task_id, name)):
        download = requests.get(url, timeout=30)
        assert download.status_code == 200
        assert download.headers["Content-Type"] == content_type
        assert download.content == content
    # The object is in the bucket under <taskId>/<runId>/<name>.
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.moto,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    head = s3.head_object(Bucket=s3_server.bucket, Key=key)
    assert head["ContentLength"] == len(content)
    assert head["ContentType"] == content_type
