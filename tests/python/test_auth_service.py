"""The auth service (``/api/auth/v1``) served beside the queue, as the
official client's ``taskcluster.Auth`` sees it: scopes of the current
request and their expansion through roles, clients and roles created,
changed and deleted, and clients created here calling the queue."""

from __future__ import annotations

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterAuthFailure, TaskclusterRestFailure

from bbbtest import (
    ANONYMOUS_SCOPES,
    LIMITED_SCOPES,
    UpProcess,
    error_code,
    from_now,
    new_task_queue,
    random_word,
    task_definition,
    wait_for_state,
)


def auth_client(server, credentials: dict | None = None, **options) -> taskcluster.Auth:
    """``taskcluster.Auth`` on the server, without retries."""
    config = {"rootUrl": server.root_url, "maxRetries": 0, **options}
    if credentials is not None:
        config["credentials"] = dict(credentials)
    return taskcluster.Auth(config)


@pytest.fixture
def root_auth(server) -> taskcluster.Auth:
    return auth_client(server, server.clients["root"])


def client_payload(scopes, **extra) -> dict:
    return {"expires": from_now(3600), "description": "created by the compatibility suite", "scopes": scopes, **extra}


def credentials_of(answer: dict) -> dict:
    return {"clientId": answer["clientId"], "accessToken": answer["accessToken"]}


def test_current_scopes_of_configured_clients(server, root_auth):
    """root holds ``*``; a configured client holds its scopes plus what the
    anonymous role grants, expanded."""
    assert root_auth.currentScopes()["scopes"] == ["*"]
    limited = auth_client(server, server.clients["limited"])
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        limited.currentScopes()
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"
    assert "auth:current-scopes" in excinfo.value.body["message"]


def test_expand_scopes_through_roles(root_auth):
    """expandScopes follows roles, parameterised roles and star scopes, and
    normalises the result, as upstream."""
    team = "team-" + random_word()
    root_auth.createRole(team, {"description": "a team", "scopes": ["secrets:get:team/*", f"assume:{team}-lead"]})
    root_auth.createRole(f"{team}-lead", {"description": "its lead", "scopes": ["hooks:trigger-hook:team/*"]})
    root_auth.createRole(f"{team}-repo:*", {"description": "repos", "scopes": ["index:insert-task:<..>.latest"]})
    expanded = root_auth.expandScopes(
        {"scopes": [f"assume:{team}", f"assume:{team}-repo:app", "secrets:get:team/one"]}
    )["scopes"]
    assert expanded == [
        f"assume:{team}",
        f"assume:{team}-lead",
        f"assume:{team}-repo:app",
        "hooks:trigger-hook:team/*",
        "index:insert-task:app.latest",
        "secrets:get:team/*",
    ]
    role = root_auth.role(team)
    assert role["expandedScopes"] == [
        f"assume:{team}",
        f"assume:{team}-lead",
        "hooks:trigger-hook:team/*",
        "secrets:get:team/*",
    ]
    assert team in root_auth.listRoleIds()["roleIds"]
    assert any(r["roleId"] == team for r in root_auth.listRoles())

    # A cycle is refused with upstream's 400.
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        root_auth.updateRole(f"{team}-lead", {"description": "loops", "scopes": [f"assume:{team}"]})
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputError"
    assert "dependency cycles" in excinfo.value.body["message"]


def test_client_created_here_calls_the_queue(server, root_auth, queue):
    """createClient → the new credentials call the queue with the scopes
    given (and roles created here); disabled they are refused, enabled they
    work again; a new access token replaces the old; deleted, unknown."""
    client_id = f"compat/{random_word()}"
    role_id = "reader-" + random_word()
    root_auth.createRole(role_id, {"description": "reads tasks", "scopes": LIMITED_SCOPES})
    created = root_auth.createClient(client_id, client_payload([f"assume:{role_id}", "auth:current-scopes"]))
    assert created["clientId"] == client_id
    assert created["disabled"] is False
    assert set(LIMITED_SCOPES) <= set(created["expandedScopes"])
    assert "accessToken" not in root_auth.client(client_id)

    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue()))
    reader = server.queue_with(credentials_of(created))
    assert reader.status(task_id)["status"]["state"] == "pending"
    current = auth_client(server, credentials_of(created)).currentScopes()["scopes"]
    assert set(LIMITED_SCOPES) <= set(current)
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        reader.cancelTask(task_id)
    assert excinfo.value.status_code == 403

    assert root_auth.disableClient(client_id)["disabled"] is True
    with pytest.raises(TaskclusterAuthFailure) as excinfo:
        reader.status(task_id)
    assert "is disabled" in excinfo.value.body["message"]
    assert root_auth.enableClient(client_id)["disabled"] is False
    assert reader.status(task_id)["status"]["taskId"] == task_id

    reset = root_auth.resetAccessToken(client_id)
    assert reset["accessToken"] != created["accessToken"]
    with pytest.raises(TaskclusterAuthFailure):
        reader.status(task_id)
    assert server.queue_with(credentials_of(reset)).status(task_id)["status"]["taskId"] == task_id

    root_auth.deleteClient(client_id)
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        root_auth.client(client_id)
    assert excinfo.value.status_code == 404
    assert error_code(excinfo) == "ResourceNotFound"
    with pytest.raises(TaskclusterAuthFailure):
        server.queue_with(credentials_of(reset)).status(task_id)
    wait_for_state(queue, task_id, "pending")


