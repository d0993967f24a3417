-- Tandem storage schema (SQLite). Times are INTEGER unix milliseconds.
--
-- The update log is the source of truth; snapshots are merged states at a log
-- sequence number; loading a document = newest snapshot + log rows after it.

-- AUTOINCREMENT: never reuse the id of a removed document.
CREATE TABLE documents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER NULL
);

-- One row per accepted update (or per batch of updates). The primary key
-- (doc_id, seq) serves load (seq > snapshot seq) and paged history.
-- A rowid table (not WITHOUT ROWID) because some updates are large blobs.
CREATE TABLE updates (
    doc_id      INTEGER NOT NULL REFERENCES documents (id),
    seq         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    author      TEXT    NULL,
    data        BLOB    NOT NULL,
    PRIMARY KEY (doc_id, seq)
);

-- Retention and "what changed since <time>" queries.
CREATE INDEX updates_doc_created_at_idx ON updates (doc_id, created_at);

-- Merged document state covering log rows up to and including seq.
CREATE TABLE snapshots (
    doc_id       INTEGER NOT NULL REFERENCES documents (id),
    seq          INTEGER NOT NULL,
    state        BLOB    NOT NULL,
    state_vector BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (doc_id, seq)
);

-- Named versions ("v1.0 sent to legal") pointing at a log sequence number.
CREATE TABLE labels (
    doc_id      INTEGER NOT NULL REFERENCES documents (id),
    seq         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (doc_id, name)
);

CREATE INDEX labels_doc_seq_idx ON labels (doc_id, seq);
