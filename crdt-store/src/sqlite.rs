//! SQLite backend, the embedded default. Times are INTEGER unix milliseconds;
//! the file runs in WAL mode with synchronous=NORMAL (durable across process
//! crashes; an OS crash may lose the last commits, the usual WAL trade-off).

use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::common::Dialect;
use crate::error::{StoreError, db_err, written_unless_deleted};
use crate::model::{
    DocumentInfo, Label, LoadedDoc, LogRow, NewUpdate, Revocation, RevocationKind, Snapshot,
    from_unix_millis, to_unix_millis,
};
use crate::queries;
use crate::rows::{self, StoredRow, decode_all, decode_opt};
use crate::{MIGRATE_SQLITE, StoreOptions};

/// The dialect-specific parts of the methods shared with Postgres.
const DIALECT: Dialect = Dialect {
    // SQLite's default (BINARY) collation already orders names bytewise.
    name_bytewise: "d.name",
    // Writes are serialized: the check for a live document cannot race a delete.
    put_label: "INSERT INTO labels (doc_id, seq, name, created_at) \
                SELECT id, $2, $3, $4 FROM documents WHERE id = $1 AND deleted_at IS NULL \
                ON CONFLICT (doc_id, name) DO NOTHING RETURNING name, seq, created_at",
    // Takes the write lock up front (a deferred transaction could fail with SQLITE_BUSY
    // when upgrading from a read lock).
    begin_write: "BEGIN IMMEDIATE",
    lock_live_doc: queries::LIVE_DOC_ID,
};

/// How this backend stores a time.
fn db_time(t: SystemTime) -> i64 {
    to_unix_millis(t)
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

/// SQLite-backed store: a connection pool over one database file.
#[derive(Clone, Debug)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
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
        Ok(SqliteStore { pool })
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATE_SQLITE
            .run(&self.pool)
            .await
            .map_err(StoreError::from_migrate)
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err("ping"))?;
        Ok(())
    }

    pub(crate) async fn load(&self, name: &str) -> Result<LoadedDoc, StoreError> {
        // Never creates the row: a document gets one with its first logged update.
        let Some(doc_id) = self.existing_doc_id(name).await? else {
            return Ok(LoadedDoc {
                doc_id: None,
                snapshot: None,
                updates: Vec::new(),
                last_seq: 0,
            });
        };
        // A read transaction sees one WAL snapshot for both SELECTs.
        let mut tx = self.pool.begin().await.map_err(db_err("load"))?;
        let snapshot = sqlx::query(
            "SELECT seq, state, state_vector, created_at FROM snapshots \
             WHERE doc_id = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(doc_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("load"))?;
        let snapshot = decode_opt(snapshot, "load", rows::snapshot)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let updates = sqlx::query(
            "SELECT seq, created_at, size, author, data FROM updates \
             WHERE doc_id = ? AND seq > ? ORDER BY seq",
        )
        .bind(doc_id)
        .bind(after)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err("load"))?;
        let updates = decode_all(&updates, "load", |r| rows::log_row(r, true))?;
        tx.commit().await.map_err(db_err("load"))?;
        let last_seq = updates.last().map_or(after, |u| u.seq.max(after));
        Ok(LoadedDoc {
            doc_id: Some(doc_id),
            snapshot,
            updates,
            last_seq,
        })
    }

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

    pub(crate) async fn write_snapshot(
        &self,
        doc_id: i64,
        seq: i64,
        state: &[u8],
        state_vector: &[u8],
    ) -> Result<(), StoreError> {
        // Only for a live document (writes are serialized: no race with a delete).
        let done = sqlx::query(
            "INSERT INTO snapshots (doc_id, seq, state, state_vector, created_at) \
             SELECT id, $2, $3, $4, $5 FROM documents WHERE id = $1 AND deleted_at IS NULL \
             ON CONFLICT (doc_id, seq) DO UPDATE SET state = excluded.state, \
                 state_vector = excluded.state_vector, created_at = excluded.created_at",
        )
        .bind(doc_id)
        .bind(seq)
        .bind(state)
        .bind(state_vector)
        .bind(to_unix_millis(SystemTime::now()))
        .execute(&self.pool)
        .await
        .map_err(db_err("write_snapshot"))?;
        written_unless_deleted(done.rows_affected(), doc_id)
    }

    pub(crate) async fn prune_log(
        &self,
        doc_id: i64,
        before: SystemTime,
    ) -> Result<u64, StoreError> {
        // Without a snapshot the subquery is NULL and nothing matches.
        let done = sqlx::query(
            "DELETE FROM updates WHERE doc_id = ? AND created_at < ? \
             AND seq <= (SELECT max(seq) FROM snapshots WHERE doc_id = ?)",
        )
        .bind(doc_id)
        .bind(to_unix_millis(before))
        .bind(doc_id)
        .execute(&self.pool)
        .await
        .map_err(db_err("prune_log"))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn put_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revocations (kind, value, revoked_at) VALUES (?, ?, ?) \
             ON CONFLICT (kind, value) DO UPDATE SET revoked_at = excluded.revoked_at",
        )
        .bind(kind.as_str())
        .bind(value)
        .bind(to_unix_millis(at))
        .execute(&self.pool)
        .await
        .map_err(db_err("put_revocation"))?;
        Ok(())
    }

    pub(crate) async fn delete_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM revocations WHERE kind = ? AND value = ?")
            .bind(kind.as_str())
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db_err("delete_revocation"))?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT kind, value, revoked_at FROM revocations")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("revocations"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, value, at)| {
                Some(Revocation {
                    kind: RevocationKind::parse(&kind)?,
                    value,
                    revoked_at: from_unix_millis(at),
                })
            })
            .collect())
    }

    pub(crate) async fn log_range(
        &self,
        doc_id: i64,
        from_seq: i64,
        to_seq: i64,
    ) -> Result<Vec<LogRow>, StoreError> {
        let found = sqlx::query(
            "SELECT seq, created_at, size, author, data FROM updates \
             WHERE doc_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
        )
        .bind(doc_id)
        .bind(from_seq)
        .bind(to_seq)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("log_range"))?;
        decode_all(&found, "log_range", |r| rows::log_row(r, true))
    }

    pub(crate) async fn snapshot_at_or_before(
        &self,
        doc_id: i64,
        at_seq: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        let found = sqlx::query(
            "SELECT seq, state, state_vector, created_at FROM snapshots \
             WHERE doc_id = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(doc_id)
        .bind(at_seq)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("snapshot_at_or_before"))?;
        decode_opt(found, "snapshot_at_or_before", rows::snapshot)
    }

    crate::common::shared_methods!();
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
            .bind(to_unix_millis(r.created_at))
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
