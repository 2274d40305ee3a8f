-- The legacy masters the record polls for finished builds: one row per
-- master (by its configured name) with where its reading resumes, what was
-- ingested, the last poll and its error, and the lease one process holds
-- while it polls. Times are milliseconds since the epoch, except the cursor,
-- which is in the master's own unit (the finish time in epoch seconds and
-- the build id of the last build read).
CREATE TABLE migration_sources (
    master          TEXT NOT NULL PRIMARY KEY,
    cursor_finished BIGINT NOT NULL DEFAULT 0,
    cursor_build_id BIGINT NOT NULL DEFAULT 0,
    ingested        BIGINT NOT NULL DEFAULT 0,
    skipped_bridged BIGINT NOT NULL DEFAULT 0,
    last_poll       BIGINT,
    last_success    BIGINT,
    last_error      TEXT,
    failures        BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0
);
