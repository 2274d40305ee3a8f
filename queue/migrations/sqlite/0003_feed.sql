-- Copies of the messages a service served beside the queue subscribed to
-- (`feed` names it), written in the transaction that emitted them and deleted
-- by that service in the transaction that handles them (see `feeds.rs`).
CREATE TABLE feed (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    feed        TEXT NOT NULL,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    cc          TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX feed_order ON feed (feed, id);
