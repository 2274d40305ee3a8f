-- The revisions of each branch, for reading a branch's newest revisions
-- without going over its observations: one row per (branch, revision) with
-- its first time, the earliest start (or finish, without a start) of any of
-- its observations, in milliseconds since the epoch. Written with the
-- observations (an upsert that only lowers `first_time`), and filled here
-- from the observations recorded before.
CREATE TABLE migration_revisions (
    branch     TEXT NOT NULL,
    revision   TEXT NOT NULL,
    first_time BIGINT NOT NULL,
    PRIMARY KEY (branch, revision)
);
-- A branch's newest revisions first: `ORDER BY first_time DESC, revision
-- DESC LIMIT n` reads n entries of this index.
CREATE INDEX migration_revisions_newest ON migration_revisions (branch, first_time, revision);

INSERT INTO migration_revisions (branch, revision, first_time)
SELECT branch, revision, MIN(COALESCE(started, finished))
FROM migration_observations
GROUP BY branch, revision;

-- A window's observations are read by (branch, revision); nothing reads them
-- by (branch, finished) any more.
CREATE INDEX migration_observations_revision ON migration_observations (branch, revision);
DROP INDEX migration_observations_branch;
