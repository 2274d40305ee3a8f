-- Sign-in's tables in the queue's database: the OAuth2 authorization codes
-- and access tokens upstream's web server keeps (authorization_codes,
-- access_tokens), so a code made by one bbb process can be exchanged at
-- another and a token survives a restart. Timestamps are milliseconds since
-- the epoch; client_details is the JSON of the client to create.
CREATE TABLE login_authorization_codes (
    code                 TEXT PRIMARY KEY,
    client_id            TEXT NOT NULL,
    redirect_uri         TEXT NOT NULL,
    identity             TEXT NOT NULL,
    identity_provider_id TEXT NOT NULL,
    expires              BIGINT NOT NULL,
    client_details       TEXT NOT NULL
);
CREATE INDEX login_authorization_codes_expires ON login_authorization_codes (expires);

-- Access tokens are kept only as their SHA-512 (hex), as upstream keeps them.
CREATE TABLE login_access_tokens (
    hashed_access_token  TEXT PRIMARY KEY,
    client_id            TEXT NOT NULL,
    redirect_uri         TEXT NOT NULL,
    identity             TEXT NOT NULL,
    identity_provider_id TEXT NOT NULL,
    expires              BIGINT NOT NULL,
    client_details       TEXT NOT NULL
);
CREATE INDEX login_access_tokens_expires ON login_access_tokens (expires);
