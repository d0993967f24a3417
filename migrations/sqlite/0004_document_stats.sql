-- Per-document statistics kept by the database, so listing documents never scans the update
-- log, and tombstones for deleted documents. (Numbered 0004 like its Postgres twin; SQLite
-- has no 0003.)
--
-- documents.last_seq        highest seq ever logged (or covered by a snapshot); never goes
--                           down, so pruning the log keeps it
-- documents.log_rows        rows in the update log now
-- documents.log_bytes       sum(updates.size) over those rows
-- documents.last_change_at  accept time (unix ms) of the newest logged change; NULL before
--                           the first
-- documents.deleted_at      (from 0001) set when the document is deleted: its log, snapshots
--                           and labels are gone and the name is never served again
--
-- Maintained by row triggers (SQLite has no statement triggers; a row trigger here is one
-- B-tree update of a cached page, about a microsecond). AFTER INSERT fires only for rows
-- actually inserted, so rows skipped by ON CONFLICT DO NOTHING are not counted twice.

ALTER TABLE documents ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN log_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN last_change_at INTEGER NULL;

-- Backfill. A snapshot may cover seqs whose rows were pruned; for a document whose whole log
-- was pruned, the newest snapshot's time stands in for the last change (an upper bound).
UPDATE documents
SET last_seq = max(
        coalesce((SELECT max(seq) FROM updates WHERE doc_id = documents.id), 0),
        coalesce((SELECT max(seq) FROM snapshots WHERE doc_id = documents.id), 0)),
    log_rows = (SELECT count(*) FROM updates WHERE doc_id = documents.id),
    log_bytes = (SELECT coalesce(sum(size), 0) FROM updates WHERE doc_id = documents.id),
    last_change_at = coalesce(
        (SELECT max(created_at) FROM updates WHERE doc_id = documents.id),
        (SELECT max(created_at) FROM snapshots WHERE doc_id = documents.id));

-- One row trigger per inserted row does both jobs (a second trigger would double the
-- per-row cost): count the row into its document's statistics, or, when the document is
-- deleted (a late append from a writer queue), drop the row again. Inside a trigger,
-- changes() counts the trigger's previous statement: 0 means the document was not live.
-- (A row naming no document at all is left for the foreign key check to refuse.)
-- The statistics of a deleted document stay frozen (at zero: delete_document purges the
-- log before it sets deleted_at).
CREATE TRIGGER updates_stats_insert
AFTER INSERT ON updates
BEGIN
    UPDATE documents
    SET last_seq = max(last_seq, NEW.seq),
        log_rows = log_rows + 1,
        log_bytes = log_bytes + NEW.size,
        last_change_at = max(coalesce(last_change_at, NEW.created_at), NEW.created_at)
    WHERE id = NEW.doc_id AND deleted_at IS NULL;
    DELETE FROM updates WHERE rowid = NEW.rowid AND changes() = 0
        AND EXISTS (SELECT 1 FROM documents WHERE id = NEW.doc_id);
END;

CREATE TRIGGER updates_stats_delete
AFTER DELETE ON updates
BEGIN
    UPDATE documents
    SET log_rows = log_rows - 1,
        log_bytes = log_bytes - OLD.size
    WHERE id = OLD.doc_id AND deleted_at IS NULL;
END;
