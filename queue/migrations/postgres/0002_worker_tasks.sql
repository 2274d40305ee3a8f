-- The runs each worker claimed, newest last: a worker's `recentTasks` are its
-- newest 20 rows. A claim adds its rows in its own transaction; older rows are
-- pruned when the worker's record is updated (at most once a minute per worker
-- and process) and go with the record when it expires.
CREATE TABLE worker_tasks (
    id            BIGSERIAL PRIMARY KEY,
    task_queue_id TEXT NOT NULL,
    worker_group  TEXT NOT NULL,
    worker_id     TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    run_id        BIGINT NOT NULL
);
CREATE INDEX worker_tasks_worker ON worker_tasks (task_queue_id, worker_group, worker_id, id);

-- `workers.recent_tasks` held task ids only, and only those claimed when the
-- record was updated. Its entries move here with the run the worker had of
-- each task (entries whose task or run is gone are dropped); the column stays,
-- unread (new rows get '[]'), so a process of the version before can run
-- beside this one during a rolling upgrade.
INSERT INTO worker_tasks (task_queue_id, worker_group, worker_id, task_id, run_id)
SELECT w.task_queue_id, w.worker_group, w.worker_id, t.task_id, runs.run_id
FROM workers w
CROSS JOIN LATERAL jsonb_array_elements(w.recent_tasks::jsonb) WITH ORDINALITY AS e(entry, n)
JOIN tasks t ON t.task_id = e.entry->>'taskId'
CROSS JOIN LATERAL (
    SELECT MAX((r->>'runId')::BIGINT) AS run_id
    FROM jsonb_array_elements(t.runs::jsonb) AS r
    WHERE r->>'workerGroup' = w.worker_group AND r->>'workerId' = w.worker_id
) runs
WHERE runs.run_id IS NOT NULL
ORDER BY w.task_queue_id, w.worker_group, w.worker_id, e.n;
