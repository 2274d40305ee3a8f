"""Pulse messages in RabbitMQ: exchange names and routing-key patterns come
from ``taskcluster.QueueEvents``; the messages are read with pika from a
fresh vhost that the queue publishes to (``BBB_AMQP_URL``)."""

import json
import time

import pika
import pytest
import taskcluster

from bbbtest import (
    BACKENDS,
    RESOLVER_INTERVAL_MS,
    WORKER_GROUP,
    RabbitVhost,
    claim_one,
    from_now,
    new_task_queue,
    random_word,
    start_server,
    task_definition,
    wait_for,
)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    """A queue publishing to its own RabbitMQ vhost; ``server.vhost`` is it."""
    vhost = RabbitVhost()
    request.addfinalizer(vhost.delete)
    server = start_server(
        request,
        tmp_path_factory,
        BBB_AMQP_URL=vhost.amqp_url,
        BBB_DEADLINE_DELAY_S="0",
        BBB_RESOLVER_INTERVAL_MS=str(RESOLVER_INTERVAL_MS),
    )
    server.vhost = vhost
    return server


class Listener:
    """Exclusive queues on the server's vhost, bound to queue exchanges."""

    def __init__(self, amqp_url: str):
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()

    def bind(self, binding: dict) -> str:
        """Bind a new exclusive queue with a QueueEvents binding
        (``{'exchange': .., 'routingKeyPattern': ..}``); return its name."""
        # Pulse exchanges are durable topic exchanges; declaring one that
        # already exists with these properties is a no-op.
        self.channel.exchange_declare(binding["exchange"], exchange_type="topic", durable=True)
        queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(queue, binding["exchange"], binding["routingKeyPattern"])
        return queue

    def get(self, queue: str, timeout: float = 15):
        """The next message on ``queue`` as (routing key, properties, JSON body)."""

        def poll():
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            return (method.routing_key, properties, json.loads(body)) if method else None

        return wait_for(poll, timeout, f"a message on {queue}", interval=0.1)

    def assert_empty(self, queue: str, wait: float = 1.0):
        """Assert that no further message arrives on ``queue`` within ``wait`` s."""
        time.sleep(wait)
        method, _, body = self.channel.basic_get(queue, auto_ack=True)
        assert method is None, f"unexpected extra message {method.routing_key}: {body!r}"

    def close(self):
        self.connection.close()


@pytest.fixture
def listener(server):
    listener = Listener(server.vhost.amqp_url)
    yield listener
    listener.close()


@pytest.fixture
def events(server):
    return taskcluster.QueueEvents({"rootUrl": server.root_url})


def test_every_exchange_exists_before_any_message(server, events):
    """A consumer that declares the queue's exchanges passively (Treeherder's
    listener does) finds every exchange of upstream's ``QueueEvents`` on a
    fresh queue, durable topic exchanges as upstream declares them. First in
    the module: nothing has been published on the vhost yet."""
    # Each method of the official QueueEvents is one exchange.
    methods = [m for m, f in vars(taskcluster.QueueEvents).items() if callable(f) and not m.startswith("_")]
    names = [getattr(events, m)()["exchange"] for m in methods]
    assert "exchange/taskcluster-queue/v1/task-group-resolved" in names and len(names) >= 9, names
    connection = pika.BlockingConnection(pika.URLParameters(server.vhost.amqp_url))
    try:
        for name in names:
            channel = connection.channel()
            try:
                channel.exchange_declare(name, passive=True)
                # Redeclared with upstream's settings: refused if they differ.
                channel.exchange_declare(name, exchange_type="topic", durable=True)
            except pika.exceptions.ChannelClosedByBroker as e:
                pytest.fail(f"exchange {name}: {e}")
            channel.close()
    finally:
        connection.close()


def test_task_completed_message_and_route_cc(server, queue, worker_queue, listener, events):
    """reportCompleted publishes task-completed with the primary routing key;
    a queue bound to ``route.<route>`` gets the CC copy."""
    group = taskcluster.slugId()
    route = f"index.bbb-test.{random_word()}.latest"
    by_group = listener.bind(events.taskCompleted({"taskGroupId": group}))
    by_route = listener.bind(
        {"exchange": events.taskCompleted()["exchange"], "routingKeyPattern": f"route.{route}"}
    )

    tq = new_task_queue()
    provisioner, worker_type = tq.split("/")
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, taskGroupId=group, routes=[route], tags={"kind": "events"}))
    claim = claim_one(worker_queue, tq)
    worker_id = claim["workerId"]
    status = server.queue_with(claim["credentials"]).reportCompleted(task_id, 0)["status"]

    routing_key, properties, body = listener.get(by_group)
    assert (
        routing_key
        == f"primary.{task_id}.0.{WORKER_GROUP}.{worker_id}.{provisioner}.{worker_type}.-.{group}._"
    )
    assert properties.content_type == "application/json"
    assert body["version"] == 1
    assert body["runId"] == 0
    assert body["workerGroup"] == WORKER_GROUP
    assert body["workerId"] == worker_id
    assert body["status"] == status
    assert body["task"] == {"tags": {"kind": "events"}}
    listener.assert_empty(by_group)

    routing_key, properties, body = listener.get(by_route)
    assert (
        routing_key
        == f"primary.{task_id}.0.{WORKER_GROUP}.{worker_id}.{provisioner}.{worker_type}.-.{group}._"
    )
    assert f"route.{route}" in (properties.headers or {}).get("CC", [])
    assert body["status"]["taskId"] == task_id
    assert body["status"]["state"] == "completed"


