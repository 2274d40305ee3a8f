"""A team's CI on bbb, end to end, with unmodified upstream tools.

The in-tree ``taskgraph`` project of ``tests/taskgraph/project`` is pushed to
a git repository served over HTTP and configured in bbb's CI service, which
makes the in-tree action hooks of its ``.taskcluster.yml`` and their roles.
A hook fires its decision task on ``bbb up``'s native worker; the decision task runs ``taskgraph decision``
through ``features.taskclusterProxy`` and creates the graph: native kinds, a
kind that goes to Buildbot through the bridge and the sandbox master, and a
cached toolchain found through the index the second time. Then, with the
official Python client, the test does what Treeherder's UI does for a sheriff:
read the decision task's ``public/actions.json``, render an action's hook
payload with JSON-e, check the permission with ``auth.expandScopes`` and fire
the action's hook with the sheriff's own credentials; the action task runs
``taskgraph action-callback`` on the native worker.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jsone
import pytest
import requests
import taskcluster
import yaml

from bbbtest import CI, REPO, UpProcess, decided_push, free_port, task_definition, wait_for, wait_for_state

PROJECT = REPO / "tests" / "taskgraph" / "project"
#: The repository's public URL (what taskgraph and the scopes name).
REPO_URL = "https://github.com/bbb-project/bbb-ci-example"
REPO_PATH = REPO_URL.removeprefix("https://")
TRUST_DOMAIN = "bbbtest"
LEVEL = "1"
HOOK_GROUP = f"project-{TRUST_DOMAIN}"
PUSH_HOOK = "bbb-ci-example-push"
SCHEDULER_ID = f"{TRUST_DOMAIN}-level-{LEVEL}"

#: Each test runs task graphs to completion on the one native worker.
TEST_TIMEOUT_S = 900

#: What every task the graph's decision and actions create needs.
CREATE_TASKS = [
    "queue:create-task:low:bbb/native",
    "queue:create-task:low:buildbot-bridge/buildbot-bridge",
    f"queue:scheduler-id:{SCHEDULER_ID}",
    f"queue:route:index.{TRUST_DOMAIN}.*",
    "queue:route:tc-treeherder.v2.bbb-ci-example.*",
    "queue:route:checks",
    "queue:create-task:project:none",
]


# --- the repository ------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def project_repo():
    """The project committed to a git repository, served read-only over
    HTTP (git's dumb protocol), so tasks running as other users can clone it.
    Yields ``(clone_url, revision, work tree, served bare repository)``."""
    root = Path(tempfile.mkdtemp(prefix="bbb-taskgraph-"))
    work = root / "work"
    shutil.copytree(PROJECT, work)
    git = ["git", "-c", "user.name=Release Engineer", "-c", "user.email=releng@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "the example project"], check=True)
    revision = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    bare = root / "serve" / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    port = free_port()
    handler = functools.partial(_Quiet, directory=str(root / "serve"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/repo.git", revision, work, bare
    server.shutdown()
    shutil.rmtree(root, ignore_errors=True)


#: The interpreter of the taskgraph venv: the system's, which the tasks' own
#: unprivileged users can run (a root-only one, e.g. under /root, they cannot).
TASK_PYTHON = os.environ.get("BBB_TASK_PYTHON", "/usr/bin/python3")


@pytest.fixture(scope="module")
def taskgraph_bin() -> Path:
    """The ``bin`` of the venv with ``taskgraph``, for the worker's PATH
    (made by ``scripts/pyenv.sh``; ``scripts/test.sh`` prepares it)."""
    out = subprocess.run(
        [str(REPO / "scripts" / "pyenv.sh"), "taskgraph-venv", "tests/taskgraph/requirements.txt"],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=TASK_PYTHON),
    ).stdout
    return Path(out.strip().splitlines()[-1]) / "bin"


# --- bbb up ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory, taskgraph_bin):
    """``bbb up`` whose worker finds ``taskgraph`` and ``git`` on its PATH."""
    workdir = tmp_path_factory.mktemp("taskgraph-up")
    with UpProcess(workdir, PATH=f"{taskgraph_bin}:{os.environ['PATH']}", BBB_CI_POLL_INTERVAL_MS="500") as up:
        yield up


def client(kind, root_url, credentials=None):
    """An official client of ``root_url``, anonymous without ``credentials``."""
    options = {"rootUrl": root_url}
    if credentials:
        options["credentials"] = credentials
    return getattr(taskcluster, kind)(options)


def tcyml() -> dict:
    return yaml.safe_load((PROJECT / ".taskcluster.yml").read_text())


def tcyml_hash() -> str:
    """taskgraph's hash of ``.taskcluster.yml`` (the action hooks' ids end in it)."""
    return hashlib.sha256((PROJECT / ".taskcluster.yml").read_bytes()).hexdigest()[:10]


def action_hook_id(permission: str) -> str:
    return f"in-tree-action-{LEVEL}-{permission}/{tcyml_hash()}"


@pytest.fixture(scope="module")
def project(up, project_repo):
    """The project set up as a team sets it up: the repository's roles (what
    ci-admin's grants give), the hook its pushes fire, and the repository in
    bbb's CI service, which makes the in-tree action hooks of its
    ``.taskcluster.yml`` and their roles. Yields a dict of clients and names
    the tests use."""
    root_url, root = up.root_url, up.root_credentials()
    clone_url, revision, _, _ = project_repo
    auth = client("Auth", root_url, root)
    hooks = client("Hooks", root_url, root)

    def role(role_id, scopes):
        auth.createRole(role_id, {"description": f"{role_id} (test)", "scopes": scopes})

    # What the decision task of a push may do, and the actions' tasks.
    role(f"repo:{REPO_PATH}:branch:*", [*CREATE_TASKS, f"in-tree:hook-action:{HOOK_GROUP}/in-tree-action-{LEVEL}-*"])
    role(
        f"repo:{REPO_PATH}:action:*",
        [
            *CREATE_TASKS,
            f"queue:rerun-task:{SCHEDULER_ID}/*",
            f"queue:cancel-task:{SCHEDULER_ID}/*",
            "queue:get-artifact:*",
        ],
    )
    # The push hook's role: what the tasks it creates may hold.
    role(f"hook-id:{HOOK_GROUP}/{PUSH_HOOK}", [f"assume:repo:{REPO_PATH}:branch:*", *CREATE_TASKS])

    decision = tcyml()["tasks"][0]
    hooks.createHook(
        HOOK_GROUP,
        PUSH_HOOK,
        {
            "metadata": {
                "name": "bbb-ci-example push",
                "description": "the decision task of a push",
                "owner": "releng@example.com",
            },
            "task": {
                "$let": {
                    "tasks_for": "github-push",
                    "push": {"$eval": "payload.push"},
                    "repository": {"$eval": "payload.repository"},
                    "ownTaskId": {"$eval": "taskId"},
                },
                "in": decision,
            },
            "triggerSchema": {
                "type": "object",
                "properties": {"push": {"type": "object"}, "repository": {"type": "object"}},
                "required": ["push", "repository"],
                "additionalProperties": False,
            },
        },
    )
    # The repository, followed (not polled: the test fires the push hook
    # itself); bbb reads .taskcluster.yml at the branch's head and makes the
    # action hooks actions.json names.
    ci = CI({"rootUrl": root_url, "credentials": root})
    ci.createOrUpdateRepository(
        "bbb-ci-example",
        {
            "url": REPO_URL,
            "cloneUrl": clone_url,
            "kind": "git",
            "trustDomain": TRUST_DOMAIN,
            "level": int(LEVEL),
            "poll": False,
            "branches": [{"name": "main", "mode": "taskgraph"}],
        },
    )
    wait_for(
        lambda: any(h["hookId"] == action_hook_id("generic") for h in _group_hooks(hooks)),
        60,
        "bbb to make the in-tree action hook",
    )
    wait_for(
        lambda: _role_or_none(auth, f"hook-id:{HOOK_GROUP}/in-tree-action-{LEVEL}-generic/*"),
        60,
        "bbb to make the action hooks' role",
    )
    sheriff_id = "sheriff/" + taskcluster.slugId()
    sheriff = auth.createClient(
        sheriff_id,
        {
            "description": "a sheriff",
            "expires": taskcluster.stringDate(taskcluster.fromNow("1 day")),
            "scopes": ["auth:expand-scopes", f"hooks:trigger-hook:{HOOK_GROUP}/in-tree-action-{LEVEL}-*"],
        },
    )
    visitor = auth.createClient(
        "visitor/" + taskcluster.slugId(),
        {
            "description": "no hook scope",
            "expires": taskcluster.stringDate(taskcluster.fromNow("1 day")),
            "scopes": ["auth:expand-scopes"],
        },
    )
    yield {
        "root_url": root_url,
        "root": root,
        "revision": revision,
        "clone_url": clone_url,
        "sheriff": {"clientId": sheriff["clientId"], "accessToken": sheriff["accessToken"]},
        "visitor": {"clientId": visitor["clientId"], "accessToken": visitor["accessToken"]},
    }


def _group_hooks(hooks) -> list:
    try:
        return hooks.listHooks(HOOK_GROUP)["hooks"]
    except taskcluster.TaskclusterRestFailure as e:
        if e.status_code == 404:
            return []
        raise


def _role_or_none(auth, role_id):
    try:
        return auth.role(role_id)
    except taskcluster.TaskclusterRestFailure as e:
        if e.status_code == 404:
            return None
        raise


def test_bbb_keeps_the_action_hook_and_its_role(project):
    hooks = client("Hooks", project["root_url"], project["root"])
    auth = client("Auth", project["root_url"], project["root"])
    hook = hooks.hook(HOOK_GROUP, action_hook_id("generic"))
    assert hook["schedule"] == []
    assert hook["task"]["in"]["$let"]["tasks_for"] == "action"
    role = auth.role(f"hook-id:{HOOK_GROUP}/in-tree-action-{LEVEL}-generic/*")
    assert role["scopes"] == [f"assume:repo:{REPO_PATH}:action:generic"]


def push_payload(project) -> dict:
    return {
        "push": {
            "owner": "releng@example.com",
            "revision": project["revision"],
            "branch": "main",
            "pushlog_id": "1",
            "pushdate": 0,
        },
        "repository": {
            "url": REPO_URL,
            "clone_url": project["clone_url"],
            "project": "bbb-ci-example",
            "level": LEVEL,
        },
    }


def group_tasks(queue, group_id) -> dict:
    """label (or name) → status of every task of the group."""
    tasks, token = {}, None
    while True:
        page = queue.listTaskGroup(group_id, query={"continuationToken": token} if token else {})
        for t in page["tasks"]:
            tasks.setdefault(t["task"]["metadata"]["name"], []).append(t)
        token = page.get("continuationToken")
        if not token:
            return tasks


def settled(queue, group_id, expect):
    """Wait until the group holds at least ``expect`` tasks, none of them
    pending, running or unscheduled; returns ``group_tasks``."""
    seen = {}

    def done():
        tasks = group_tasks(queue, group_id)
        seen["states"] = sorted((name, t["status"]["state"]) for name, ts in tasks.items() for t in ts)
        states = [state for _, state in seen["states"]]
        return len(states) >= expect and all(s in ("completed", "failed", "exception") for s in states) and tasks

    try:
        return wait_for(done, 300, f"task group {group_id} to settle with {expect} tasks", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}; the group: {seen.get('states')}") from None


def fire_push(project) -> str:
    hooks = client("Hooks", project["root_url"], project["root"])
    fired = hooks.triggerHook(HOOK_GROUP, PUSH_HOOK, push_payload(project))
    return fired["status"]["taskId"]


def finished(queue, task_id, state="completed", timeout=300) -> dict:
    """Wait until the task is resolved and check it ended in ``state``; on
    another end, fail with its status and its log."""

    def resolved():
        status = queue.status(task_id)["status"]
        return status["state"] in ("completed", "failed", "exception") and status

    status = wait_for(resolved, timeout, f"task {task_id} to be resolved", interval=0.5)
    if status["state"] != state:
        log = requests.get(
            queue.buildUrl("getLatestArtifact", task_id, "public/logs/live_backing.log"), timeout=10
        ).text
        raise AssertionError(f"task {task_id} is {status['state']}, not {state}: {status}\n{log[-6000:]}")
    return status


def artifact_json(queue, task_id, name):
    return requests.get(queue.buildUrl("getLatestArtifact", task_id, name), timeout=10, allow_redirects=True).json()


@pytest.fixture(scope="module")
def decision(project):
    """The first push's decision task, run to completion, and its graph settled."""
    queue = client("Queue", project["root_url"], project["root"])
    decision_id = fire_push(project)
    status = finished(queue, decision_id)
    assert status["runs"][-1]["state"] == "completed"
    # 5 tasks (toolchain, build, 2 tests, the bridged job) + the decision.
    tasks = settled(queue, decision_id, 6)
    return decision_id, tasks


