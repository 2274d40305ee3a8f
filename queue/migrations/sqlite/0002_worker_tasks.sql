-- The runs each worker claimed, newest last: a worker's `recentTasks` are its
-- newest 20 rows. A claim adds its rows in its own transaction; older rows are
-- pruned when the worker's record is updated (at most once a minute per worker
-- and process) and go with the record when it expires.
CREATE TABLE worker_tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
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
SELECT task_queue_id, worker_group, worker_id, task_id, run_id FROM (
    SELECT w.task_queue_id, w.worker_group, w.worker_id, t.task_id, CAST(e.key AS INTEGER) AS n,
           (SELECT MAX(json_extract(r.value, '$.runId')) FROM json_each(t.runs) AS r
             WHERE json_extract(r.value, '$.workerGroup') = w.worker_group
               AND json_extract(r.value, '$.workerId') = w.worker_id) AS run_id
    FROM workers w
    JOIN json_each(w.recent_tasks) AS e
    JOIN tasks t ON t.task_id = json_extract(e.value, '$.taskId')
)
WHERE run_id IS NOT NULL
ORDER BY task_queue_id, worker_group, worker_id, n;
