"""Shared helpers for the queue compatibility suite: running the ``bbb queue``
binary, throw-away PostgreSQL databases and RabbitMQ vhosts, task definitions
and polling."""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import signal
import socket
import string
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import requests
import taskcluster

# --- identities used by the suite --------------------------------------------

PROVISIONER = "bbb-test"
WORKER_GROUP = "bbb-test-group"

#: Scopes of the ``worker`` client: claim work from ``bbb-test/*`` queues as
#: any worker of ``bbb-test-group``. Everything else a worker does uses the
#: task credentials returned by the claim.
WORKER_SCOPES = [
    f"queue:claim-work:{PROVISIONER}/*",
    f"queue:worker-id:{WORKER_GROUP}/*",
]

#: Scopes of the ``limited`` client: read task definitions and statuses only.
LIMITED_SCOPES = ["queue:get-task:*", "queue:status:*"]

#: Scopes of the ``anonymous`` role (requests without credentials).
ANONYMOUS_SCOPES = ["queue:get-artifact:public/*"]

#: Scopes of the roles ``hook-id:bbb-test/*``: the tasks the suite's hooks
#: create may be created on any task queue, by any scheduler.
HOOK_ROLE_SCOPES = ["queue:create-task:*", "queue:scheduler-id:*"]

#: Storage backends every server-backed test module runs against.
BACKENDS = ["sqlite", "postgres"]

REPO = Path(__file__).resolve().parents[2]

#: Interval of the server's background resolvers in the tests, in ms.
RESOLVER_INTERVAL_MS = 200


# --- bbb's CI service -------------------------------------------------------------


def _ci_entry(name: str, method: str, route: str, args: list[str], **more: Any) -> dict:
    return {"type": "function", "name": name, "method": method, "route": route, "args": args, **more}


#: A client of bbb's CI service (``/api/ci/v1/``), which has no official
#: client: the official library's generic client, made from a reference of
#: the methods the suite calls, as upstream's generated clients are.
CI = taskcluster.client.createApiClient(
    "CI",
    {
        "reference": {
            "serviceName": "ci",
            "apiVersion": "v1",
            "entries": [
                _ci_entry("repository", "get", "/repositories/<project>", ["project"]),
                _ci_entry(
                    "createOrUpdateRepository", "put", "/repositories/<project>", ["project"], input="repository"
                ),
                _ci_entry(
                    "listPushes",
                    "get",
                    "/repositories/<project>/pushes",
                    ["project"],
                    query=["branch", "limit", "continuationToken"],
                ),
            ],
        }
    },
)


def decided_push(ci, project: str, branch: str, revision: str, timeout: float = 120) -> dict:
    """Waits until the push of ``revision`` to ``branch`` is decided (or
    observed, on a ``buildbot`` branch) and returns it; a failed push fails."""

    def find():
        for push in ci.listPushes(project, query={"branch": branch})["pushes"]:
            if push["revision"] == revision:
                assert push["state"] != "failed", push
                return push if push["state"] in ("decided", "observed") else None
        return None

    return wait_for(find, timeout, f"the push of {revision} to {project}/{branch}", interval=0.5)


# --- time and ids ---------------------------------------------------------------


def iso(moment: datetime.datetime) -> str:
    """Format a UTC datetime the way TaskCluster stores dates
    (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_now(seconds: float) -> str:
    """``iso()`` of now plus ``seconds`` (may be negative)."""
    return iso(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds))


def parse_date(value: str) -> datetime.datetime:
    """Parse a TaskCluster date string into an aware datetime."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def random_word(n: int = 10) -> str:
    """Lower-case letters and digits, starting with a letter."""
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(alphabet) for _ in range(n - 1))


def new_task_queue() -> str:
    """A fresh ``taskQueueId`` (``bbb-test/<workerType>``), so tests never
    claim each other's tasks."""
    return f"{PROVISIONER}/wt-{random_word()}"


def new_worker_id() -> str:
    return f"w-{random_word()}"


def task_definition(task_queue_id: str, **overrides: Any) -> dict:
    """A minimal valid ``createTask`` payload; keyword arguments replace or
    add top-level fields."""
    definition = {
        "taskQueueId": task_queue_id,
        "created": from_now(0),
        "deadline": from_now(3600),
        "payload": {"command": ["echo", "hello"], "maxRunTime": 600},
        "metadata": {
            "name": "bbb compatibility test task",
            "description": "created by the Python compatibility suite",
            "owner": "bbb-tests@example.com",
            "source": "https://example.com/bbb/tests/python",
        },
    }
    definition.update(overrides)
    return definition


