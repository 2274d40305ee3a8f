"""bbb's reporter plugin for Buildbot (4.x) masters.

Install it by copying this file next to the master's ``master.cfg`` and adding
to the configuration::

    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bbb_reporter

    c['services'].append(bbb_reporter.BbbReporter(
        amqp_url='amqp://user:password@rabbitmq.example:5672/%2f',
        exchange='exchange/build',           # a durable topic exchange
        queue='queue/bbb/buildbot-builds',   # optional: pre-declared, so that
    ))                                       # nothing is lost before bbb starts

The master's AMQP client is ``pika`` (``pip install pika`` in its venv).

What it publishes
-----------------

The reporter listens to the master's internal message queue and publishes one
persistent JSON message per change, in the envelope of Mozilla's Pulse build
messages (``{"payload": ..., "_meta": {"master_name", "master_incarnation",
"routing_key", "exchange", "sent", "message_id", "serializer"}}``):

``build.<dir>.<number>.started``
    A build started. ``payload.build`` is the build in Buildbot 0.8's
    ``asDict`` shape (``builderName``, ``number``, ``properties`` as
    ``[name, value, source]`` triples, ``times``, ``results``, ``slave``,
    ``reason``) plus ``buildid``, ``buildrequestid`` and ``request_ids``;
    ``payload.request_ids`` lists the build request it runs.
``build.<dir>.<number>.finished``
    The build finished: the same, with ``results`` (0..6) and both times.
``buildrequest.<dir>.<brid>.complete``
    The build request is complete (after its build, or cancelled).
    ``payload.buildrequest`` holds ``buildrequestid``, ``buildsetid``,
    ``builderName``, ``results``, ``submitted_at``, ``complete_at``,
    ``claimed`` (whether a build of this request was running or finished
    other than RETRY when it completed; false means it was cancelled before
    it started or restarted) and the buildset's ``properties``.
``buildrequest.<dir>.<brid>.requeued``
    The request went back to the queue (its build ended RETRY, typically
    because the worker was lost); the same request will start again.

``<dir>`` is the builder's name with ``.`` and spaces replaced by ``_``.

Publishing never blocks the master: messages go through a bounded in-memory
queue to a thread that owns the AMQP connection, publishes with publisher
confirms and reconnects with backoff, keeping the unconfirmed message. Only
when the broker stays away long enough for the buffer (``buffer_size``
messages) to fill are new messages dropped, with a log line each.

JsonPropertiesParameter
-----------------------

A ForceScheduler parameter that sets any number of build properties, typed,
from one JSON object (given as an object or as its JSON text), so a client
of the ``force`` JSON-RPC call is not limited to the properties the
scheduler declares one by one::

    schedulers.ForceScheduler(..., properties=[
        bbb_reporter.JsonPropertiesParameter(name='bbb_properties')])
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import threading
import time

from twisted.internet import defer, threads
from twisted.python import log

from buildbot.schedulers.forcesched import TextParameter, ValidationError
from buildbot.util import service

RETRY = 5

REQUEST_EVENTS = {
    "complete": "complete",
    "unclaimed": "requeued",
}


def _epoch(value):
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


def _jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def routing_word(name):
    """The routing-key word for a builder: '.' and spaces become '_'."""
    return str(name).replace(".", "_").replace(" ", "_")


def property_triples(properties):
    """{'name': (value, source)} -> [[name, value, source], ...], sorted."""
    return [[name, pair[0], pair[1]] for name, pair in sorted((properties or {}).items())]


class JsonPropertiesParameter(TextParameter):
    """Sets every build property found in a JSON object."""

    def __init__(self, name="bbb_properties", label="Properties (JSON object):", **kw):
        kw.setdefault("default", "")
        super().__init__(name, label, **kw)

    def updateFromKwargs(self, master, properties, kwargs, collector, **unused):
        values = kwargs.get(self.fullName, [])
        if not values or values == [""] or values == [None]:
            return
        if len(values) != 1:
            raise ValidationError(f"{self.fullName}: expected one JSON object")
        value = values[0]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise ValidationError(f"{self.fullName}: invalid JSON: {e}") from e
        if not isinstance(value, dict):
            raise ValidationError(f"{self.fullName}: expected a JSON object")
        name_ok = master.config.validation["property_name"]
        for name, prop in value.items():
            if not isinstance(name, str) or not name_ok.match(name):
                raise ValidationError(f"{self.fullName}: bad property name {name!r}")
            properties[name] = prop


class _Publisher(threading.Thread):
    """Owns the AMQP connection; fed through a bounded, thread-safe buffer."""

    def __init__(self, url, exchange, queue, buffer_size):
        super().__init__(name="bbb-reporter-amqp", daemon=True)
        self.url = url
        self.exchange = exchange
        self.queue = queue
        self.buffer_size = buffer_size
        self.pending = collections.deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.published = 0
        self.dropped = 0

    # Called from the reactor thread: never blocks on the network.
    def submit(self, routing_key, body):
        with self.cond:
            if len(self.pending) >= self.buffer_size:
                self.dropped += 1
                log.msg(f"bbb_reporter: buffer full, dropping {routing_key}")
                return
            self.pending.append((routing_key, body))
            self.cond.notify()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _connect(self):
        import pika

        params = pika.URLParameters(self.url)
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        if self.queue:
            channel.queue_declare(self.queue, durable=True)
            for pattern in ("build.#", "buildrequest.#"):
                channel.queue_bind(self.queue, self.exchange, routing_key=pattern)
        return connection, channel

    def run(self):
        import pika

        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=2)
        connection = channel = None
        backoff = 0.5
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait(timeout=1.0)
                    if not self.pending and connection is not None:
                        break
                if self.stopping and not self.pending:
                    break
                item = self.pending[0] if self.pending else None
            try:
                if connection is None or connection.is_closed:
                    connection, channel = self._connect()
                    backoff = 0.5
                if item is None:
                    connection.process_data_events(0)  # heartbeats
                    continue
                routing_key, body = item
                channel.basic_publish(self.exchange, routing_key, body, properties)
                self.published += 1
                with self.cond:
                    self.pending.popleft()
            except Exception as e:  # noqa: BLE001 -- any failure: reconnect and retry
                log.msg(f"bbb_reporter: AMQP publish failed ({e!r}); retrying in {backoff}s")
                try:
                    if connection is not None and connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001
                    pass
                connection = channel = None
                with self.cond:
                    if self.stopping:
                        log.msg(f"bbb_reporter: stopping with {len(self.pending)} unpublished messages")
                        break
                    self.cond.wait(timeout=backoff)
                backoff = min(backoff * 2, 30.0)
        try:
            if connection is not None and connection.is_open:
                connection.close()
        except Exception:  # noqa: BLE001
            pass


class BbbReporter(service.BuildbotService):
    """Publishes build and build-request events for bbb (see the module docs)."""

    name = "BbbReporter"

    def checkConfig(self, amqp_url, exchange="exchange/build", queue=None,
                    master_name=None, buffer_size=100000):
        if not amqp_url:
            from buildbot import config

            config.error("BbbReporter: amqp_url is required")
        try:
            import pika  # noqa: F401
        except ImportError:
            from buildbot import config

            config.error("BbbReporter needs pika: pip install pika")

    @defer.inlineCallbacks
    def reconfigService(self, amqp_url, exchange="exchange/build", queue=None,
                        master_name=None, buffer_size=100000):
        settings = (amqp_url, exchange, queue, buffer_size)
        changed = settings != getattr(self, "_settings", None)
        self._settings = settings
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.queue = queue
        self.master_name = master_name
        self.buffer_size = buffer_size
        if changed and getattr(self, "_publisher", None) is not None:
            self._stop_publisher()
            self._start_publisher()
        yield super().reconfigService()

    def _start_publisher(self):
        self._publisher = _Publisher(self.amqp_url, self.exchange, self.queue, self.buffer_size)
        self._publisher.start()

    def _stop_publisher(self):
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop()
        return publisher

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()
        self.incarnation = f"{os.getpid()}-{int(time.time())}"
        self._names = {}
        self._start_publisher()
        self._consumers = []
        for key in (("builds", None, "new"), ("builds", None, "finished"),
                    ("buildrequests", None, "complete"), ("buildrequests", None, "unclaimed")):
            consumer = yield self.master.mq.startConsuming(self._on_event, key)
            self._consumers.append(consumer)

    @defer.inlineCallbacks
    def stopService(self):
        for consumer in self._consumers:
            yield consumer.stopConsuming()
        self._consumers = []
        publisher = self._stop_publisher()
        if publisher is not None:
            # Let it flush what is buffered, without blocking the reactor.
            yield threads.deferToThread(publisher.join, 10)
        yield super().stopService()

    @defer.inlineCallbacks
    def _name_of(self, kind, ident):
        if ident is None:
            return None
        key = (kind, ident)
        if key not in self._names:
            row = yield self.master.data.get((kind, ident))
            self._names[key] = row["name"] if row else str(ident)
        return self._names[key]

    def _master_name(self):
        return self.master_name or self.master.name

    def _publish(self, routing_key, payload):
        body = {
            "payload": payload,
            "_meta": {
                "exchange": self.exchange,
                "routing_key": routing_key,
                "serializer": "json",
                "sent": time.time(),
                "master_name": self._master_name(),
                "master_incarnation": self.incarnation,
                "message_id": routing_key,
            },
        }
        text = json.dumps(body, default=_jsonable, sort_keys=True)
        if self._publisher is not None:
            self._publisher.submit(routing_key, text.encode("utf-8"))

    @defer.inlineCallbacks
    def _on_event(self, key, msg):
        try:
            if key[0] == "builds":
                yield self._on_build(key[-1], msg)
            elif key[0] == "buildrequests":
                yield self._on_request(key[-1], msg)
        except Exception as e:  # noqa: BLE001 -- never break the master's MQ
            log.err(e, f"bbb_reporter: could not report {key}")

    @defer.inlineCallbacks
    def _on_build(self, event, build):
        builder = yield self._name_of("builders", build.get("builderid"))
        worker = yield self._name_of("workers", build.get("workerid"))
        properties = yield self.master.data.get(("builds", build["buildid"], "properties"))
        brid = build.get("buildrequestid")
        request_ids = [brid] if brid is not None else []
        verb = "started" if event == "new" else "finished"
        finished = verb == "finished"
        reason = (properties or {}).get("reason", (None,))[0]
        as_dict = {
            "builderName": builder,
            "number": build["number"],
            "buildid": build["buildid"],
            "buildrequestid": brid,
            "request_ids": request_ids,
            "properties": property_triples(properties),
            "times": [_epoch(build.get("started_at")),
                      _epoch(build.get("complete_at")) if finished else None],
            "results": build.get("results") if finished else None,
            "text": [build.get("state_string")] if build.get("state_string") else [],
            "slave": worker,
            "reason": reason,
        }
        routing_key = f"build.{routing_word(builder)}.{build['number']}.{verb}"
        self._publish(routing_key, {"build": as_dict, "request_ids": request_ids})

    @defer.inlineCallbacks
    def _on_request(self, event, request):
        verb = REQUEST_EVENTS.get(event)
        if verb is None:
            return
        if not isinstance(request, dict):
            request = dict(request)
        brid = request["buildrequestid"]
        builder = yield self._name_of("builders", request.get("builderid"))
        properties = yield self.master.data.get(("buildsets", request["buildsetid"], "properties"))
        builds = yield self.master.data.get(("buildrequests", brid, "builds"))
        # Claimed: a build of this request was running, or finished other
        # than RETRY, when the request completed. No such build means the
        # request was cancelled before it (re)started.
        claimed = any(b.get("results") != RETRY for b in (builds or []))
        payload = {
            "buildrequestid": brid,
            "buildsetid": request.get("buildsetid"),
            "builderName": builder,
            "results": request.get("results") if verb == "complete" else None,
            "submitted_at": _epoch(request.get("submitted_at")),
            "complete_at": _epoch(request.get("complete_at")),
            "claimed": claimed,
            "builds": [b["buildid"] for b in (builds or [])],
            "properties": property_triples(properties),
        }
        routing_key = f"buildrequest.{routing_word(builder)}.{brid}.{verb}"
        self._publish(routing_key, {"buildrequest": payload})
