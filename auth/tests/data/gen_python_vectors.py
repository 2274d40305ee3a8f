"""Regenerate python_vectors.json with the PyPI `taskcluster` client.

Run with a Python that has `taskcluster` (113.x) installed:

    python gen_python_vectors.py > python_vectors.json

A throwaway HTTP server on 127.0.0.1 records every request exactly as the
client sent it (method, raw request target, Host, Content-Type, body and
Authorization header). The Rust tests replay these against `Authenticator`
at the recorded time; they do not need Python.
"""

import datetime
import importlib.metadata
import http.server
import json
import threading
import time
import urllib.parse

import taskcluster

CAPTURED = []


class Recorder(http.server.BaseHTTPRequestHandler):
    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        CAPTURED.append(
            {
                "method": self.command,
                "resource": self.path,
                "host": self.headers.get("Host"),
                "authorization": self.headers.get("Authorization"),
                "contentType": self.headers.get("Content-Type"),
                "body": body.decode(),
            }
        )
        out = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, *args):
        pass


def _text(value):
    # the client returns some values (signed URLs, tokens) as bytes
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(type(value))


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{port}"

    issuer = {"clientId": "static/issuer", "accessToken": "issuer-secret-token-0123456789abcdef"}
    worker = {"clientId": "project/worker", "accessToken": "worker-secret-token-0123456789abcdef"}

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start = now - datetime.timedelta(minutes=1)
    expiry = now + datetime.timedelta(hours=2)

    named = taskcluster.createTemporaryCredentials(
        issuer["clientId"], issuer["accessToken"], start, expiry,
        ["queue:create-artifact:T1/0", "queue:resolve-task:T1/0"],
        name="task-client/T1/0/on/wg/w1/until/1700000000",
    )
    unnamed = taskcluster.createTemporaryCredentials(
        issuer["clientId"], issuer["accessToken"], start, expiry,
        ["queue:get-artifact:private/*"],
    )
    for c in (named, unnamed):
        for k, v in list(c.items()):
            if isinstance(v, bytes):
                c[k] = v.decode()

    vectors = []

    def run(name, creds, call, **opts):
        before = len(CAPTURED)
        q = taskcluster.Queue({"rootUrl": root, "credentials": creds, "maxRetries": 0, **opts})
        call(q)
        req = CAPTURED[before]
        req["name"] = name
        req["credentials"] = creds
        req["port"] = port
        vectors.append(req)

    task_def = {"provisionerId": "p", "workerType": "w", "payload": {}, "metadata": {"name": "ü"}}
    run("permanent GET", worker, lambda q: q.task("T1"))
    run("permanent GET with query", worker,
        lambda q: q.listTaskGroup("G1", query={"limit": 5, "continuationToken": "a b/c"}))
    run("permanent PUT with JSON body", worker, lambda q: q.createTask("T1", task_def))
    run("permanent POST without body", worker, lambda q: q.reportCompleted("T1", "0"))
    run("authorizedScopes", worker, lambda q: q.task("T1"), authorizedScopes=["queue:get-task:T1"])
    run("named temporary credentials", named, lambda q: q.reportCompleted("T1", "0"))
    run("unnamed temporary credentials", unnamed, lambda q: q.task("T1"))
    run("named temporary credentials with authorizedScopes", named,
        lambda q: q.reportCompleted("T1", "0"), authorizedScopes=["queue:resolve-task:T1/0"])

    # signed URL (bewit); the request is made the way a browser or curl would follow it
    for name, creds in (("bewit permanent", worker), ("bewit unnamed temporary", unnamed)):
        q = taskcluster.Queue({"rootUrl": root, "credentials": creds})
        url = q.buildSignedUrl("getLatestArtifact", "T1", "private/log.txt", expiration=600)
        u = urllib.parse.urlparse(url)
        vectors.append({
            "name": name, "method": "GET",
            "resource": u.path + "?" + u.query, "host": u.netloc,
            "authorization": None, "contentType": None, "body": "",
            "credentials": creds, "port": port,
        })

    server.shutdown()
    print(json.dumps({
        "generator": "taskcluster (PyPI) " + importlib.metadata.version("taskcluster"),
        "now": int(time.time()),
        "issuer": issuer,
        "clients": [worker, issuer],
        "vectors": vectors,
    }, indent=2, ensure_ascii=False, default=_text))


if __name__ == "__main__":
    main()