# --- polling ----------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call ``check`` until it returns a truthy value and return that value;
    fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def wait_for_state(queue: taskcluster.Queue, task_id: str, state: str, timeout: float = 15) -> dict:
    """Poll ``queue.status`` until the task is in ``state``; return the status."""

    def check():
        status = queue.status(task_id)["status"]
        return status if status["state"] == state else None

    return wait_for(check, timeout, f"task {task_id} to become {state}")


def error_code(excinfo) -> str:
    """The TaskCluster error ``code`` from a raised client exception's body."""
    body = excinfo.value.body
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    return body.get("code")


# --- local ports and services ---------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresDatabase:
    """A throw-away database on the test PostgreSQL server (``BBB_TEST_PG_URL``,
    default ``postgres://postgres@127.0.0.1:5432/postgres``)."""

    def __init__(self, admin_url: str, name: str):
        self.admin_url = admin_url
        self.name = name
        parts = urllib.parse.urlsplit(admin_url)
        self.url = urllib.parse.urlunsplit(parts._replace(path="/" + name))

    @classmethod
    def create(cls) -> "PostgresDatabase":
        admin_url = os.environ.get("BBB_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        db = cls(admin_url, f"bbb_pytest_{random_word(12)}")
        db._psql(f'CREATE DATABASE "{db.name}"')
        return db

    def drop(self) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", "-w", "-q", "-v", "ON_ERROR_STOP=1", self.admin_url, "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )


class RabbitVhost:
    """A throw-away RabbitMQ vhost on the local broker, writable by ``guest``."""

    def __init__(self):
        self.name = f"bbb-pytest-{random_word(12)}"
        self._ctl("add_vhost", self.name)
        try:
            self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        except subprocess.CalledProcessError:
            self.delete()
            raise
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{self.name}"

    def delete(self) -> None:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.name], capture_output=True, timeout=60)

    @staticmethod
    def _ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


# --- the server under test ----------------------------------------------------------


class PortTaken(Exception):
    """The server could not bind its port."""


