//! PostgreSQL backend. Times are `timestamptz`; batches are inserted with one
//! `INSERT ... SELECT FROM UNNEST(arrays)` statement (one round trip, no COPY:
//! sqlx does not set TCP_NODELAY and COPY stalls on Nagle + delayed ACK).

use std::str::FromStr;
use std::time::SystemTime;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Postgres, Row, TypeInfo, ValueRef};

use crate::error::{StoreError, db_err};
use crate::model::NewUpdate;
use crate::rows::StoredRow;
use crate::sql_store::{Dialect, SqlStore};
use crate::{MIGRATE_PG, StoreOptions};

/// The Postgres dialect of the shared methods.
#[derive(Debug)]
pub(crate) enum Pg {}

/// Postgres-backed store.
pub(crate) type PgStore = SqlStore<Pg>;

impl Dialect for Pg {
    type Db = Postgres;
    type Time = DateTime<Utc>;

    // Bytewise whatever the database's locale (matching SQLite); matches the partial index
    // `documents_live_name_idx`.
    const NAME_BYTEWISE: &'static str = r#"d.name COLLATE "C""#;
    // FOR KEY SHARE: as in WRITE_SNAPSHOT, never a label on a deleted document.
    const PUT_LABEL: &'static str = "INSERT INTO labels (doc_id, seq, name, created_at) \
        SELECT id, $2, $3, $4 FROM documents \
        WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE \
        ON CONFLICT (doc_id, name) DO NOTHING RETURNING name, seq, created_at";
    // FOR KEY SHARE: a concurrent delete_document (FOR UPDATE) either waits for this write,
    // then removes the snapshot, or commits first, and this row lock then sees deleted_at
    // and inserts nothing. Does not wait for appends (FOR NO KEY UPDATE).
    const WRITE_SNAPSHOT: &'static str = "INSERT INTO snapshots (doc_id, seq, state, state_vector, created_at) \
        SELECT id, $2, $3, $4, $5 FROM documents \
        WHERE id = $1 AND deleted_at IS NULL FOR KEY SHARE \
        ON CONFLICT (doc_id, seq) DO UPDATE SET state = EXCLUDED.state, \
            state_vector = EXCLUDED.state_vector, created_at = EXCLUDED.created_at";
    // Snapshot isolation: both SELECTs of a load see the same data.
    const BEGIN_READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const BEGIN_WRITE: &'static str = "BEGIN";
    // FOR UPDATE (an UPDATE alone takes a weaker lock): conflicts with the FOR KEY SHARE of
    // appends' foreign key checks, snapshot writes and label inserts, so each of them either
    // commits before the purge (which then removes its rows) or waits and then sees the
    // tombstone (migration 0004's insert trigger removes late log rows).
    const LOCK_LIVE_DOC: &'static str =
        "SELECT id FROM documents WHERE name = $1 AND deleted_at IS NULL FOR UPDATE";

    fn migrator() -> &'static Migrator {
        &MIGRATE_PG
    }

    fn time(t: SystemTime) -> DateTime<Utc> {
        DateTime::from(t)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
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

impl SqlStore<Pg> {
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
        Ok(SqlStore { pool })
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

    /// See [`Store::append`](crate::Store::append): one `INSERT ... SELECT FROM UNNEST`.
    pub(crate) async fn append(&self, rows: &[NewUpdate]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let Columns {
            doc_ids,
            seqs,
            times,
            sizes,
            authors,
            datas,
        } = Columns::of(rows)?;
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
}

impl PgStore {
    /// See [`Store::append_assigning`](crate::Store::append_assigning): one statement that
    /// locks the documents' rows (in id order, so two servers never deadlock), numbers the
    /// rows after each document's `last_seq` in batch order, and inserts them.
    pub(crate) async fn append_assigning(
        &self,
        rows: &[NewUpdate],
    ) -> Result<Vec<i64>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let Columns {
            doc_ids,
            times,
            sizes,
            authors,
            datas,
            ..
        } = Columns::of(rows)?;
        let given: Vec<(i64, i64)> = sqlx::query_as(
            "WITH i AS ( \
                 SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::int[], \
                                      $4::text[], $5::bytea[]) \
                     WITH ORDINALITY AS t(doc_id, created_at, size, author, data, ord)), \
             l AS ( \
                 SELECT id, last_seq FROM documents \
                 WHERE id IN (SELECT doc_id FROM i) AND deleted_at IS NULL \
                 ORDER BY id FOR UPDATE) \
             INSERT INTO updates (doc_id, seq, created_at, size, author, data) \
             SELECT i.doc_id, \
                    l.last_seq + row_number() OVER (PARTITION BY i.doc_id ORDER BY i.ord), \
                    i.created_at, i.size, i.author, i.data \
             FROM i JOIN l ON l.id = i.doc_id \
             RETURNING doc_id, seq",
        )
        .bind(&doc_ids)
        .bind(times)
        .bind(sizes)
        .bind(authors)
        .bind(datas)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("append"))?;
        Ok(number_in_order(&doc_ids, given))
    }
}

impl PgStore {
    /// See [`Store::last_seqs`](crate::Store::last_seqs).
    pub(crate) async fn last_seqs(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT name, last_seq FROM documents WHERE name = ANY($1) AND deleted_at IS NULL",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("last_seqs"))
    }
}

/// Hands the numbers the database gave each document back to that document's rows, in
/// batch order (within a document, numbers ascend with the batch order). Rows the database
/// dropped (deleted document) get 0.
fn number_in_order(doc_ids: &[i64], mut given: Vec<(i64, i64)>) -> Vec<i64> {
    given.sort_unstable();
    let mut next: std::collections::HashMap<i64, std::collections::VecDeque<i64>> =
        std::collections::HashMap::new();
    for (doc, seq) in given {
        next.entry(doc).or_default().push_back(seq);
    }
    doc_ids
        .iter()
        .map(|d| next.get_mut(d).and_then(|q| q.pop_front()).unwrap_or(0))
        .collect()
}

/// Rows to append as one array per column, for `UNNEST`.
struct Columns<'a> {
    doc_ids: Vec<i64>,
    seqs: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    sizes: Vec<i32>,
    authors: Vec<Option<&'a str>>,
    datas: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [NewUpdate]) -> Result<Columns<'a>, StoreError> {
        let mut c = Columns {
            doc_ids: Vec::with_capacity(rows.len()),
            seqs: Vec::with_capacity(rows.len()),
            times: Vec::with_capacity(rows.len()),
            sizes: Vec::with_capacity(rows.len()),
            authors: Vec::with_capacity(rows.len()),
            datas: Vec::with_capacity(rows.len()),
        };
        for r in rows {
            c.doc_ids.push(r.doc_id);
            c.seqs.push(r.seq);
            c.times.push(Pg::time(r.created_at));
            c.sizes.push(size_i32(r.data.len())?);
            c.authors.push(r.author.as_deref());
            c.datas.push(&r.data[..]);
        }
        Ok(c)
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_go_back_to_their_rows_in_batch_order() {
        let given = vec![(2, 8), (1, 5), (2, 7), (1, 4)];
        assert_eq!(
            super::number_in_order(&[1, 2, 1, 2, 3], given),
            vec![4, 7, 5, 8, 0]
        );
    }
}