# --- the tests -----------------------------------------------------------------------------


def test_a_hook_fired_decision_runs_the_graph_natively_and_through_the_bridge(project, decision):
    queue = client("Queue", project["root_url"], project["root"])
    decision_id, tasks = decision
    labels = artifact_json(queue, decision_id, "public/label-to-taskid.json")
    assert set(labels) == {"toolchain-compiler", "build-linux64", "test-unit", "test-flaky", "legacy-talos"}
    states = {label: queue.status(task_id)["status"] for label, task_id in labels.items()}
    assert states["toolchain-compiler"]["state"] == "completed"
    assert states["build-linux64"]["state"] == "completed"
    assert states["test-unit"]["state"] == "completed"
    assert states["test-flaky"]["state"] == "failed"
    bridged = states["legacy-talos"]
    assert bridged["state"] == "completed"
    assert (bridged["runs"][0]["workerGroup"], bridged["runs"][0]["workerId"]) == ("buildbot-bridge", "buildbot-bridge")
    native = states["build-linux64"]["runs"][0]
    assert native["workerGroup"] != "buildbot-bridge"


def test_the_decision_is_indexed_and_a_second_decision_reuses_the_cached_toolchain(project, decision):
    queue = client("Queue", project["root_url"], project["root"])
    index = client("Index", project["root_url"])
    decision_id, _ = decision
    found = index.findTask(f"{TRUST_DOMAIN}.v2.bbb-ci-example.revision.{project['revision']}.taskgraph.decision")
    assert found["taskId"] == decision_id
    latest = index.findTask(f"{TRUST_DOMAIN}.v2.bbb-ci-example.latest.taskgraph.decision")
    assert latest["taskId"] == decision_id
    first = artifact_json(queue, decision_id, "public/label-to-taskid.json")

    second_id = fire_push(project)
    finished(queue, second_id)
    second = artifact_json(queue, second_id, "public/label-to-taskid.json")
    assert second["toolchain-compiler"] == first["toolchain-compiler"]
    assert second["build-linux64"] != first["build-linux64"]
    own = group_tasks(queue, second_id)
    assert not any(t["status"]["taskId"] == first["toolchain-compiler"] for ts in own.values() for t in ts)