class BbbServer:
    """One ``bbb queue`` process with its own config, database and port."""

    def __init__(self, binary: Path, workdir: Path, database_url: str, name: str, env: dict):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.database_url = database_url
        self.name = name
        self.extra_env = dict(env)
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "bbb.log"
        self.config_path = self.workdir / "bbb.toml"
        self.clients = {
            "root": {"clientId": "root", "accessToken": secrets.token_urlsafe(32)},
            "worker": {"clientId": "worker", "accessToken": secrets.token_urlsafe(32)},
            "limited": {"clientId": "limited", "accessToken": secrets.token_urlsafe(32)},
        }
        self.process: subprocess.Popen | None = None

    # -- lifecycle --

    def write_config(self) -> None:
        def toml_list(items):
            return "[" + ", ".join(f'"{i}"' for i in items) + "]"

        self.config_path.write_text(
            "# Generated by tests/python/bbbtest.py\n"
            "[[auth.clients]]\n"
            'client_id = "worker"\n'
            f'access_token = "{self.clients["worker"]["accessToken"]}"\n'
            f"scopes = {toml_list(WORKER_SCOPES)}\n"
            "\n"
            "[[auth.clients]]\n"
            'client_id = "limited"\n'
            f'access_token = "{self.clients["limited"]["accessToken"]}"\n'
            f"scopes = {toml_list(LIMITED_SCOPES)}\n"
            "\n"
            "[[auth.roles]]\n"
            'role_id = "anonymous"\n'
            f"scopes = {toml_list(ANONYMOUS_SCOPES)}\n"
            "\n"
            "[[auth.roles]]\n"
            f'role_id = "hook-id:{PROVISIONER}/*"\n'
            f"scopes = {toml_list(HOOK_ROLE_SCOPES)}\n"
        )

    def start(self, timeout: float = 60) -> None:
        """Start the process and wait until it answers ping. If the chosen
        port was taken in the meantime (another test process picked it too),
        try again on a new port."""
        for _ in range(3):
            try:
                return self._start_once(timeout)
            except PortTaken:
                self.port = free_port()
                self.root_url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError("bbb queue could not bind a free port in 3 attempts:\n" + self.log_tail())

    def _start_once(self, timeout: float) -> None:
        if not self.binary.exists():
            raise RuntimeError(
                f"bbb binary not found at {self.binary}; build it with "
                "`cargo build --workspace` or set BBB_BIN"
            )
        self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BBB_") or k.startswith("BBB_TEST_")}
        env.update(
            {
                "BBB_LISTEN": f"127.0.0.1:{self.port}",
                "BBB_ROOT_URL": self.root_url,
                "BBB_DATABASE_URL": self.database_url,
                "BBB_ROOT_ACCESS_TOKEN": self.clients["root"]["accessToken"],
                "RUST_LOG": os.environ.get("RUST_LOG", "info"),
                "NO_COLOR": "1",
            }
        )
        env.update(self.extra_env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "queue", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        ping = f"{self.root_url}/api/queue/v1/ping"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                if "address already in use" in self.log_path.read_text(errors="replace").lower():
                    raise PortTaken()
                raise RuntimeError(
                    f"bbb queue exited with status {self.process.returncode} before answering ping:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(ping, timeout=2).status_code == 200:
                    return
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"bbb queue did not answer {ping} within {timeout}s:\n" + self.log_tail())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- clients --

    def client_config(self, client: str | None = None, **options: Any) -> dict[str, Any]:
        """Options of an official client for one of the configured clients, or
        an anonymous one for ``client=None``. No automatic retries, so a
        server error shows up as the error it is."""
        config: dict[str, Any] = {"rootUrl": self.root_url, "maxRetries": 0}
        if client is not None:
            config["credentials"] = dict(self.clients[client])
        config.update(options)
        return config

    def queue(self, client: str | None = None, **options: Any) -> taskcluster.Queue:
        """A ``taskcluster.Queue`` for one of the configured clients (see
        ``client_config``)."""
        return taskcluster.Queue(self.client_config(client, **options))

    def hooks(self, client: str | None = None) -> taskcluster.Hooks:
        """A ``taskcluster.Hooks`` client of the hooks service served beside
        the queue (see ``client_config``)."""
        return taskcluster.Hooks(self.client_config(client))

    def index(self, client: str | None = None) -> taskcluster.Index:
        """A ``taskcluster.Index`` for one of the configured clients, or an
        anonymous one for ``client=None``, without automatic retries."""
        config: dict[str, Any] = {"rootUrl": self.root_url, "maxRetries": 0}
        if client is not None:
            config["credentials"] = dict(self.clients[client])
        return taskcluster.Index(config)

    def queue_with(self, credentials: dict) -> taskcluster.Queue:
        """A ``taskcluster.Queue`` using the given credentials (e.g. the task
        credentials returned by a claim)."""
        return taskcluster.Queue(
            {"rootUrl": self.root_url, "maxRetries": 0, "credentials": dict(credentials)}
        )

    def temporary_credentials(self, scopes: list[str], client: str = "root") -> dict:
        """Temporary credentials issued by one of the configured clients for
        ``scopes``, valid from a minute ago for an hour."""
        issuer = self.clients[client]
        now = datetime.datetime.now(datetime.timezone.utc)
        return taskcluster.createTemporaryCredentials(
            issuer["clientId"],
            issuer["accessToken"],
            now - datetime.timedelta(minutes=1),
            now + datetime.timedelta(hours=1),
            scopes,
        )

    def events(self) -> taskcluster.QueueEvents:
        return taskcluster.QueueEvents({"rootUrl": self.root_url})


def claim_one(worker_queue: taskcluster.Queue, task_queue_id: str, worker_id: str | None = None) -> dict:
    """Claim exactly one task from ``task_queue_id`` as a ``bbb-test-group``
    worker and return the claim (``claimWork`` response item)."""
    worker_id = worker_id or new_worker_id()
    response = worker_queue.claimWork(
        task_queue_id, {"workerGroup": WORKER_GROUP, "workerId": worker_id, "tasks": 1}
    )
    assert len(response["tasks"]) == 1, f"expected one claimed task, got {response!r}"
    return response["tasks"][0]


def create_and_claim(server, queue: taskcluster.Queue, worker_queue: taskcluster.Queue, **overrides: Any):
    """Create one task on a fresh task queue (``task_definition`` with
    ``overrides``) and claim it; return (taskId, claim, client using the
    claim's task credentials)."""
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, **overrides))
    claim = claim_one(worker_queue, tq)
    assert claim["status"]["taskId"] == task_id
    return task_id, claim, server.queue_with(claim["credentials"])


