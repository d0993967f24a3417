-- Signed webhooks (--webhook-url).
--
-- webhook_outbox   deliveries not yet answered 2xx, one row per event and URL; a row is
--                  inserted before its first attempt and removed once the receiver answers
--                  2xx, so a restart or a receiver that is away for hours loses none.
-- webhook_cursors  per document, the highest seq announced in a document.changed event; on
--                  start the server announces whatever the log holds past it, so a crash
--                  inside a coalescing window loses no change. No row: never announced (the
--                  next announcement is also a document.created).
-- webhook_state    one row, written the first time a server runs with webhooks: documents
--                  that existed before then get a cursor at their current seq instead of a
--                  flood of events for old history.

CREATE TABLE webhook_outbox (
    id              BIGSERIAL   PRIMARY KEY,
    event_id        TEXT        NOT NULL, -- the idempotency key, the same on every attempt
    url             TEXT        NOT NULL,
    event           TEXT        NOT NULL,
    body            TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    last_error      TEXT        NULL,
    UNIQUE (event_id, url)
);

CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at);

CREATE TABLE webhook_cursors (
    doc_id       BIGINT NOT NULL PRIMARY KEY REFERENCES documents (id),
    notified_seq BIGINT NOT NULL
);

CREATE TABLE webhook_state (
    id    INTEGER     NOT NULL PRIMARY KEY CHECK (id = 1),
    since TIMESTAMPTZ NOT NULL
);
