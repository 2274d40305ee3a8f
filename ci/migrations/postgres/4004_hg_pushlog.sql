-- Mercurial pushlogs (PostgreSQL). A repository of kind hg is followed through its
-- pushlog (json-pushes): pushlog_cursor is the id of the last pushlog push
-- bbb has recorded (or skipped, its branch not followed), so every push is
-- taken once, in pushlog order, whichever process polls; NULL until the
-- pushlog is first read. A push recorded from a pushlog keeps its pushlog id
-- (push.pushlog_id of its decision task); NULL for git pushes.
ALTER TABLE ci_repositories ADD COLUMN pushlog_cursor BIGINT;
ALTER TABLE ci_pushes ADD COLUMN pushlog_id BIGINT;
