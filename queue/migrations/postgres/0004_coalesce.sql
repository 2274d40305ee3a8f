-- Coalescing (see ops/coalesce.rs): the pending run 0 of a task with a
-- `coalesce.v1.<key>` route that may be superseded carries its key, the task's
-- `created` (ms) and how many tasks it superseded so far, itself and through
-- the tasks it superseded; every other pending row has an empty key.
ALTER TABLE pending ADD COLUMN coalesce_key TEXT NOT NULL DEFAULT '';
ALTER TABLE pending ADD COLUMN created BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pending ADD COLUMN supersedes BIGINT NOT NULL DEFAULT 0;
CREATE INDEX pending_coalesce ON pending (coalesce_key, task_queue_id, created, inserted) WHERE coalesce_key <> '';