def test_list_clients_pages_and_prefix(root_auth):
    prefix = f"page-{random_word()}/"
    for i in range(5):
        root_auth.createClient(f"{prefix}{i}", client_payload([]))
    seen, token, pages = [], None, 0
    while True:
        query = {"prefix": prefix, "limit": 2}
        if token:
            query["continuationToken"] = token
        page = root_auth.listClients(query=query)
        pages += 1
        seen += [c["clientId"] for c in page["clients"]]
        token = page.get("continuationToken")
        if not token:
            break
    assert seen == [f"{prefix}{i}" for i in range(5)]
    assert pages >= 3
    everything = [c["clientId"] for c in root_auth.listClients()["clients"]]
    for configured in ["limited", "root", "static/taskcluster/queue", "worker"]:
        assert configured in everything


def test_creating_needs_the_scopes_granted(server, root_auth):
    """The caller must hold auth:create-client:<id> and every scope it grants."""
    creator_id = f"creator/{random_word()}"
    creator = auth_client(
        server,
        credentials_of(
            root_auth.createClient(creator_id, client_payload([f"auth:create-client:{creator_id}/*", "mine:*"]))
        ),
    )
    creator.createClient(f"{creator_id}/ok", client_payload(["mine:1"]))
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        creator.createClient(f"{creator_id}/greedy", client_payload(["mine:1", "theirs:1"]))
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"
    assert "theirs:1" in excinfo.value.body["message"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        creator.createRole("nope-" + random_word(), {"description": "d", "scopes": []})
    assert excinfo.value.status_code == 403


def test_configured_clients_cannot_be_changed(root_auth):
    for client_id in ["static/taskcluster/queue", "worker"]:
        with pytest.raises(TaskclusterRestFailure) as excinfo:
            root_auth.disableClient(client_id)
        assert excinfo.value.status_code == 400
        assert error_code(excinfo) == "InputError"
        assert "static clients" in excinfo.value.body["message"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        root_auth.deleteRole("anonymous")
    assert excinfo.value.status_code == 400
    assert root_auth.role("anonymous")["scopes"] == ANONYMOUS_SCOPES


def test_temporary_credentials_and_authorized_scopes(server, root_auth):
    """currentScopes reports what temporary credentials and authorizedScopes
    leave of the issuer's scopes."""
    temp = server.temporary_credentials(["auth:current-scopes", "temp:1"])
    scopes = auth_client(server, temp).currentScopes()["scopes"]
    assert "temp:1" in scopes and "*" not in scopes
    assert set(ANONYMOUS_SCOPES) <= set(scopes)

    restricted = auth_client(server, server.clients["root"], authorizedScopes=["auth:current-scopes", "only:this"])
    scopes = restricted.currentScopes()["scopes"]
    assert "only:this" in scopes and "*" not in scopes
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        restricted.createClient(f"restricted/{random_word()}", client_payload([]))
    assert excinfo.value.status_code == 403


def test_bbb_up_serves_the_auth_service(tmp_path):
    """``bbb up`` serves the auth service too: a client created there creates
    tasks on its queue."""
    with UpProcess(tmp_path) as up:
        options = {"rootUrl": up.root_url, "maxRetries": 0}
        auth = taskcluster.Auth({**options, "credentials": up.root_credentials()})
        assert auth.ping()["alive"] is True
        assert auth.currentScopes()["scopes"] == ["*"]
        task_queue = "bbb-up-auth/" + random_word()
        created = auth.createClient(
            "up/creator",
            client_payload(
                [
                    f"queue:create-task:lowest:{task_queue}",
                    "queue:create-task:project:none",
                    "queue:scheduler-id:-",
                ]
            ),
        )
        queue = taskcluster.Queue({**options, "credentials": credentials_of(created)})
        task_id = taskcluster.slugId()
        status = queue.createTask(task_id, task_definition(task_queue, priority="lowest"))["status"]
        assert status["state"] == "pending"
        anonymous = auth.expandScopes({"scopes": ["assume:anonymous"]})["scopes"]
        assert anonymous == auth.role("anonymous")["expandedScopes"]
        assert "assume:anonymous" in anonymous and len(anonymous) > 1

