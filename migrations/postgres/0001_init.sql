-- Tandem storage schema (Postgres). Times are timestamptz.
--
-- The update log is the source of truth; snapshots are merged states at a log
-- sequence number; loading a document = newest snapshot + log rows after it.

CREATE TABLE documents (
    id          BIGSERIAL   PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ NULL
);

-- One row per accepted update (or per batch of updates). The primary key
-- (doc_id, seq) serves load (seq > snapshot seq) and paged history.
CREATE TABLE updates (
    doc_id      BIGINT      NOT NULL REFERENCES documents (id),
    seq         BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    size        INTEGER     NOT NULL,
    author      TEXT        NULL,
    data        BYTEA       NOT NULL,
    PRIMARY KEY (doc_id, seq)
);

-- Retention and "what changed since <time>" queries.
CREATE INDEX updates_doc_created_at_idx ON updates (doc_id, created_at);

-- Merged document state covering log rows up to and including seq.
CREATE TABLE snapshots (
    doc_id       BIGINT      NOT NULL REFERENCES documents (id),
    seq          BIGINT      NOT NULL,
    state        BYTEA       NOT NULL,
    state_vector BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, seq)
);

-- Named versions ("v1.0 sent to legal") pointing at a log sequence number.
CREATE TABLE labels (
    doc_id      BIGINT      NOT NULL REFERENCES documents (id),
    seq         BIGINT      NOT NULL,
    name        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, name)
);

CREATE INDEX labels_doc_seq_idx ON labels (doc_id, seq);