def actions_of(queue, decision_id) -> dict:
    return {a["name"]: a for a in artifact_json(queue, decision_id, "public/actions.json")["actions"]}


def fire_action(project, credentials, decision_id, name, task_id, input_, tags=None):
    """What Treeherder does: pick the action whose context matches the task's
    tags, render its hook payload, check the decision task may use the hook,
    and trigger the hook with the user's credentials. Returns the new task's id."""
    root_url = project["root_url"]
    queue = client("Queue", root_url, project["root"])
    candidates = [
        a
        for a in artifact_json(queue, decision_id, "public/actions.json")["actions"]
        if a["name"] == name
        and (
            (task_id is None and a["context"] == [])
            or (task_id is not None and any(all(tags.get(k) == v for k, v in ctx.items()) for ctx in a["context"]))
        )
    ]
    assert candidates, f"no action {name} for this task"
    action = candidates[0]
    assert action["kind"] == "hook"
    payload = jsone.render(
        action["hookPayload"], {"taskGroupId": decision_id, "taskId": task_id, "input": input_}
    )
    decision_scopes = queue.task(decision_id)["scopes"]
    auth = client("Auth", root_url, credentials)
    expanded = auth.expandScopes({"scopes": decision_scopes})["scopes"]
    wanted = f"in-tree:hook-action:{action['hookGroupId']}/{action['hookId']}"
    assert any(s == wanted or (s.endswith("*") and wanted.startswith(s[:-1])) for s in expanded), expanded
    hooks = client("Hooks", root_url, credentials)
    fired = hooks.triggerHook(action["hookGroupId"], action["hookId"], payload)
    return fired["status"]["taskId"]


