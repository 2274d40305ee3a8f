-- The task-group inspector (ops/inspect.rs): a group's tasks counted by state
-- from an index alone (an index-only scan once the visibility map is set),
-- and each task's `metadata.name` in a column of its own, written when the
-- task is created, so a name filter reads no definition.
CREATE INDEX tasks_group_state ON tasks (task_group_id, state);
ALTER TABLE tasks ADD COLUMN name TEXT NOT NULL DEFAULT '';
UPDATE tasks SET name = COALESCE(definition::jsonb #>> '{metadata,name}', '');
