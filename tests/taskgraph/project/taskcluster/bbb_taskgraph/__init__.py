"""The project's taskgraph extensions: a payload builder for tasks that run on
the legacy Buildbot master through the bridge, and small transforms."""

from taskgraph.transforms.task import payload_builder
from taskgraph.util.schema import Schema

from typing import Literal


class BuildbotBridgePayloadSchema(Schema, forbid_unknown_fields=False, kw_only=True):
    implementation: Literal["buildbot-bridge"]
    os: str
    # The builder of the legacy master that runs the job.
    buildername: str
    # The product property every bridged build request carries.
    product: str


@payload_builder("buildbot-bridge", schema=BuildbotBridgePayloadSchema)
def build_buildbot_bridge_payload(config, task, task_def):
    """The bridge's payload: the builder, its properties and the source stamp
    of the push the graph was made for."""
    worker = task["worker"]
    params = config.params
    task_def["payload"] = {
        "buildername": worker["buildername"],
        "properties": {"product": worker["product"]},
        "sourcestamp": {
            "branch": params["head_ref"].rsplit("/", 1)[-1],
            "revision": params["head_rev"],
            "repository": params["head_repository"],
            "project": params["project"],
        },
    }


def register(graph_config):
    """Called by taskgraph with the project's configuration (config.yml's
    ``taskgraph.register``); importing this module registered the builder."""
    from . import transforms  # noqa: F401
