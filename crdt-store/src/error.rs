//! The crate's one error type. Driver errors are classified here, once, so the
//! server can decide "retry later" versus "give up" without knowing sqlx.

use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;

/// Why a store operation failed. Messages never contain connection passwords.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The database URL is malformed or names an unsupported backend. Fix the
    /// configuration; retrying cannot help.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The database cannot be reached right now: connection refused, reset or
    /// closed, I/O error, timeout, server shutting down, or a transient
    /// contention error (lock timeout, serialization failure, SQLite busy).
    /// The same call may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Applying the schema migrations failed (e.g. a migration was edited after
    /// it ran, or the database is newer than this binary).
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// The write conflicts with what is stored (e.g. a label of that name exists). Retrying
    /// the same call cannot help.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The document was deleted: it is not loaded, written or recreated again under its
    /// name. Retrying cannot help.
    #[error("document deleted: {0}")]
    Deleted(String),
    /// Any other failure (constraint violation, bad data, bug). Retrying the same
    /// call is not expected to help.
    #[error("database query failed: {0}")]
    Query(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed. The writer retries
    /// every failure regardless (it must never drop a row); other callers use
    /// this to choose between "503, try again" and "500".
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Classify a sqlx error raised while doing `op` (a short verb used as
    /// message prefix, e.g. "append").
    pub(crate) fn from_sqlx(op: &str, e: sqlx::Error) -> StoreError {
        let msg = format!("{op}: {e}");
        if is_transient(&e) {
            StoreError::Unavailable(msg)
        } else {
            StoreError::Query(msg)
        }
    }

    /// Classify a migration error: connection trouble stays retryable, the rest
    /// is a migration problem.
    pub(crate) fn from_migrate(e: MigrateError) -> StoreError {
        let msg = format!("migrate: {e}");
        match &e {
            MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _)
                if is_transient(inner) =>
            {
                StoreError::Unavailable(msg)
            }
            _ => StoreError::Migrate(msg),
        }
    }
}

/// Returns a closure for `map_err` that classifies a sqlx error raised by `op`.
pub(crate) fn db_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::from_sqlx(op, e)
}

/// A document lookup `(id, deleted)` as the id of an existing document, or
/// [`StoreError::Deleted`].
pub(crate) fn unless_deleted(
    name: &str,
    found: Option<(i64, bool)>,
) -> Result<Option<i64>, StoreError> {
    match found {
        Some((_, true)) => Err(StoreError::Deleted(name.to_owned())),
        Some((id, false)) => Ok(Some(id)),
        None => Ok(None),
    }
}

/// The outcome of a write guarded by "the document is live": nothing written means the
/// document is deleted (or its id never existed).
pub(crate) fn written_unless_deleted(rows_affected: u64, doc_id: i64) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(doc_gone(doc_id))
    } else {
        Ok(())
    }
}

/// [`StoreError::Deleted`] for a document known by id.
pub(crate) fn doc_gone(doc_id: i64) -> StoreError {
    StoreError::Deleted(format!("document id {doc_id} is deleted or does not exist"))
}

/// True for errors that say "not now" rather than "never".
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        // Protocol: the connection is out of step (typically cut mid-message);
        // a fresh connection fixes it. WorkerCrashed: a SQLite connection thread died.
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => is_transient_db(db.as_ref()),
        _ => false,
    }
}

fn is_transient_db(db: &dyn DatabaseError) -> bool {
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return db.code().is_some_and(|c| is_transient_pg_code(&c));
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(is_transient_sqlite_code);
    }
    false
}

/// Postgres SQLSTATEs worth retrying: connection exceptions (08), insufficient
/// resources (53: too many connections, disk full), operator intervention /
/// shutdown (57P01-57P03), system errors (58), serialization failure and
/// deadlock (40001, 40P01), lock not available (55P03), and read-only
/// transaction (25006: connected to a standby during failover).
fn is_transient_pg_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("58")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "25006"
        )
}

/// SQLite primary result codes worth retrying: BUSY (5), LOCKED (6), IOERR
/// (10), FULL (13), CANTOPEN (14). Extended codes carry the primary code in
/// their low byte.
fn is_transient_sqlite_code(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 13 | 14)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn io_and_pool_errors_are_unavailable() {
        for e in [
            sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
            sqlx::Error::Io(io::Error::from(io::ErrorKind::UnexpectedEof)),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Protocol("connection closed".into()),
            sqlx::Error::WorkerCrashed,
        ] {
            let mapped = StoreError::from_sqlx("op", e);
            assert!(
                matches!(mapped, StoreError::Unavailable(_)),
                "got {mapped:?}"
            );
            assert!(mapped.is_retryable());
        }
    }

    #[test]
    fn other_errors_are_query() {
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::PoolClosed,
        ] {
            let mapped = StoreError::from_sqlx("op", e);
            assert!(matches!(mapped, StoreError::Query(_)), "got {mapped:?}");
            assert!(!mapped.is_retryable());
        }
    }

    #[test]
    fn message_names_operation() {
        let e = StoreError::from_sqlx("append", sqlx::Error::PoolTimedOut);
        assert!(e.to_string().contains("append"), "{e}");
        assert!(e.to_string().starts_with("database unavailable"), "{e}");
    }

    #[test]
    fn migrate_errors() {
        let transient = StoreError::from_migrate(MigrateError::Execute(sqlx::Error::Io(
            io::Error::from(io::ErrorKind::ConnectionReset),
        )));
        assert!(transient.is_retryable(), "{transient:?}");
        let permanent = StoreError::from_migrate(MigrateError::VersionMissing(3));
        assert!(matches!(permanent, StoreError::Migrate(_)), "{permanent:?}");
        assert!(!permanent.is_retryable());
    }

    #[test]
    fn database_codes() {
        assert!(is_transient_pg_code("08006"));
        assert!(is_transient_pg_code("57P01"));
        assert!(is_transient_pg_code("40001"));
        assert!(!is_transient_pg_code("23505"));
        assert!(!is_transient_pg_code("42P01"));
        assert!(is_transient_sqlite_code(5));
        assert!(is_transient_sqlite_code(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(!is_transient_sqlite_code(19)); // SQLITE_CONSTRAINT
        assert!(!is_transient_sqlite_code(1)); // SQLITE_ERROR
    }
}
