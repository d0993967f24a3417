//! Row decoding shared by both backends. Each backend says how it reads a column of each
//! kind ([`StoredRow`]: the backends differ in how they store times and in integer widths);
//! the decoders turning rows into model types are written once, here.

use std::time::SystemTime;

use crate::error::{StoreError, db_err};
use crate::model::{
    DocumentInfo, Label, LogRow, Revocation, RevocationKind, Snapshot, SnapshotInfo,
};

/// Typed column access, implemented by each backend's row type.
pub(crate) trait StoredRow {
    /// An integer column (any width), or a NULL one as `None`.
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A text column, or a NULL one as `None`.
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    /// A bytes column.
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
    /// A time column, or a NULL one as `None`.
    fn opt_time(&self, col: &str) -> Result<Option<SystemTime>, sqlx::Error>;

    /// A NOT NULL integer column.
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.opt_int(col)?.ok_or_else(|| unexpected_null(col))
    }
    /// A NOT NULL text column.
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.opt_text(col)?.ok_or_else(|| unexpected_null(col))
    }
    /// A NOT NULL time column.
    fn time(&self, col: &str) -> Result<SystemTime, sqlx::Error> {
        self.opt_time(col)?.ok_or_else(|| unexpected_null(col))
    }
}

fn unexpected_null(col: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: "unexpected NULL".into(),
    }
}

/// Decodes every row with `decode`; a failure is reported as a query error of `op`.
pub(crate) fn decode_all<R, T>(
    rows: &[R],
    op: &'static str,
    decode: impl Fn(&R) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(op))
}

/// Decodes an optional row with `decode`; a failure is reported as a query error of `op`.
pub(crate) fn decode_opt<R, T>(
    row: Option<R>,
    op: &'static str,
    decode: impl Fn(&R) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, StoreError> {
    row.as_ref().map(decode).transpose().map_err(db_err(op))
}

/// `seq, created_at, size, author[, data]`.
pub(crate) fn log_row(r: &impl StoredRow, with_data: bool) -> Result<LogRow, sqlx::Error> {
    Ok(LogRow {
        seq: r.int("seq")?,
        created_at: r.time("created_at")?,
        size: r.int("size")?,
        author: r.opt_text("author")?,
        data: if with_data {
            r.bytes("data")?
        } else {
            Vec::new()
        },
    })
}

/// `seq, state, state_vector, created_at`.
pub(crate) fn snapshot(r: &impl StoredRow) -> Result<Snapshot, sqlx::Error> {
    Ok(Snapshot {
        seq: r.int("seq")?,
        state: r.bytes("state")?,
        state_vector: r.bytes("state_vector")?,
        created_at: r.time("created_at")?,
    })
}

/// `name, seq, created_at`.
pub(crate) fn label(r: &impl StoredRow) -> Result<Label, sqlx::Error> {
    Ok(Label {
        name: r.text("name")?,
        seq: r.int("seq")?,
        created_at: r.time("created_at")?,
    })
}

/// A row of [`DOCUMENT_SELECT`](crate::documents::DOCUMENT_SELECT).
pub(crate) fn document_info(r: &impl StoredRow) -> Result<DocumentInfo, sqlx::Error> {
    let latest_snapshot = match r.opt_int("snapshot_seq")? {
        Some(seq) => Some(SnapshotInfo {
            seq,
            created_at: r.time("snapshot_at")?,
            bytes: r.int("snapshot_size")?,
        }),
        None => None,
    };
    Ok(DocumentInfo {
        doc_id: r.int("id")?,
        name: r.text("name")?,
        created_at: r.time("created_at")?,
        deleted_at: r.opt_time("deleted_at")?,
        last_change_at: r.opt_time("last_change_at")?,
        last_seq: r.int("last_seq")?,
        first_logged_seq: r.opt_int("first_logged_seq")?,
        log_rows: r.int("log_rows")?,
        log_bytes: r.int("log_bytes")?,
        snapshots: r.int("snapshots")?,
        snapshot_bytes: r.int("snapshot_bytes")?,
        latest_snapshot,
        labels: r.int("labels")?,
    })
}

/// `kind, value, revoked_at`; `None` for a kind this version does not know.
pub(crate) fn revocation(r: &impl StoredRow) -> Result<Option<Revocation>, sqlx::Error> {
    let Some(kind) = RevocationKind::parse(&r.text("kind")?) else {
        return Ok(None);
    };
    Ok(Some(Revocation {
        kind,
        value: r.text("value")?,
        revoked_at: r.time("revoked_at")?,
    }))
}
