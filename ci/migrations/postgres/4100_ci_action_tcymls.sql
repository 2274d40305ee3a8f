-- Every .taskcluster.yml a followed branch had (at its head or at a decided
-- push), by repository and hash: the in-tree action hooks are made from them
-- while they were seen within the retention time.
CREATE TABLE ci_action_tcymls (
    project TEXT NOT NULL,
    hash TEXT NOT NULL,
    tcyml TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (project, hash)
);
