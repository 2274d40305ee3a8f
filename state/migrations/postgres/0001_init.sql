-- The bridge's mapping database (PostgreSQL): one row per task run handed to Buildbot.
-- Timestamps are milliseconds since the epoch. See the crate README for states and leases.
CREATE TABLE mappings (
    id               BIGSERIAL PRIMARY KEY,
    task_id          TEXT NOT NULL,
    run_id           BIGINT NOT NULL,
    state            TEXT NOT NULL
        CHECK (state IN ('pending', 'requested', 'running', 'retrying', 'resolved')),
    build_request_id BIGINT,
    build_id         BIGINT,
    build_number     BIGINT,
    master           TEXT NOT NULL,
    deadline         BIGINT NOT NULL,
    created          BIGINT NOT NULL,
    updated          BIGINT NOT NULL,
    taken_until      BIGINT,
    resolution       TEXT,
    resolved_at      BIGINT,
    leased_until     BIGINT NOT NULL DEFAULT 0,
    leased_by        TEXT,
    CONSTRAINT mappings_task_run UNIQUE (task_id, run_id)
);
-- Build request -> runs (a RETRY carries one build request across several runs).
CREATE INDEX mappings_build_request ON mappings (build_request_id, run_id);
-- Reflector: running rows by takenUntil.
CREATE INDEX mappings_reclaim ON mappings (state, taken_until, id);
-- Reflector: rows of one state whose lease is free, least recently leased first.
CREATE INDEX mappings_lease ON mappings (state, leased_until, id);
-- Reflector: active rows past the task deadline.
CREATE INDEX mappings_deadline ON mappings (state, deadline, id);
-- Retention: resolved rows by resolution time.
CREATE INDEX mappings_resolved ON mappings (state, resolved_at, id);
