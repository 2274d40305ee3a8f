"""Transforms of the project's kinds."""

from taskgraph.transforms.base import TransformSequence

cache = TransformSequence()
depend_on_toolchain = TransformSequence()
depend_on_build = TransformSequence()


@cache.add
def add_cache(config, tasks):
    """Index the task under a digest of what it runs, so an unchanged
    toolchain is found in the index instead of being built again."""
    for task in tasks:
        task.setdefault("label", f"{config.kind}-{task['name']}")
        task.setdefault("attributes", {})
        task["cache"] = {
            "type": "toolchains",
            "name": task["name"],
            "digest-data": [repr(task["worker"]["command"])],
        }
        yield task


def _depend_on_kind(config, tasks, kind):
    upstream = [
        t.label for t in config.kind_dependencies_tasks.values() if t.kind == kind
    ]
    for task in tasks:
        task.setdefault("dependencies", {}).update({label: label for label in upstream})
        yield task


@depend_on_toolchain.add
def add_toolchain_dependencies(config, tasks):
    """Every build needs every toolchain."""
    yield from _depend_on_kind(config, tasks, "toolchain")


@depend_on_build.add
def add_build_dependencies(config, tasks):
    """Every test needs every build."""
    yield from _depend_on_kind(config, tasks, "build")
