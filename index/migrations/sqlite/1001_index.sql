-- The index service's tables, in the queue's database. Timestamps are
-- milliseconds since the epoch.

-- One entry per index path `<namespace>.<name>`: the task found there.
CREATE TABLE indexed_tasks (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rank      BIGINT NOT NULL,
    task_id   TEXT NOT NULL,
    data      TEXT NOT NULL,
    expires   BIGINT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE INDEX indexed_tasks_expires ON indexed_tasks (expires);

-- The namespaces holding entries: `<parent>.<name>`, each expiring no sooner
-- than the entries below it.
CREATE TABLE index_namespaces (
    parent  TEXT NOT NULL,
    name    TEXT NOT NULL,
    expires BIGINT NOT NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX index_namespaces_expires ON index_namespaces (expires);
