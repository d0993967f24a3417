//! SQLite backend, the embedded default. Times are INTEGER unix milliseconds;
//! the file runs in WAL mode with synchronous=NORMAL (durable across process
//! crashes; an OS crash may lose the last commits, the usual WAL trade-off).

use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use crate::error::{StoreError, db_err};
use crate::model::{NewUpdate, from_unix_millis, to_unix_millis};
use crate::queries;
use crate::rows::StoredRow;
use crate::sql_store::{Dialect, SqlStore};
use crate::{MIGRATE_SQLITE, StoreOptions};

/// The SQLite dialect of the shared methods.
#[derive(Debug)]
pub(crate) enum Lite {}

/// SQLite-backed store: a connection pool over one database file.
pub(crate) type SqliteStore = SqlStore<Lite>;

impl Dialect for Lite {
    type Db = Sqlite;
    type Time = i64;

    // SQLite's default (BINARY) collation already orders names bytewise.
    const NAME_BYTEWISE: &'static str = "d.name";
    // Writes are serialized: the check for a live document cannot race a delete.
    const PUT_LABEL: &'static str = "INSERT INTO labels (doc_id, seq, name, created_at) \
        SELECT id, $2, $3, $4 FROM documents WHERE id = $1 AND deleted_at IS NULL \
        ON CONFLICT (doc_id, name) DO NOTHING RETURNING name, seq, created_at";
    // Only for a live document (writes are serialized: no race with a delete).
    const WRITE_SNAPSHOT: &'static str = "INSERT INTO snapshots (doc_id, seq, state, state_vector, created_at) \
        SELECT id, $2, $3, $4, $5 FROM documents WHERE id = $1 AND deleted_at IS NULL \
        ON CONFLICT (doc_id, seq) DO UPDATE SET state = excluded.state, \
            state_vector = excluded.state_vector, created_at = excluded.created_at";
    // A read transaction sees one WAL snapshot for both SELECTs.
    const BEGIN_READ: &'static str = "BEGIN";
    // Takes the write lock up front (a deferred transaction could fail with SQLITE_BUSY
    // when upgrading from a read lock).
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_LIVE_DOC: &'static str = queries::LIVE_DOC_ID;

    fn migrator() -> &'static Migrator {
        &MIGRATE_SQLITE
    }

    fn time(t: SystemTime) -> i64 {
        to_unix_millis(t)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// How long a statement waits for another connection's write lock before
/// failing with SQLITE_BUSY (mapped to `Unavailable`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows per multi-VALUES INSERT are powers of two up to this, so at most eight
/// distinct statements exist (all stay in the prepared-statement cache) and
/// binds stay far below SQLite's limit (6 × 128 = 768 < 999).
const MAX_CHUNK_LOG2: usize = 7;

/// `INSERT_SQL[k]` inserts `2^k` rows.
static INSERT_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..=MAX_CHUNK_LOG2)
        .map(|k| {
            let values = vec!["(?, ?, ?, ?, ?, ?)"; 1 << k].join(", ");
            format!(
                "INSERT INTO updates (doc_id, seq, created_at, size, author, data) \
                 VALUES {values} ON CONFLICT (doc_id, seq) DO NOTHING"
            )
        })
        .collect()
});

impl SqlStore<Lite> {
    /// Opens (creating if needed) the database file and its parent folders.
    /// `sqlite::memory:` gives a private in-memory database held by exactly one
    /// connection (an in-memory database dies with its last connection).
    pub(crate) async fn open(url: &str, opts: &StoreOptions) -> Result<SqliteStore, StoreError> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::InvalidUrl("expected a sqlite: url".into()))?;
        let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
        let in_memory = path == ":memory:" || params.split('&').any(|p| p == "mode=memory");
        if path.is_empty() && !in_memory {
            return Err(StoreError::InvalidUrl(
                "sqlite url names no file (use sqlite://path/to/file.db or sqlite::memory:)".into(),
            ));
        }

        let mut connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(format!("sqlite url: {e}")))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // An embedded database does not drop connections: skip sqlx's
        // ping-before-every-acquire.
        let mut pool = SqlitePoolOptions::new()
            .acquire_timeout(opts.connect_timeout)
            .test_before_acquire(false);
        if in_memory {
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            create_parent_dir(connect.get_filename()).await?;
            connect = connect
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            pool = pool.max_connections(opts.max_connections.max(1));
        }
        // Eager: opening the file proves it is usable (permissions, disk).
        let pool = pool
            .connect_with(connect)
            .await
            .map_err(db_err("open sqlite"))?;
        Ok(SqlStore { pool })
    }

    /// See [`Store::append`](crate::Store::append): multi-row VALUES inserts, in one
    /// transaction when the batch needs more than one statement.
    pub(crate) async fn append(&self, rows: &[NewUpdate]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // A batch that fits one statement needs no explicit transaction: the
        // statement alone is atomic, and skipping BEGIN/COMMIT saves two round
        // trips through sqlx's SQLite worker thread on every small commit (the
        // common case: one keystroke per commit at low load).
        if rows.len().is_power_of_two() && rows.len() <= 1 << (INSERT_SQL.len() - 1) {
            let k = chunk_log2(rows.len());
            bind_rows(sqlx::query(INSERT_SQL[k].as_str()), rows)
                .execute(&self.pool)
                .await
                .map_err(db_err("append"))?;
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front, so the transaction cannot
        // fail half-way with SQLITE_BUSY when upgrading from a read lock.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("append"))?;
        let mut rest = rows;
        while !rest.is_empty() {
            let k = chunk_log2(rest.len());
            let (chunk, tail) = rest.split_at(1 << k);
            bind_rows(sqlx::query(INSERT_SQL[k].as_str()), chunk)
                .execute(&mut *tx)
                .await
                .map_err(db_err("append"))?;
            rest = tail;
        }
        tx.commit().await.map_err(db_err("append"))?;
        Ok(())
    }
}

/// Largest `k <= MAX_CHUNK_LOG2` with `2^k <= n` (n > 0).
fn chunk_log2(n: usize) -> usize {
    let floor_log2 = (usize::BITS - 1 - n.leading_zeros()) as usize;
    floor_log2.min(MAX_CHUNK_LOG2)
}

async fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                StoreError::Unavailable(format!("create directory {}: {e}", dir.display()))
            })
        }
        _ => Ok(()),
    }
}

impl StoredRow for SqliteRow {
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(col)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }

    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(col)
    }

    fn opt_time(&self, col: &str) -> Result<Option<SystemTime>, sqlx::Error> {
        Ok(self.try_get::<Option<i64>, _>(col)?.map(from_unix_millis))
    }
}

/// Binds the columns of `rows` to a multi-row insert from `INSERT_SQL`.
fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    rows: &'q [NewUpdate],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for r in rows {
        q = q
            .bind(r.doc_id)
            .bind(r.seq)
            .bind(Lite::time(r.created_at))
            .bind(i64::try_from(r.data.len()).unwrap_or(i64::MAX))
            .bind(r.author.as_deref())
            .bind(&r.data[..]);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two() {
        assert_eq!(chunk_log2(1), 0);
        assert_eq!(chunk_log2(2), 1);
        assert_eq!(chunk_log2(3), 1);
        assert_eq!(chunk_log2(127), 6);
        assert_eq!(chunk_log2(128), 7);
        assert_eq!(chunk_log2(10_000), 7);
        assert_eq!(INSERT_SQL.len(), MAX_CHUNK_LOG2 + 1);
        assert_eq!(INSERT_SQL[3].matches('?').count(), 6 * 8);
    }
}