def test_actions_as_a_sheriff_fires_them(project, decision):
    queue = client("Queue", project["root_url"], project["root"])
    # taskgraph's actions act on the latest decision of the push's revision,
    # the one the index names (the second decision, if the test above ran).
    index = client("Index", project["root_url"])
    decision_id = index.findTask(
        f"{TRUST_DOMAIN}.v2.bbb-ci-example.revision.{project['revision']}.taskgraph.decision"
    )["taskId"]
    labels = artifact_json(queue, decision_id, "public/label-to-taskid.json")
    own = [t for t in labels.values() if queue.task(t)["taskGroupId"] == decision_id]
    before = settled(queue, decision_id, 1 + len(own))
    count = sum(len(ts) for ts in before.values())

    # A user without the hook's scope gets upstream's 403.
    with pytest.raises(taskcluster.TaskclusterRestFailure) as denied:
        fire_action(project, project["visitor"], decision_id, "retrigger-multiple", None,
                    {"requests": [{"tasks": ["test-unit"], "times": 1}]})
    assert denied.value.status_code == 403
    assert denied.value.body["code"] == "InsufficientScopes"
    assert "hooks:trigger-hook:" in denied.value.body["message"]

    # retrigger-multiple: one more test-unit in the group.
    action_id = fire_action(project, project["sheriff"], decision_id, "retrigger-multiple", None,
                            {"requests": [{"tasks": ["test-unit"], "times": 1}]})
    finished(queue, action_id)
    after = settled(queue, decision_id, count + 2)
    assert len(after["test-unit"]) == 2

    # rerun of the failed flaky test: a second run, which passes.
    flaky = labels["test-flaky"]
    action_id = fire_action(project, project["sheriff"], decision_id, "rerun", flaky, {},
                            tags=queue.task(flaky)["tags"])
    finished(queue, action_id)
    status = wait_for_state(queue, flaky, "completed", timeout=300)
    assert [r["state"] for r in status["runs"]] == ["failed", "completed"]

    # retrigger of the build with downstream: the build and its dependents again.
    build = labels["build-linux64"]
    count = sum(len(ts) for ts in group_tasks(queue, decision_id).values())
    action_id = fire_action(project, project["sheriff"], decision_id, "retrigger", build,
                            {"downstream": True, "times": 1}, tags=queue.task(build)["tags"])
    finished(queue, action_id)
    after = settled(queue, decision_id, count + 1 + 4)
    assert len(after["build-linux64"]) == 2
    assert len(after["legacy-talos"]) == 2

    # cancel and cancel-all reach the queue: tasks of the group that no
    # worker serves stay pending until the actions cancel them.
    def stuck(name):
        task_id = taskcluster.slugId()
        queue.createTask(
            task_id,
            task_definition(
                "bbb/nobody-serves-this",
                taskGroupId=decision_id,
                schedulerId=SCHEDULER_ID,
                tags={"kind": "test", "label": name},
                metadata={**task_definition("x")["metadata"], "name": name},
            ),
        )
        return task_id

    one = stuck("stuck-one")
    action_id = fire_action(project, project["sheriff"], decision_id, "cancel", one, {}, tags=queue.task(one)["tags"])
    finished(queue, action_id)
    status = wait_for_state(queue, one, "exception", timeout=60)
    assert status["runs"][-1]["reasonResolved"] == "canceled"

    others = [stuck("stuck-two"), stuck("stuck-three")]
    action_id = fire_action(project, project["sheriff"], decision_id, "cancel-all", None, {})
    finished(queue, action_id)
    for task_id in others:
        status = wait_for_state(queue, task_id, "exception", timeout=60)
        assert status["runs"][-1]["reasonResolved"] == "canceled"
    # Nothing else of the group was touched.
    assert queue.status(labels["test-unit"])["status"]["state"] == "completed"