def test_defined_pending_running_messages(queue, worker_queue, listener, events):
    """createTask publishes task-defined and task-pending; claimWork
    publishes task-running with the claim's takenUntil."""
    task_id = taskcluster.slugId()
    defined = listener.bind(events.taskDefined({"taskId": task_id}))
    pending = listener.bind(events.taskPending({"taskId": task_id}))
    running = listener.bind(events.taskRunning({"taskId": task_id}))

    tq = new_task_queue()
    provisioner, worker_type = tq.split("/")
    queue.createTask(task_id, task_definition(tq))

    routing_key, _, body = listener.get(defined)
    assert routing_key == f"primary.{task_id}._._._.{provisioner}.{worker_type}.-.{task_id}._"
    assert body["version"] == 1
    assert body["status"]["taskId"] == task_id

    routing_key, _, body = listener.get(pending)
    assert routing_key == f"primary.{task_id}.0._._.{provisioner}.{worker_type}.-.{task_id}._"
    assert body["runId"] == 0
    assert body["status"]["state"] == "pending"

    claim = claim_one(worker_queue, tq)
    routing_key, _, body = listener.get(running)
    assert routing_key == (
        f"primary.{task_id}.0.{WORKER_GROUP}.{claim['workerId']}.{provisioner}.{worker_type}.-.{task_id}._"
    )
    assert body["runId"] == 0
    assert body["workerGroup"] == WORKER_GROUP
    assert body["workerId"] == claim["workerId"]
    assert body["takenUntil"] == claim["takenUntil"]
    assert body["status"]["state"] == "running"


def test_exception_and_retry_messages(server, queue, worker_queue, listener, events):
    """reportException(worker-shutdown) publishes task-exception for run 0
    and task-pending for the retry run 1."""
    task_id = taskcluster.slugId()
    exception = listener.bind(events.taskException({"taskId": task_id}))
    pending = listener.bind(events.taskPending({"taskId": task_id, "runId": "1"}))

    tq = new_task_queue()
    queue.createTask(task_id, task_definition(tq))
    claim = claim_one(worker_queue, tq)
    server.queue_with(claim["credentials"]).reportException(task_id, 0, {"reason": "worker-shutdown"})

    _, _, body = listener.get(exception)
    assert body["runId"] == 0
    assert body["workerId"] == claim["workerId"]
    assert body["status"]["runs"][0]["reasonResolved"] == "worker-shutdown"

    routing_key, _, body = listener.get(pending)
    assert routing_key.startswith(f"primary.{task_id}.1._._.")
    assert body["runId"] == 1
    assert body["status"]["runs"][1]["reasonCreated"] == "retry"


def test_artifact_created_message(server, queue, worker_queue, listener, events):
    """A ``reference`` artifact publishes artifact-created with its details."""
    task_id = taskcluster.slugId()
    created = listener.bind(events.artifactCreated({"taskId": task_id}))
    tq = new_task_queue()
    queue.createTask(task_id, task_definition(tq))
    claim = claim_one(worker_queue, tq)
    expires = from_now(3600)
    server.queue_with(claim["credentials"]).createArtifact(
        task_id,
        0,
        "public/logs/live.log",
        {
            "storageType": "reference",
            "contentType": "text/plain",
            "expires": expires,
            "url": "https://example.com/x",
        },
    )

    _, _, body = listener.get(created)
    assert body["runId"] == 0
    assert body["workerGroup"] == WORKER_GROUP
    assert body["workerId"] == claim["workerId"]
    assert body["artifact"] == {
        "storageType": "reference",
        "name": "public/logs/live.log",
        "expires": expires,
        "contentType": "text/plain",
    }


def test_task_group_resolved_message(server, queue, worker_queue, listener, events):
    """When the last task of a group resolves, task-group-resolved is
    published with the group key ``primary.<taskGroupId>.<schedulerId>._``."""
    group = taskcluster.slugId()
    resolved = listener.bind(events.taskGroupResolved({"taskGroupId": group}))
    tq = new_task_queue()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, taskGroupId=group))
    claim = claim_one(worker_queue, tq)
    server.queue_with(claim["credentials"]).reportCompleted(task_id, 0)

    routing_key, _, body = listener.get(resolved)
    assert routing_key == f"primary.{group}.-._"
    assert body["version"] == 1
    assert body["taskGroupId"] == group
    assert body["schedulerId"] == "-"
    assert "expires" in body
