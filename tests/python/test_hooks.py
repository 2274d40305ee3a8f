"""The hooks service served beside the queue, through the official client's
``taskcluster.Hooks``: createHook, triggerHook and listLastFires, on both
storage backends."""

from __future__ import annotations

import pytest
import taskcluster

from bbbtest import PROVISIONER, error_code, new_task_queue, random_word


def hook_definition(task_queue_id: str) -> dict:
    """A hook whose task carries the trigger payload's ``n``."""
    return {
        "metadata": {
            "name": "compatibility hook",
            "description": "created by the Python compatibility suite",
            "owner": "bbb-tests@example.com",
        },
        "task": {
            "taskQueueId": task_queue_id,
            "payload": {"n": "${payload.n}", "firedBy": "${firedBy}", "by": "${clientId}"},
            "metadata": {
                "name": "hook task",
                "description": "made by a hook",
                "owner": "bbb-tests@example.com",
                "source": "https://example.com/bbb/tests/python",
            },
        },
        "triggerSchema": {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
            "additionalProperties": False,
        },
    }


def test_create_trigger_and_list_last_fires(server, queue):
    hooks = server.hooks("root")
    hook_id = f"hook-{random_word()}"
    task_queue_id = new_task_queue()
    definition = hook_definition(task_queue_id)

    created = hooks.createHook(PROVISIONER, hook_id, definition)
    assert created["hookGroupId"] == PROVISIONER
    assert created["hookId"] == hook_id
    assert created["task"] == definition["task"]
    assert created["schedule"] == []
    assert hooks.hook(PROVISIONER, hook_id)["bindings"] == []
    assert PROVISIONER in hooks.listHookGroups()["groups"]

    fired = hooks.triggerHook(PROVISIONER, hook_id, {"n": 42})
    task_id = fired["taskId"]
    assert fired["status"] == {"taskId": task_id}
    task = queue.task(task_id)
    assert task["payload"] == {"n": "42", "firedBy": "triggerHook", "by": "root"}
    assert task["taskQueueId"] == task_queue_id
    assert task["taskGroupId"] == task_id

    last_fires = hooks.listLastFires(PROVISIONER, hook_id)["lastFires"]
    assert len(last_fires) == 1
    fire = last_fires[0]
    assert fire["taskId"] == task_id
    assert fire["firedBy"] == "triggerHook"
    assert fire["result"] == "success"
    assert fire["error"] == ""
    assert fire["taskState"] == "pending"


def test_bad_payloads_and_missing_scopes_are_refused(server):
    hooks = server.hooks("root")
    hook_id = f"hook-{random_word()}"
    hooks.createHook(PROVISIONER, hook_id, hook_definition(new_task_queue()))

    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as excinfo:
        hooks.triggerHook(PROVISIONER, hook_id, {"n": "not a number"})
    assert excinfo.value.status_code == 400
    assert error_code(excinfo) == "InputError"
    assert "data/n must be integer" in excinfo.value.body["message"]

    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as excinfo:
        server.hooks("limited").triggerHook(PROVISIONER, hook_id, {"n": 1})
    assert excinfo.value.status_code == 403
    assert error_code(excinfo) == "InsufficientScopes"

    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as excinfo:
        hooks.listLastFires(PROVISIONER, hook_id)
    assert excinfo.value.status_code == 404
    assert error_code(excinfo) == "ResourceNotFound"

    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as excinfo:
        hooks.triggerHook(PROVISIONER, f"none-{random_word()}", {"n": 1})
    assert excinfo.value.status_code == 404
