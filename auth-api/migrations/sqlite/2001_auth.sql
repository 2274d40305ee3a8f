-- The auth service's clients and roles (SQLite). Timestamps are milliseconds
-- since the epoch; scopes are JSON arrays; flags are 0 or 1.
CREATE TABLE auth_clients (
    client_id            TEXT PRIMARY KEY,
    description          TEXT NOT NULL,
    access_token         TEXT NOT NULL,
    expires              BIGINT NOT NULL,
    disabled             BIGINT NOT NULL,
    scopes               TEXT NOT NULL,
    created              BIGINT NOT NULL,
    last_modified        BIGINT NOT NULL,
    last_date_used       BIGINT NOT NULL,
    last_rotated         BIGINT NOT NULL,
    delete_on_expiration BIGINT NOT NULL
);
CREATE INDEX auth_clients_expiry ON auth_clients (expires) WHERE delete_on_expiration = 1;

CREATE TABLE auth_roles (
    role_id       TEXT PRIMARY KEY,
    description   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created       BIGINT NOT NULL,
    last_modified BIGINT NOT NULL
);

-- One row, counting changes to clients and roles: every change increments it
-- in its own transaction, and every process reloads when it sees it move.
-- Changes take its row first, which also puts them in one order.
CREATE TABLE auth_generation (
    id         BIGINT PRIMARY KEY,
    generation BIGINT NOT NULL
);
INSERT INTO auth_generation (id, generation) VALUES (1, 0);
