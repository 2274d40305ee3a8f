-- The migration record's tables, in the queue's database. Timestamps are
-- milliseconds since the epoch.

-- One result of one job on one side: a task's run (native or bridged) or a
-- legacy build. `source_id` (`<taskId>/<runId>` or the build's id on its
-- master) makes a re-delivered event update its row instead of adding one.
CREATE TABLE migration_observations (
    side      TEXT NOT NULL,
    source_id TEXT NOT NULL,
    branch    TEXT NOT NULL,
    revision  TEXT NOT NULL,
    job       TEXT NOT NULL,
    builder   TEXT,
    symbol    TEXT,
    result    TEXT NOT NULL,
    started   BIGINT,
    finished  BIGINT NOT NULL,
    PRIMARY KEY (side, source_id)
);
CREATE INDEX migration_observations_branch ON migration_observations (branch, finished);

-- The team's mapping: the task label and the builder that are the same job,
-- on one branch or on every branch (`*`).
CREATE TABLE migration_mapping (
    branch     TEXT NOT NULL,
    label      TEXT NOT NULL,
    builder    TEXT NOT NULL,
    source     TEXT NOT NULL,
    updated    BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (branch, label)
);
