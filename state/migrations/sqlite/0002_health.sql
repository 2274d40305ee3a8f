-- Health snapshots: each bridge process (by master and instance) writes its
-- in-process figures here every few seconds (counters, the reflector's last
-- pass, the messages it parked and why, as JSON), one row it overwrites, so
-- the web UI's health page can show every process of every master without
-- reaching them. `started` and `updated` are milliseconds since the epoch.
CREATE TABLE bridge_health (
    master   TEXT NOT NULL,
    instance TEXT NOT NULL,
    started  BIGINT NOT NULL,
    updated  BIGINT NOT NULL,
    snapshot TEXT NOT NULL,
    PRIMARY KEY (master, instance)
);