def runs_of(status: dict) -> list[tuple]:
    """``(runId, state, reasonCreated, reasonResolved)`` of each run of a
    task status (``reasonResolved`` None while the run is unresolved)."""
    return [(r["runId"], r["state"], r["reasonCreated"], r.get("reasonResolved")) for r in status["runs"]]


def create_blocked(queue: taskcluster.Queue, **overrides: Any) -> str:
    """Create a task (``task_definition`` with ``overrides``) that depends on
    another, pending, task: it stays unscheduled. Return its taskId."""
    blocker = taskcluster.slugId()
    queue.createTask(blocker, task_definition(new_task_queue()))
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue(), dependencies=[blocker], **overrides))
    return task_id


def bbb_binary() -> Path:
    """Path of the bbb binary under test (env ``BBB_BIN``, default
    ``<repo>/target/debug/bbb``)."""
    return Path(os.environ.get("BBB_BIN", REPO / "target" / "debug" / "bbb"))


def hash_password(password: str) -> str:
    """``bbb login hash-password``, the password on stdin: an Argon2 hash
    for a ``[[login.users]]`` entry."""
    out = subprocess.run(
        [str(bbb_binary()), "login", "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def start_server(request, tmp_path_factory, **env: str) -> BbbServer:
    """Start a ``bbb queue`` for the current backend parameter
    (``request.param``, one of BACKENDS) with extra environment ``env``.

    The server and, for PostgreSQL, its database are torn down at the end of
    the requesting fixture's scope.
    """
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"bbb-{backend}")
    if backend == "sqlite":
        database_url = f"sqlite://{workdir / 'queue.sqlite'}"
    elif backend == "postgres":
        db = PostgresDatabase.create()
        request.addfinalizer(db.drop)
        database_url = db.url
    else:
        raise ValueError(f"unknown backend {backend!r}")
    server = BbbServer(
        binary=bbb_binary(),
        workdir=workdir,
        database_url=database_url,
        name=f"{request.module.__name__}[{backend}]",
        env=env,
    )
    request.addfinalizer(server.stop)
    server.start()
    return server


class UpProcess:
    """One ``bbb up`` process on a free port, with its own data directory
    under ``workdir``, the root access token ``token`` (a fresh one if not
    given) and extra environment ``env``. ``root_url`` answers once
    :meth:`start` returns; as a context manager it starts on entry and stops
    (SIGTERM) on exit."""

    def __init__(self, workdir: Path, token: str | None = None, **env: str):
        self.workdir = Path(workdir)
        self.token = token or "up-" + taskcluster.slugId()
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "up.log"
        self.env = dict(
            os.environ,
            BBB_LISTEN=f"127.0.0.1:{self.port}",
            BBB_ROOT_ACCESS_TOKEN=self.token,
            BBB_LOG="info",
            **env,
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "UpProcess":
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(bbb_binary()), "up", "--data-dir", str(self.workdir / "data")],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        wait_for(lambda: self.answers(f"{self.root_url}/api/queue/v1/ping"), timeout, "bbb up to answer ping")
        return self

    def answers(self, url: str) -> bool:
        """Whether ``url`` answers; fails with the log if ``bbb up`` died."""
        try:
            return requests.get(url, timeout=2).ok
        except requests.ConnectionError:
            assert self.process is not None and self.process.poll() is None, self.log_path.read_text()
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()
            self.process = None

    def __enter__(self) -> "UpProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def root_credentials(self) -> dict:
        return {"clientId": "root", "accessToken": self.token}

    def client(self, kind: str, credentials: dict | None = None) -> Any:
        """An official client (``"Queue"``, ``"Auth"``, ``"Hooks"``...) of
        this ``bbb up``, with the root credentials unless others are given."""
        return getattr(taskcluster, kind)(
            {"rootUrl": self.root_url, "credentials": credentials or self.root_credentials()}
        )

    def queue(self) -> taskcluster.Queue:
        """A root client of its queue."""
        return self.client("Queue")