# --- pushes bbb's CI service sees ------------------------------------------------------------


def git_push(project_repo, branch: str, message: str | None) -> str:
    """Commits to ``branch`` in the work tree (nothing when ``message`` is
    None) and pushes it to the served repository; returns its head."""
    _, _, work, bare = project_repo
    git = ["git", "-c", "user.name=Release Engineer", "-c", "user.email=releng@example.com", "-C", str(work)]
    subprocess.run([*git, "checkout", "-q", "-B", branch], check=True)
    if message is not None:
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)
    subprocess.run([*git, "push", "-q", str(bare), f"HEAD:refs/heads/{branch}"], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_a_polled_push_gets_its_graph_and_a_buildbot_branch_push_is_only_recorded(project, project_repo, decision):
    """No hook fired by hand: bbb's CI service polls the repository, decides
    the push to the ``taskgraph`` branch (``.taskcluster.yml`` at the pushed
    revision, rendered with ``tasks_for: github-push``, created as the
    branch's role), and that decision task runs the project's ``taskgraph``
    to completion on the native worker and through the bridge. A push to the
    ``buildbot`` branch is recorded and schedules nothing."""
    root_url, root = project["root_url"], project["root"]
    ci = CI({"rootUrl": root_url, "credentials": root})
    queue = client("Queue", root_url, root)
    # The Buildbot branch exists before bbb follows it (a branch's first head
    # is its starting point, not a push).
    start = git_push(project_repo, "legacy", None)
    ci.createOrUpdateRepository(
        "bbb-ci-example",
        {
            "url": REPO_URL,
            "cloneUrl": project["clone_url"],
            "kind": "git",
            "trustDomain": TRUST_DOMAIN,
            "level": int(LEVEL),
            "poll": True,
            "branches": [{"name": "main", "mode": "taskgraph"}, {"name": "legacy", "mode": "buildbot"}],
        },
    )

    def polled():
        heads = {b["name"]: b["polledHead"] for b in ci.repository("bbb-ci-example")["branches"]}
        return heads == {"main": start, "legacy": start}

    wait_for(polled, 60, "bbb to poll both branches")

    revision = git_push(project_repo, "main", "a change bbb schedules")
    push = decided_push(ci, "bbb-ci-example", "main", revision)
    assert (push["state"], push["source"], push["baseRevision"]) == ("decided", "poll", start), push
    decision_id = push["decisionTaskId"]
    task = queue.task(decision_id)
    assert task["scopes"] == [f"assume:repo:{REPO_PATH}:branch:main"]
    env = task["payload"]["env"]
    assert (env["BBB_REVISION"], env["BBB_TASKS_FOR"], env["BBB_BRANCH"]) == (revision, "github-push", "main")
    finished(queue, decision_id)
    # Toolchain reused from the index (the first decision built it), so the
    # group holds the build, two tests, the bridged job and the decision.
    settled(queue, decision_id, 5)
    labels = artifact_json(queue, decision_id, "public/label-to-taskid.json")
    assert set(labels) == {"toolchain-compiler", "build-linux64", "test-unit", "test-flaky", "legacy-talos"}
    states = {label: queue.status(task_id)["status"] for label, task_id in labels.items()}
    assert {label: s["state"] for label, s in states.items()} == {
        "toolchain-compiler": "completed",
        "build-linux64": "completed",
        "test-unit": "completed",
        "test-flaky": "failed",
        "legacy-talos": "completed",
    }
    bridged = states["legacy-talos"]["runs"][0]
    assert (bridged["workerGroup"], bridged["workerId"]) == ("buildbot-bridge", "buildbot-bridge")
    assert queue.task(labels["build-linux64"])["taskGroupId"] == decision_id

    legacy = git_push(project_repo, "legacy", "a change Buildbot schedules")
    push = decided_push(ci, "bbb-ci-example", "legacy", legacy)
    assert push["state"] == "observed" and push.get("decisionTaskId") is None, push
