"""Hawk authentication, scope checks and the error answers (status code and
TaskCluster error ``code``) as the official client sees them."""

import datetime

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterAuthFailure, TaskclusterRestFailure

from bbbtest import error_code, from_now, iso, new_task_queue, task_definition


def test_ping_without_credentials(server):
    """ping needs no credentials and says the service is alive."""
    assert server.queue().ping()["alive"] is True


def test_limited_client_lacks_create_scopes(queue, limited_queue):
    """A client without the createTask scopes gets 403 InsufficientScopes,
    while the reads its scopes allow succeed."""
    task_id = taskcluster.slugId()
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        limited_queue.createTask(task_id, task_definition(new_task_queue()))
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"
    assert "queue:create-task:" in excinfo.value.body["message"]

    queue.createTask(task_id, task_definition(new_task_queue()))
    assert limited_queue.status(task_id)["status"]["taskId"] == task_id
    assert limited_queue.task(task_id)["metadata"]["name"] == "bbb compatibility test task"

    with pytest.raises(TaskclusterRestFailure) as excinfo:
        limited_queue.cancelTask(task_id)
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"
    assert queue.status(task_id)["status"]["state"] == "pending"


def test_anonymous_client_cannot_create_tasks(server):
    """Without credentials only the anonymous role's scopes apply: 403."""
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        server.queue().createTask(taskcluster.slugId(), task_definition(new_task_queue()))
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"


def temporary_queue(server, scopes):
    """A client with temporary credentials issued by root for ``scopes``."""
    return server.queue_with(server.temporary_credentials(scopes))


def test_creating_a_task_needs_its_scopes(server):
    """The creator must hold every scope it puts into ``task.scopes``: with
    all the createTask scopes but not the task's own, the answer is 403."""
    creator = temporary_queue(server, ["queue:create-task:*", "queue:scheduler-id:*"])
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        creator.createTask(
            taskcluster.slugId(), task_definition(new_task_queue(), scopes=["secrets:get:bbb-test/secret"])
        )
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"

    status = creator.createTask(taskcluster.slugId(), task_definition(new_task_queue()))["status"]
    assert status["state"] == "pending"


def test_wrong_access_token_is_rejected(server):
    """A wrong access token for a known client gives TaskclusterAuthFailure 401."""
    bad = server.queue_with({"clientId": "root", "accessToken": "not-the-right-token"})
    with pytest.raises(TaskclusterAuthFailure) as excinfo:
        bad.status(taskcluster.slugId())
    assert excinfo.value.status_code == 401
    assert error_code(excinfo) == "AuthenticationFailed"


def test_unknown_client_is_rejected(server):
    """An unknown clientId gives TaskclusterAuthFailure 401."""
    bad = server.queue_with({"clientId": "nobody", "accessToken": "whatever-token"})
    with pytest.raises(TaskclusterAuthFailure) as excinfo:
        bad.createTask(taskcluster.slugId(), task_definition(new_task_queue()))
    assert excinfo.value.status_code == 401
    assert error_code(excinfo) == "AuthenticationFailed"


def test_temporary_credentials_from_root(server, queue):
    """Temporary credentials signed with root's token carry only their
    certificate's scopes."""
    temp_queue = temporary_queue(server, ["queue:status:*"])
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue()))

    assert temp_queue.status(task_id)["status"]["taskId"] == task_id
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        temp_queue.task(task_id)
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"


def test_authorized_scopes_restrict_the_caller(server):
    """``authorizedScopes`` narrows root down to the listed scopes."""
    narrowed = server.queue("root", authorizedScopes=["queue:status:*"])
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        narrowed.createTask(taskcluster.slugId(), task_definition(new_task_queue()))
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"


def test_unknown_field_is_an_input_validation_error(queue):
    """An unknown top-level field in createTask gives 400 InputValidationError."""
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), task_definition(new_task_queue(), notAField=True))
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputValidationError"


def test_missing_required_field_is_an_input_validation_error(queue):
    """A definition without ``payload`` gives 400 InputValidationError."""
    definition = task_definition(new_task_queue())
    del definition["payload"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), definition)
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputValidationError"


def test_deadline_in_the_past_is_an_input_error(queue):
    """A deadline that has already passed gives 400 InputError."""
    definition = task_definition(new_task_queue(), created=from_now(-600), deadline=from_now(-60))
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), definition)
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputError"


def test_deadline_too_far_ahead_is_an_input_error(queue):
    """A deadline more than 5 days ahead gives 400 InputError."""
    now = datetime.datetime.now(datetime.timezone.utc)
    definition = task_definition(new_task_queue(), deadline=iso(now + datetime.timedelta(days=6)))
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), definition)
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputError"


def test_error_body_format(queue):
    """Error answers carry ``code``, a ``message`` and ``requestInfo`` naming
    the API method."""
    task_id = taskcluster.slugId()
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.status(task_id)
    body = excinfo.value.body
    assert body["code"] == "ResourceNotFound"
    assert isinstance(body["message"], str) and body["message"]
    assert body["requestInfo"]["method"] == "status"
    assert body["requestInfo"]["params"] == {"taskId": task_id}
