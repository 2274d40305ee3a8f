-- The hooks service's schema (PostgreSQL), beside the queue's tables in the same
-- database. Timestamps are milliseconds since the epoch; JSON values are text.

-- One row per hook: its definition, its secret trigger token and the next
-- scheduled slot (the taskId that slot's task gets is decided in advance, so
-- every attempt at a slot creates the same task).
CREATE TABLE hooks (
    hook_group_id       TEXT NOT NULL,
    hook_id             TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    task                TEXT NOT NULL,
    bindings            TEXT NOT NULL,
    schedule            TEXT NOT NULL,
    trigger_schema      TEXT NOT NULL,
    trigger_token       TEXT NOT NULL,
    next_task_id        TEXT NOT NULL,
    next_scheduled_date BIGINT NOT NULL,
    -- A scheduler took the due slot and is firing it until this time; past
    -- it, another scheduler may take the slot again.
    fire_lease_until    BIGINT,
    PRIMARY KEY (hook_group_id, hook_id)
);
CREATE INDEX hooks_next_scheduled ON hooks (next_scheduled_date);

-- What happened each time a hook fired.
CREATE TABLE hooks_last_fires (
    hook_group_id    TEXT NOT NULL,
    hook_id          TEXT NOT NULL,
    task_id          TEXT NOT NULL,
    fired_by         TEXT NOT NULL,
    task_create_time BIGINT NOT NULL,
    result           TEXT NOT NULL,
    error            TEXT NOT NULL,
    PRIMARY KEY (hook_group_id, hook_id, task_id)
);
CREATE INDEX hooks_last_fires_by_time ON hooks_last_fires (hook_group_id, hook_id, task_create_time);
CREATE INDEX hooks_last_fires_expiry ON hooks_last_fires (task_create_time);

-- The Pulse queue of each hook with bindings, and the bindings in place on it.
CREATE TABLE hooks_queues (
    hook_group_id TEXT NOT NULL,
    hook_id       TEXT NOT NULL,
    queue_name    TEXT NOT NULL,
    bindings      TEXT NOT NULL,
    PRIMARY KEY (hook_group_id, hook_id)
);
