-- The native queue's schema (SQLite). Timestamps are milliseconds since the epoch.
CREATE TABLE tasks (
    task_id          TEXT PRIMARY KEY,
    task_group_id    TEXT NOT NULL,
    scheduler_id     TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    task_queue_id    TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    deadline         BIGINT NOT NULL,
    expires          BIGINT NOT NULL,
    retries_left     BIGINT NOT NULL,
    state            TEXT NOT NULL,
    open             BIGINT NOT NULL,
    taken_until      BIGINT,
    ever_resolved    BIGINT NOT NULL DEFAULT 0,
    deps_unsatisfied BIGINT NOT NULL DEFAULT 0,
    definition       TEXT NOT NULL,
    runs             TEXT NOT NULL
);
CREATE INDEX tasks_group ON tasks (task_group_id, task_id);
CREATE INDEX tasks_claims ON tasks (taken_until) WHERE state = 'running';
CREATE INDEX tasks_deadlines ON tasks (deadline) WHERE open = 1;
CREATE INDEX tasks_expires ON tasks (expires);
CREATE INDEX tasks_group_unresolved ON tasks (task_group_id) WHERE ever_resolved = 0;

CREATE TABLE task_groups (
    task_group_id TEXT PRIMARY KEY,
    scheduler_id  TEXT NOT NULL,
    expires       BIGINT NOT NULL,
    sealed        BIGINT
);

CREATE TABLE task_dependencies (
    required_task_id  TEXT NOT NULL,
    dependent_task_id TEXT NOT NULL,
    requires          TEXT NOT NULL,
    satisfied         BIGINT NOT NULL,
    expires           BIGINT NOT NULL,
    PRIMARY KEY (required_task_id, dependent_task_id)
);
CREATE INDEX task_dependencies_dependent ON task_dependencies (dependent_task_id);
CREATE INDEX task_dependencies_expires ON task_dependencies (expires);

CREATE TABLE pending (
    task_id       TEXT NOT NULL,
    run_id        BIGINT NOT NULL,
    task_queue_id TEXT NOT NULL,
    priority      BIGINT NOT NULL,
    inserted      BIGINT NOT NULL,
    deadline      BIGINT NOT NULL,
    PRIMARY KEY (task_id, run_id)
);
CREATE INDEX pending_order ON pending (task_queue_id, priority DESC, inserted, task_id);

CREATE TABLE resolutions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       TEXT NOT NULL,
    task_group_id TEXT NOT NULL,
    resolution    TEXT NOT NULL
);

CREATE TABLE artifacts (
    task_id      TEXT NOT NULL,
    run_id       BIGINT NOT NULL,
    name         TEXT NOT NULL,
    storage_type TEXT NOT NULL,
    content_type TEXT NOT NULL,
    details      TEXT NOT NULL,
    expires      BIGINT NOT NULL,
    present      BIGINT NOT NULL,
    created      BIGINT NOT NULL,
    PRIMARY KEY (task_id, run_id, name)
);
CREATE INDEX artifacts_expires ON artifacts (expires);

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    cc          TEXT NOT NULL,
    payload     TEXT NOT NULL
);

CREATE TABLE task_queues (
    task_queue_id    TEXT PRIMARY KEY,
    expires          BIGINT NOT NULL,
    last_date_active BIGINT NOT NULL,
    description      TEXT NOT NULL,
    stability        TEXT NOT NULL
);

CREATE TABLE workers (
    task_queue_id    TEXT NOT NULL,
    worker_group     TEXT NOT NULL,
    worker_id        TEXT NOT NULL,
    first_claim      BIGINT NOT NULL,
    last_date_active BIGINT NOT NULL,
    expires          BIGINT NOT NULL,
    quarantine_until BIGINT,
    recent_tasks     TEXT NOT NULL,
    PRIMARY KEY (task_queue_id, worker_group, worker_id)
);

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
