//! PostgreSQL backend. Times are `timestamptz`; batches are inserted with one
//! `INSERT ... SELECT FROM UNNEST(arrays)` statement (one round trip, no COPY:
//! sqlx does not set TCP_NODELAY and COPY stalls on Nagle + delayed ACK).

use std::str::FromStr;
use std::time::SystemTime;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Row, TypeInfo, ValueRef};

use crate::common::Dialect;
use crate::error::{StoreError, db_err, written_unless_deleted};
use crate::model::{
    DocumentInfo, Label, LoadedDoc, LogRow, NewUpdate, Revocation, RevocationKind, Snapshot,
};
use crate::rows::{self, StoredRow, decode_all, decode_opt};
use crate::{MIGRATE_PG, StoreOptions};

/// The dialect-specific parts of the methods shared with SQLite.
const DIALECT: Dialect = Dialect {
    // Bytewise whatever the database's locale (matching SQLite); matches the partial index
    // `documents_live_name_idx`.
    name_bytewise: r#"d.name COLLATE "C""#,
    // FOR KEY SHARE: as in write_snapshot, never a label on a deleted document.
    put_label: "INSERT INTO labels (doc_id, seq, name, created_at) \
                SELECT id, $2, $3, $4 FROM documents \
                WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE \
                ON CONFLICT (doc_id, name) DO NOTHING RETURNING name, seq, created_at",
    begin_write: "BEGIN",
    // FOR UPDATE (an UPDATE alone takes a weaker lock): conflicts with the FOR KEY SHARE of
    // appends' foreign key checks, snapshot writes and label inserts, so each of them either
    // commits before the purge (which then removes its rows) or waits and then sees the
    // tombstone (migration 0004's insert trigger removes late log rows).
    lock_live_doc: "SELECT id FROM documents WHERE name = $1 AND deleted_at IS NULL FOR UPDATE",
};

/// How this backend stores a time.
fn db_time(t: SystemTime) -> DateTime<Utc> {
    DateTime::from(t)
}

/// A refused server certificate reads like an outage ("error communicating with database");
/// say what to check instead.
fn tls_hint(e: StoreError) -> StoreError {
    const HINT: &str = " (TLS: the server's certificate was refused; check sslrootcert= names \
        the CA that signed it and, for sslmode=verify-full, that the URL's host is a name in \
        the certificate)";
    match e {
        StoreError::Unavailable(m) if m.contains("peer certificate") => {
            StoreError::Unavailable(m + HINT)
        }
        StoreError::Query(m) if m.contains("peer certificate") => StoreError::Query(m + HINT),
        other => other,
    }
}

/// Connections kept open and warmed at start-up.
const WARM_CONNECTIONS: u32 = 2;

