-- Per-document statistics kept by the database, so listing documents never scans the update
-- log, and tombstones for deleted documents.
--
-- documents.last_seq        highest seq ever logged (or covered by a snapshot); never goes
--                           down, so pruning the log keeps it
-- documents.log_rows        rows in the update log now
-- documents.log_bytes       sum(updates.size) over those rows
-- documents.last_change_at  accept time of the newest logged change; NULL before the first
-- documents.deleted_at      (from 0001) set when the document is deleted: its log, snapshots
--                           and labels are gone and the name is never served again
--
-- Maintained by STATEMENT-level triggers reading the transition tables: an append of 1,000
-- rows costs one aggregated UPDATE per document, not 1,000. Rows skipped by
-- ON CONFLICT DO NOTHING are not in the transition table, so retried appends are not
-- counted twice.

-- No append or prune may slip between the backfill and the triggers' creation: hold off
-- writers of the log until this migration commits. First, before documents is locked (an
-- append in flight holds updates and waits for documents in its foreign key check).
LOCK TABLE updates IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE documents
    ADD COLUMN last_seq       BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN log_rows       BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN log_bytes      BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN last_change_at TIMESTAMPTZ NULL;

-- Every append now updates its document's row: leave room in each page so those updates
-- stay HOT (no index changes, no page hopping). Applies to pages written from now on.
ALTER TABLE documents SET (fillfactor = 70);

-- Backfill.
UPDATE documents d
SET last_seq = u.max_seq, log_rows = u.n, log_bytes = u.bytes, last_change_at = u.max_at
FROM (
    SELECT doc_id, max(seq) AS max_seq, count(*) AS n, sum(size) AS bytes,
           max(created_at) AS max_at
    FROM updates GROUP BY doc_id
) u
WHERE d.id = u.doc_id;

-- A snapshot may cover seqs whose rows were pruned. For a document whose whole log was
-- pruned, the newest snapshot's time stands in for the last change (an upper bound).
UPDATE documents d
SET last_seq = GREATEST(d.last_seq, s.max_seq),
    last_change_at = COALESCE(d.last_change_at, s.max_at)
FROM (SELECT doc_id, max(seq) AS max_seq, max(created_at) AS max_at FROM snapshots GROUP BY doc_id) s
WHERE d.id = s.doc_id;

-- Log rows landing in a deleted document (a late append from a writer queue, or one racing
-- the delete) are removed again at once and not counted: the statistics of a deleted
-- document stay frozen (at zero: delete_document purges the log before it sets
-- deleted_at). Race-free: the UPDATE below locks each document's row, and delete_document
-- holds that lock (FOR UPDATE) until it commits, so RETURNING sees the committed deleted_at.
CREATE FUNCTION tandem_updates_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone BIGINT[];
BEGIN
    WITH added AS (
        SELECT doc_id, max(seq) AS max_seq, count(*) AS n, sum(size) AS bytes,
               max(created_at) AS max_at
        FROM new_rows GROUP BY doc_id
    ), touched AS (
        UPDATE documents d
        SET last_seq = CASE WHEN d.deleted_at IS NULL
                            THEN GREATEST(d.last_seq, a.max_seq) ELSE d.last_seq END,
            log_rows = CASE WHEN d.deleted_at IS NULL
                            THEN d.log_rows + a.n ELSE d.log_rows END,
            log_bytes = CASE WHEN d.deleted_at IS NULL
                             THEN d.log_bytes + a.bytes ELSE d.log_bytes END,
            last_change_at = CASE WHEN d.deleted_at IS NULL
                                  THEN GREATEST(d.last_change_at, a.max_at)
                                  ELSE d.last_change_at END
        FROM added a
        WHERE d.id = a.doc_id
        RETURNING d.id, d.deleted_at
    )
    SELECT array_agg(id) INTO gone FROM touched WHERE deleted_at IS NOT NULL;
    IF gone IS NOT NULL THEN
        DELETE FROM updates u USING new_rows n
        WHERE u.doc_id = ANY (gone) AND n.doc_id = u.doc_id AND n.seq = u.seq;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION tandem_updates_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents d
    SET log_rows = d.log_rows - o.n,
        log_bytes = d.log_bytes - o.bytes
    FROM (
        SELECT doc_id, count(*) AS n, sum(size) AS bytes FROM old_rows GROUP BY doc_id
    ) o
    WHERE d.id = o.doc_id AND d.deleted_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER updates_stats_insert
    AFTER INSERT ON updates
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tandem_updates_inserted();

CREATE TRIGGER updates_stats_delete
    AFTER DELETE ON updates
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tandem_updates_deleted();

-- Document list: live documents in byte order of their names (COLLATE "C", the same order
-- as SQLite's), with prefix ranges and keyset paging independent of the database's locale.
CREATE INDEX documents_live_name_idx ON documents (name COLLATE "C") WHERE deleted_at IS NULL;
