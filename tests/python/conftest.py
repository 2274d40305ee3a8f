"""Fixtures for the TaskCluster queue compatibility suite.

Every test module gets its own running ``bbb queue`` process per storage
backend (SQLite always, PostgreSQL with a fresh database), and talks to it
only through the official ``taskcluster`` Python client with real Hawk
credentials. Three clients exist on each server:

* ``root``: every scope (``*``), configured through ``BBB_ROOT_ACCESS_TOKEN``;
* ``worker``: only what a worker of the ``bbb-test/*`` task queues needs;
* ``limited``: read-only access to task definitions and statuses.

The anonymous role may read ``public/*`` artifacts.
"""

from __future__ import annotations

import signal

import pytest
import taskcluster

from browser import Browser
from bbbtest import BACKENDS, RESOLVER_INTERVAL_MS, BbbServer, bbb_binary, start_server


def pytest_report_header(config):
    return f"bbb binary: {bbb_binary()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of the server's log to every failing test report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seen = set()
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, BbbServer) and id(value) not in seen:
                seen.add(id(value))
                report.sections.append((f"bbb server log ({value.name}, last lines)", value.log_tail()))


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory) -> BbbServer:
    """A queue with the default claim timeout, an immediate deadline
    resolution (``BBB_DEADLINE_DELAY_S=0``) and fast background resolvers."""
    return start_server(
        request,
        tmp_path_factory,
        BBB_DEADLINE_DELAY_S="0",
        BBB_RESOLVER_INTERVAL_MS=str(RESOLVER_INTERVAL_MS),
    )


@pytest.fixture
def queue(server) -> taskcluster.Queue:
    """Queue client with the root credentials (scope ``*``)."""
    return server.queue("root")


@pytest.fixture
def worker_queue(server) -> taskcluster.Queue:
    """Queue client with the ``worker`` client's credentials."""
    return server.queue("worker")


@pytest.fixture
def limited_queue(server) -> taskcluster.Queue:
    """Queue client with the ``limited`` client's credentials."""
    return server.queue("limited")


#: Hard limit for one test, in seconds: every wait in the suite is bounded
#: well below this, so reaching it means the server stopped answering. A test
#: module whose tests run whole task graphs sets its own ``TEST_TIMEOUT_S``.
TEST_TIMEOUT_S = 150


@pytest.fixture(autouse=True)
def _per_test_timeout(request):
    """Abort a test that hangs (e.g. an HTTP request the server never answers)."""
    limit = getattr(request.module, "TEST_TIMEOUT_S", TEST_TIMEOUT_S)

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {limit}s")

    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except ValueError:  # not in the main thread: no alarm available
        yield
        return
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def browser(request):
    """A headless Chromium window for this test; its screenshots are named after it."""
    b = Browser(request.node.name)
    yield b
    b.quit()