/// Postgres-backed store: a connection pool, nothing else.
#[derive(Clone, Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Validates the URL, proves the server is reachable with one direct
    /// connection (so a refused connection fails at once instead of being
    /// retried by the pool until its timeout), then builds a lazy pool.
    pub(crate) async fn open(url: &str, opts: &StoreOptions) -> Result<PgStore, StoreError> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(format!("postgres url: {e}")))?;
        if connect.get_application_name().is_none() {
            connect = connect.application_name("tandem");
        }

        match tokio::time::timeout(opts.connect_timeout, PgConnection::connect_with(&connect)).await
        {
            Ok(Ok(conn)) => {
                // Closing politely is best effort; the check already succeeded.
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(tls_hint(StoreError::from_sqlx("connect", e))),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "connect: no answer from {}:{} within {:?}",
                    connect.get_host(),
                    connect.get_port(),
                    opts.connect_timeout
                )));
            }
        }

        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            // Loads after a restart should not pay for connection set-up (~3 ms here).
            .min_connections(WARM_CONNECTIONS.min(opts.max_connections.max(1)))
            .acquire_timeout(opts.connect_timeout)
            // sqlx pings before every acquire by default: a whole extra round
            // trip per commit. Only connections that sat idle for a while are
            // worth checking (a server restart or NAT timeout kills those).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= crate::PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(connect);
        Ok(PgStore { pool })
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATE_PG
            .run(&self.pool)
            .await
            .map_err(StoreError::from_migrate)
    }

    /// Opens the pool's warm connections and runs a query over every table on each, so the
    /// first document loads after start-up find connected backends with warm catalog caches
    /// (a fresh Postgres backend's first query on a table costs a few milliseconds).
    pub(crate) async fn warm_up(&self) -> Result<(), StoreError> {
        let mut conns = Vec::new();
        for _ in 0..WARM_CONNECTIONS.min(self.pool.options().get_max_connections()) {
            let mut conn = self.pool.acquire().await.map_err(db_err("warm_up"))?;
            sqlx::query(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM documents LIMIT 1) d) \
                      + (SELECT count(*) FROM (SELECT 1 FROM updates LIMIT 1) u) \
                      + (SELECT count(*) FROM (SELECT 1 FROM snapshots LIMIT 1) s)",
            )
            .execute(&mut *conn)
            .await
            .map_err(db_err("warm_up"))?;
            conns.push(conn);
        }
        Ok(())
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
        // One snapshot-isolated read: a compaction + prune running between the
        // two SELECTs must not make us miss the rows it folded into a snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_err("load"))?;
        let snapshot = sqlx::query(
            "SELECT seq, state, state_vector, created_at FROM snapshots \
             WHERE doc_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(doc_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("load"))?;
        let snapshot = decode_opt(snapshot, "load", rows::snapshot)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let updates = sqlx::query(
            "SELECT seq, created_at, size, author, data FROM updates \
             WHERE doc_id = $1 AND seq > $2 ORDER BY seq",
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
        let mut doc_ids = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        let mut sizes = Vec::with_capacity(rows.len());
        let mut authors = Vec::with_capacity(rows.len());
        let mut datas = Vec::with_capacity(rows.len());
        for r in rows {
            doc_ids.push(r.doc_id);
            seqs.push(r.seq);
            times.push(DateTime::<Utc>::from(r.created_at));
            sizes.push(size_i32(r.data.len())?);
            authors.push(r.author.as_deref());
            datas.push(&r.data[..]);
        }
        // A single statement is a single transaction: all rows or none.
        sqlx::query(
            "INSERT INTO updates (doc_id, seq, created_at, size, author, data) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], \
                                  $4::int[], $5::text[], $6::bytea[]) \
             ON CONFLICT (doc_id, seq) DO NOTHING",
        )
        .bind(doc_ids)
        .bind(seqs)
        .bind(times)
        .bind(sizes)
        .bind(authors)
        .bind(datas)
        .execute(&self.pool)
        .await
        .map_err(db_err("append"))?;
        Ok(())
    }

    pub(crate) async fn write_snapshot(
        &self,
        doc_id: i64,
        seq: i64,
        state: &[u8],
        state_vector: &[u8],
    ) -> Result<(), StoreError> {
        // FOR KEY SHARE: a concurrent delete_document (FOR UPDATE) either waits for this
        // write, then removes the snapshot, or commits first, and this row lock then sees
        // deleted_at and inserts nothing. Does not wait for appends (FOR NO KEY UPDATE).
        let done = sqlx::query(
            "INSERT INTO snapshots (doc_id, seq, state, state_vector, created_at) \
             SELECT id, $2, $3, $4, $5 FROM documents \
             WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE \
             ON CONFLICT (doc_id, seq) DO UPDATE SET state = EXCLUDED.state, \
                 state_vector = EXCLUDED.state_vector, created_at = EXCLUDED.created_at",
        )
        .bind(doc_id)
        .bind(seq)
        .bind(state)
        .bind(state_vector)
        .bind(DateTime::<Utc>::from(SystemTime::now()))
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
            "DELETE FROM updates WHERE doc_id = $1 AND created_at < $2 \
             AND seq <= (SELECT max(seq) FROM snapshots WHERE doc_id = $1)",
        )
        .bind(doc_id)
        .bind(DateTime::<Utc>::from(before))
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
            "INSERT INTO revocations (kind, value, revoked_at) VALUES ($1, $2, $3) \
             ON CONFLICT (kind, value) DO UPDATE SET revoked_at = EXCLUDED.revoked_at",
        )
        .bind(kind.as_str())
        .bind(value)
        .bind(DateTime::<Utc>::from(at))
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
        let done = sqlx::query("DELETE FROM revocations WHERE kind = $1 AND value = $2")
            .bind(kind.as_str())
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db_err("delete_revocation"))?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let rows: Vec<(String, String, DateTime<Utc>)> =
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
                    revoked_at: at.into(),
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
             WHERE doc_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
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
             WHERE doc_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
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

/// The `size` column is `int`; Postgres caps a bytea at 1 GiB anyway.
fn size_i32(len: usize) -> Result<i32, StoreError> {
    i32::try_from(len)
        .map_err(|_| StoreError::Query(format!("append: update of {len} bytes is too large")))
}

impl StoredRow for PgRow {
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        // `size` is int4; ids, seqs and counts are int8.
        if self.try_get_raw(col)?.type_info().name() == "INT4" {
            return Ok(self.try_get::<Option<i32>, _>(col)?.map(i64::from));
        }
        self.try_get(col)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }

    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(col)
    }

    fn opt_time(&self, col: &str) -> Result<Option<SystemTime>, sqlx::Error> {
        Ok(self
            .try_get::<Option<DateTime<Utc>>, _>(col)?
            .map(Into::into))
    }
}
