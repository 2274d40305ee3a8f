"""``bbb up``'s demo repository, as a newcomer meets it: with no other setup,
the CI service follows a git repository ``bbb up`` made in its data
directory; ``bbb up``'s own demo push and a push of the user's get a decision
task and a graph (a native build and test, and a build on the sandbox master
through the bridge) that runs to completion; and a push made while ``bbb up``
is stopped is handled once it is back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bbbtest import CI, UpProcess, decided_push, wait_for

GRAPH = {"Decision Task", "build-linux64", "test-linux64", "legacy-build-linux64"}


def ci_of(up: UpProcess):
    return CI({"rootUrl": up.root_url, "credentials": up.root_credentials()})


def git(work: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Newcomer", "-c", "user.email=new@example.com", "-C", str(work), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def push_change(work: Path, message: str) -> str:
    git(work, "commit", "--quiet", "--allow-empty", "-m", message)
    git(work, "push", "--quiet")
    return git(work, "rev-parse", "HEAD")


def decided(up: UpProcess, revision: str) -> dict:
    """Waits until the push of ``revision`` to the demo's ``main`` is decided."""
    push = decided_push(ci_of(up), "demo", "main", revision)
    assert push["state"] == "decided", push
    return push


def graph_finished(up: UpProcess, decision_task_id: str) -> dict:
    """Waits until the push's task group holds the whole graph, resolved;
    returns name → status."""
    queue = up.queue()

    def done():
        tasks = queue.listTaskGroup(decision_task_id)["tasks"]
        statuses = {t["task"]["metadata"]["name"]: t["status"] for t in tasks}
        resolved = all(s["state"] in ("completed", "failed", "exception") for s in statuses.values())
        return statuses if set(statuses) == GRAPH and resolved else None

    return wait_for(done, 300, f"the graph of decision task {decision_task_id}", interval=0.5)


def assert_graph_completed(statuses: dict, revision: str, queue) -> None:
    assert {name: s["state"] for name, s in statuses.items()} == dict.fromkeys(GRAPH, "completed")
    bridged = statuses["legacy-build-linux64"]["runs"][0]
    assert (bridged["workerGroup"], bridged["workerId"]) == ("buildbot-bridge", "buildbot-bridge")
    native = statuses["build-linux64"]["runs"][0]
    assert native["workerGroup"] != "buildbot-bridge"
    build = queue.task(statuses["build-linux64"]["taskId"])
    assert build["tags"]["revision"] == revision
    assert build["dependencies"] == [statuses["Decision Task"]["taskId"]]


def test_the_demo_push_and_a_push_of_ones_own_run_their_graphs(tmp_path):
    with UpProcess(tmp_path) as up:
        # bbb up's own demo push, followed in its output.
        wait_for(lambda: "demo push: graph finished" in up.log_path.read_text(), 300, "the demo push's graph")
        repository = ci_of(up).repository("demo")
        assert repository["url"] == "https://bbb.localhost/demo"
        assert [(b["name"], b["mode"]) for b in repository["branches"]] == [("main", "taskgraph")]
        work = tmp_path / "data" / "demo"
        demo_revision = git(work, "rev-parse", "HEAD")
        first = decided(up, demo_revision)
        assert_graph_completed(graph_finished(up, first["decisionTaskId"]), demo_revision, up.queue())

        # A push of the newcomer's own.
        revision = push_change(work, "my first change")
        push = decided(up, revision)
        assert push["owner"] == "new@example.com"
        assert push["decisionTaskId"] != first["decisionTaskId"]
        assert_graph_completed(graph_finished(up, push["decisionTaskId"]), revision, up.queue())
        pushes = ci_of(up).listPushes("demo", query={"branch": "main"})["pushes"]
        assert [p["revision"] for p in pushes] == [revision, demo_revision]


def test_a_push_made_while_bbb_up_is_stopped_is_handled_when_it_is_back(tmp_path):
    with UpProcess(tmp_path) as up:
        wait_for(lambda: "demo push: graph finished" in up.log_path.read_text(), 300, "the demo push's graph")
    work = tmp_path / "data" / "demo"
    revision = push_change(work, "pushed while bbb was down")
    with UpProcess(tmp_path, token=up.token) as up:
        push = decided(up, revision)
        assert_graph_completed(graph_finished(up, push["decisionTaskId"]), revision, up.queue())
        # The restart's own demo push came after it; nothing was decided twice.
        wait_for(lambda: up.log_path.read_text().count("demo push: graph finished") == 1, 300, "the second demo push")
        pushes = ci_of(up).listPushes("demo", query={"branch": "main"})["pushes"]
        revisions = [p["revision"] for p in pushes]
        assert len(revisions) == len(set(revisions)) == 3, pushes
        assert revisions[1] == revision
        assert all(p["state"] == "decided" for p in pushes), pushes
