-- The CI service's schema (PostgreSQL), beside the queue's tables in the same
-- database. Timestamps are milliseconds since the epoch.

-- One row per repository, named by its project.
CREATE TABLE ci_repositories (
    project        TEXT PRIMARY KEY,
    url            TEXT NOT NULL,
    clone_url      TEXT,
    kind           TEXT NOT NULL,
    trust_domain   TEXT NOT NULL,
    level          BIGINT NOT NULL,
    poll           BIGINT NOT NULL,
    webhook_secret TEXT,
    -- The last poll: when it ended, and its error if it failed (cleared by a
    -- poll that succeeds); failures counts the failures in a row.
    last_poll_at   BIGINT,
    poll_error     TEXT,
    poll_error_at  BIGINT,
    poll_failures  BIGINT NOT NULL DEFAULT 0
);

-- The branches bbb follows, their mode and the head the last poll saw.
CREATE TABLE ci_branches (
    project     TEXT NOT NULL,
    branch      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    polled_head TEXT,
    PRIMARY KEY (project, branch)
);

-- Every change of a branch's mode: who and when.
CREATE TABLE ci_mode_changes (
    id         BIGSERIAL PRIMARY KEY,
    project    TEXT NOT NULL,
    branch     TEXT NOT NULL,
    old_mode   TEXT,
    new_mode   TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX ci_mode_changes_branch ON ci_mode_changes (project, branch, id);

-- The push ledger: one row per push, recorded once whatever source saw it
-- (push_key: the revision for git). state: pending (to decide), observed
-- (a buildbot branch: nothing to do), decided (decision_task_id) or failed
-- (error). A pending push whose decision failed in a way that may pass is
-- tried again at next_attempt_at, with its error shown meanwhile.
CREATE TABLE ci_pushes (
    id               BIGSERIAL PRIMARY KEY,
    project          TEXT NOT NULL,
    branch           TEXT NOT NULL,
    push_key         TEXT NOT NULL,
    revision         TEXT NOT NULL,
    base_revision    TEXT,
    owner            TEXT NOT NULL,
    pushdate         BIGINT NOT NULL,
    source           TEXT NOT NULL,
    mode             TEXT NOT NULL,
    state            TEXT NOT NULL,
    recorded_at      BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    decision_task_id TEXT,
    error            TEXT,
    handled_at       BIGINT,
    UNIQUE (project, branch, push_key)
);
CREATE INDEX ci_pushes_pending ON ci_pushes (state, project, branch, id);
