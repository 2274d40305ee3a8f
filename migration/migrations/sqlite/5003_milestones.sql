-- Milestones: a date and the jobs of a branch (task labels or builders) that
-- must run natively by then. `due` is a calendar date (YYYY-MM-DD, UTC),
-- `jobs` a JSON array of names; `source` is `api` or `file` (the
-- configuration). Times are milliseconds since the epoch.
CREATE TABLE migration_milestones (
    name        TEXT NOT NULL PRIMARY KEY,
    branch      TEXT NOT NULL,
    due         TEXT NOT NULL,
    jobs        TEXT NOT NULL,
    description TEXT NOT NULL,
    source      TEXT NOT NULL,
    updated     BIGINT NOT NULL,
    updated_by  TEXT NOT NULL
);
