//! Durable storage for Tandem documents: an append-only update log plus
//! snapshots, on PostgreSQL or an embedded SQLite file.
//!
//! This crate is the only place in Tandem that speaks SQL. It stores opaque
//! bytes (it knows nothing about Yjs) and never exposes driver types: every
//! failure is a [`StoreError`].
//!
//! - [`Store`]: one handle per process, cheap to clone, one method per query.
//! - [`Writer`]: the group-commit task rooms append through; it batches rows
//!   from all documents into few transactions and retries while the database
//!   is down.
//!
//! Tests run against SQLite always and against Postgres when
//! `TANDEM_TEST_DATABASE_URL` is set (each test in its own schema); timings:
//! `cargo test -p crdt-store --test timing -- --ignored --nocapture`.

#![warn(missing_docs)]

mod error;
mod model;
mod outbox;
mod postgres;
mod queries;
mod rows;
mod sql_store;
mod sqlite;
mod writer;

use std::time::{Duration, SystemTime};

pub use error::StoreError;
pub use model::{
    Backend, DocRef, DocumentInfo, Label, LoadedDoc, LogRow, NewUpdate, Revocation, RevocationKind,
    Snapshot, SnapshotInfo,
};
pub use outbox::{CursorMove, Delivery, NewDelivery, OutboxStats, WebhookCursor};
pub use writer::{AssignedSeqs, Backlog, Writer, WriterOptions};

use postgres::PgStore;
use queries::{Direction, DocumentList};
use sqlite::SqliteStore;

/// Postgres schema, embedded at build time (path relative to this crate's Cargo.toml).
pub(crate) static MIGRATE_PG: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
/// SQLite schema, embedded at build time.
pub(crate) static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A pooled connection idle at least this long is pinged before use; busier
/// connections are trusted (a failure on them surfaces as `Unavailable`).
pub(crate) const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// A load failing faster than this met a dead pooled connection, not an outage.
const FAST_FAILURE: Duration = Duration::from_millis(250);

/// Connection settings shared by both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Upper bound on pooled connections. The writer uses one at a time; the rest
    /// serve loads, history pages and compaction. (`sqlite::memory:` always uses 1.)
    pub max_connections: u32,
    /// How long to wait for a connection (opening one, or a free one from the
    /// pool) before failing with [`StoreError::Unavailable`]. Keeps startup and
    /// requests from hanging on an unreachable database.
    pub connect_timeout: Duration,
    /// Longest a [`Store::load`] may take before it fails with
    /// [`StoreError::Unavailable`]. Without it a load on a pooled connection
    /// whose network path silently drops packets waits for TCP to give up
    /// (many minutes), and every client joining that document waits with it;
    /// with it they are refused and retry. Generous, because a large document
    /// without a snapshot legitimately takes a while to read.
    pub load_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            load_timeout: Duration::from_secs(30),
        }
    }
}

/// Handle to the database; cheap to clone (clones share one connection pool).
/// Dispatches to the backend with a plain `match` (no trait objects), so each
/// backend keeps its own SQL dialect and types.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
    /// [`StoreOptions::load_timeout`].
    load_timeout: Duration,
}

#[derive(Clone)]
enum Inner {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Runs the same expression against whichever backend `$store` holds.
macro_rules! dispatch {
    ($store:expr, $b:ident => $e:expr) => {
        match &$store.inner {
            Inner::Postgres($b) => $e,
            Inner::Sqlite($b) => $e,
        }
    };
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to the database named by `url`:
    /// `sqlite://path/to/file.db` (parent folders and the file are created if
    /// missing; WAL, synchronous=NORMAL, busy timeout), `sqlite::memory:` (for
    /// tests), or `postgres://...` / `postgresql://...`. Anything else is
    /// [`StoreError::InvalidUrl`].
    ///
    /// Fails within `opts.connect_timeout` with [`StoreError::Unavailable`] when
    /// the database cannot be reached, so a misconfigured server stops at startup
    /// with a clear message. Does not migrate: call [`Store::migrate`].
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        let inner = match scheme {
            "postgres" | "postgresql" => Inner::Postgres(PgStore::open(url, opts).await?),
            "sqlite" => Inner::Sqlite(SqliteStore::open(url, opts).await?),
            _ => {
                // Never echo the URL itself: it may carry a password.
                return Err(StoreError::InvalidUrl(format!(
                    "unsupported scheme {scheme:?}; expected sqlite://path, sqlite::memory:, \
                     postgres:// or postgresql://"
                )));
            }
        };
        let store = Store {
            inner,
            load_timeout: opts.load_timeout,
        };
        tracing::debug!(backend = %store.backend(), "store opened");
        Ok(store)
    }

    /// Brings the schema up to date (idempotent; safe to run on every start and
    /// from several processes at once on Postgres, which takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.migrate().await)
    }

    /// Opens and warms a few connections so the first loads after start-up are as fast as
    /// later ones. Postgres only; a no-op on SQLite.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Postgres(b) => b.warm_up().await,
            Inner::Sqlite(_) => Ok(()),
        }
    }

    /// Which backend this store talks to.
    pub fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Postgres(_) => Backend::Postgres,
            Inner::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// One trivial round trip, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.ping().await)
    }

    /// Loads a document by name ([`StoreError::Deleted`] if it was deleted: a deleted
    /// document is never recreated). Returns its id (`None` if it has no row: never
    /// written; loading never creates one), the newest snapshot (if any) and every log row
    /// after the snapshot's seq in seq order, read from one consistent database snapshot so
    /// a concurrent compaction cannot leave a gap. Writes nothing.
    ///
    /// Fails with [`StoreError::Unavailable`] after [`StoreOptions::load_timeout`]
    /// (the read is abandoned).
    ///
    /// A retryable failure that came at once is tried once more: after the database
    /// restarted, pooled connections are dead until used and fail on first use; the retry
    /// gets a fresh connection instead of refusing a client of a database that is back. (A
    /// slow failure is a real outage: retrying would only double the client's wait.)
    pub async fn load(&self, name: &str) -> Result<LoadedDoc, StoreError> {
        let load = async {
            let started = std::time::Instant::now();
            match dispatch!(self, b => b.load(name).await) {
                Err(e) if e.is_retryable() && started.elapsed() < FAST_FAILURE => {
                    dispatch!(self, b => b.load(name).await)
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.load_timeout, load).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "load: no answer within {:?}",
                self.load_timeout
            ))),
        }
    }

    /// Id of document `name`, creating its row if there is none (one statement);
    /// [`StoreError::Deleted`] if it was deleted (a tombstone is never revived). For writes
    /// that need a row before anything is logged; the writer creates rows itself
    /// ([`Writer::append_to`]).
    pub async fn create_document(&self, name: &str) -> Result<i64, StoreError> {
        match dispatch!(self, b => b.upsert_document(name).await)? {
            (_, true) => Err(StoreError::Deleted(name.to_owned())),
            (id, false) => Ok(id),
        }
    }

    /// Id of the row of document `name`, created if absent, tombstone included (rows
    /// appended to a tombstone are dropped by the database, as for any late write).
    pub(crate) async fn row_for_log(&self, name: &str) -> Result<i64, StoreError> {
        Ok(dispatch!(self, b => b.upsert_document(name).await)?.0)
    }

    /// Appends rows (from any number of documents) in ONE transaction: all or
    /// none. Idempotent on `(doc_id, seq)`: rows already stored are skipped, so a
    /// batch whose commit outcome was unknown can simply be sent again. Rows of a
    /// deleted document are dropped silently (a late write from the queue of a room
    /// that was just deleted must neither fail the batch nor revive the log).
    ///
    /// The database keeps each document's statistics ([`DocumentInfo`]) in step,
    /// counting only rows actually inserted.
    ///
    /// Postgres: one `INSERT ... SELECT * FROM UNNEST(arrays) ON CONFLICT DO
    /// NOTHING`. SQLite: multi-row VALUES inserts inside one transaction.
    pub async fn append(&self, rows: &[NewUpdate]) -> Result<(), StoreError> {
        dispatch!(self, b => b.append(rows).await)
    }

    /// Appends `rows` giving each the next sequence number of its document, as the database
    /// sees it, instead of `row.seq`: several servers (a cluster) append to one document, so
    /// no server can number rows alone. Returns the numbers given, in `rows`' order.
    ///
    /// Each document's row is locked until the statement commits, so a document's rows
    /// commit in sequence order across servers: whoever reads rows after a seq never sees a
    /// later row appear before an earlier one. Rows of a deleted document are dropped (their
    /// number is then 0). Postgres only: SQLite serves one process.
    pub async fn append_assigning(&self, rows: &[NewUpdate]) -> Result<Vec<i64>, StoreError> {
        match &self.inner {
            Inner::Postgres(b) => b.append_assigning(rows).await,
            Inner::Sqlite(_) => Err(StoreError::Query(
                "numbering rows across servers needs Postgres".into(),
            )),
        }
    }

    /// The newest sequence number of each named document that exists (not deleted), in one
    /// query: how a cluster node finds the documents whose log moved past what it has.
    /// Postgres only.
    pub async fn last_seqs(&self, names: &[String]) -> Result<Vec<(String, i64)>, StoreError> {
        match &self.inner {
            Inner::Postgres(b) => b.last_seqs(names).await,
            Inner::Sqlite(_) => Err(StoreError::Query(
                "following other servers' writes needs Postgres".into(),
            )),
        }
    }

    /// Stores a snapshot covering log rows up to and including `seq`. Writing the
    /// same `(doc_id, seq)` again replaces it (idempotent retry).
    /// [`StoreError::Deleted`] if the document was deleted (nothing is stored).
    pub async fn write_snapshot(
        &self,
        doc_id: i64,
        seq: i64,
        state: &[u8],
        state_vector: &[u8],
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.write_snapshot(doc_id, seq, state, state_vector).await)
    }

    /// Retention: deletes log rows of `doc_id` created before `before` AND
    /// covered by the newest snapshot (seq <= its seq). Rows no snapshot covers
    /// are never deleted. Returns the number of rows removed.
    pub async fn prune_log(&self, doc_id: i64, before: SystemTime) -> Result<u64, StoreError> {
        dispatch!(self, b => b.prune_log(doc_id, before).await)
    }

    /// Records a revocation (replacing an earlier one of the same token or user).
    pub async fn put_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.put_revocation(kind, value, at).await)
    }

    /// Removes a revocation; returns whether there was one.
    pub async fn delete_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, b => b.delete_revocation(kind, value).await)
    }

    /// Every stored revocation.
    pub async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        dispatch!(self, b => b.revocations().await)
    }

    /// A page of the history: at most `limit` log rows with seq > `after_seq`,
    /// ascending. `with_data = false` leaves [`LogRow::data`] empty and does not
    /// read the bytes (for listing). Continue with the last row's seq.
    pub async fn log_page(
        &self,
        doc_id: i64,
        after_seq: i64,
        limit: u32,
        with_data: bool,
    ) -> Result<Vec<LogRow>, StoreError> {
        dispatch!(self, b => b.log_page(doc_id, Direction::After, after_seq, limit, with_data).await)
    }

    /// A page of the history backwards: at most `limit` log rows with seq < `before_seq`,
    /// descending (the newest first; `before_seq = i64::MAX` starts at the newest). Like
    /// [`Store::log_page`] otherwise; continue with the last row's seq. One range scan of
    /// the log's primary key wherever the page lies in the log.
    pub async fn log_page_desc(
        &self,
        doc_id: i64,
        before_seq: i64,
        limit: u32,
        with_data: bool,
    ) -> Result<Vec<LogRow>, StoreError> {
        dispatch!(self, b => b.log_page(doc_id, Direction::Before, before_seq, limit, with_data).await)
    }

    /// The seq of the newest logged change accepted at or before `t` (by accept time; among
    /// changes accepted in the same millisecond, the highest seq); 0 if the log holds none.
    /// Only rows still in the log count: a result below
    /// [`DocumentInfo::first_logged_seq`] means `t` lies in history pruned by retention.
    /// One backward probe of the `(doc_id, created_at)` index, whatever the log's length.
    pub async fn seq_at_time(&self, doc_id: i64, t: SystemTime) -> Result<i64, StoreError> {
        dispatch!(self, b => b.seq_at_time(doc_id, t).await)
    }

    /// A document's metadata and statistics by name; a deleted document is reported with
    /// [`DocumentInfo::deleted_at`] set. `None` if no document of that name ever existed.
    /// Never creates one.
    pub async fn document(&self, name: &str) -> Result<Option<DocumentInfo>, StoreError> {
        dispatch!(self, b => b.document(name).await)
    }

    /// A page of live (not deleted) documents ordered by name (bytewise, i.e. by Unicode
    /// code point, on both backends): at most `limit`, only names starting with `prefix`
    /// (every character of it is literal: `%` and `_` are not wildcards), only names
    /// greater than `after_name` (the last name of the previous page). Reads each listed
    /// document's row and a few primary-key probes, never its log.
    pub async fn list_documents(
        &self,
        prefix: Option<&str>,
        after_name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let list = DocumentList::new(prefix, after_name);
        dispatch!(self, b => b.list_documents(&list, limit).await)
    }

    /// Id of the live document called `name`; `None` if there is none (never existed, or
    /// deleted: [`Store::document`] tells which). Never creates one.
    pub async fn find_doc_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        dispatch!(self, b => b.find_doc_id(name).await)
    }

    /// Creates label `name` pointing at `seq`. [`StoreError::Conflict`] if the document
    /// already has a label of that name (labels are never moved silently),
    /// [`StoreError::Deleted`] if the document is deleted. The caller checks `seq` and the
    /// name's form.
    pub async fn put_label(&self, doc_id: i64, name: &str, seq: i64) -> Result<Label, StoreError> {
        if let Some(label) = dispatch!(self, b => b.put_label(doc_id, name, seq).await)? {
            return Ok(label);
        }
        match self.label(doc_id, name).await? {
            Some(existing) => Err(StoreError::Conflict(format!(
                "label {name:?} exists (at seq {})",
                existing.seq
            ))),
            None => Err(error::doc_gone(doc_id)),
        }
    }

    /// The document's labels, ordered by seq, then by name (bytewise).
    pub async fn labels(&self, doc_id: i64) -> Result<Vec<Label>, StoreError> {
        let mut labels = dispatch!(self, b => b.labels(doc_id).await)?;
        labels.sort_by(|a, b| (a.seq, &a.name).cmp(&(b.seq, &b.name)));
        Ok(labels)
    }

    /// One label by name.
    pub async fn label(&self, doc_id: i64, name: &str) -> Result<Option<Label>, StoreError> {
        dispatch!(self, b => b.label(doc_id, name).await)
    }

    /// Removes a label; returns whether there was one.
    pub async fn delete_label(&self, doc_id: i64, name: &str) -> Result<bool, StoreError> {
        dispatch!(self, b => b.delete_label(doc_id, name).await)
    }

    /// Deletes the live document called `name`: in one transaction its log, snapshots and
    /// labels are removed and its row is kept as a tombstone (`deleted_at` set), so the
    /// name is never served again: [`Store::load`] fails with [`StoreError::Deleted`],
    /// appends to it are dropped, snapshot and label writes fail. Returns false if there is
    /// no such live document. Safe against writes racing it: each either lands before the
    /// delete (and is removed by it) or sees the tombstone.
    pub async fn delete_document(&self, name: &str) -> Result<bool, StoreError> {
        dispatch!(self, b => b.delete_document(name).await)
    }

    /// Names of all deleted documents, for a refusal set loaded at start-up.
    pub async fn deleted_documents(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, b => b.deleted_documents().await)
    }

    /// Every snapshot of a document, ascending by seq (for a whole-store export).
    pub async fn snapshots(&self, doc_id: i64) -> Result<Vec<Snapshot>, StoreError> {
        dispatch!(self, b => b.snapshots(doc_id).await)
    }

    /// Whether the store holds no document (live or deleted) and no revocation: an import
    /// refuses any other store unless forced.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        dispatch!(self, b => b.is_empty().await)
    }

    /// Import: creates the row of document `name` with the creation (and, for a tombstone,
    /// deletion) time it had in the exported store and returns its id.
    /// [`StoreError::Conflict`] if a document of that name exists. Add the log with
    /// [`Store::append`], then snapshots and labels, then call [`Store::finish_import`].
    pub async fn import_document(
        &self,
        name: &str,
        created_at: SystemTime,
        deleted_at: Option<SystemTime>,
    ) -> Result<i64, StoreError> {
        dispatch!(self, b => b.import_document(name, created_at, deleted_at).await)
    }

    /// Import: restores a snapshot with the time it was written.
    pub async fn import_snapshot(
        &self,
        doc_id: i64,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.import_snapshot(doc_id, snapshot).await)
    }

    /// Import: restores a label with the time it was made.
    pub async fn import_label(&self, doc_id: i64, label: &Label) -> Result<(), StoreError> {
        dispatch!(self, b => b.import_label(doc_id, label).await)
    }

    /// Import, last step of a document: sets [`DocumentInfo::last_seq`] and
    /// [`DocumentInfo::last_change_at`] as exported (a pruned log or a tombstone no longer
    /// holds the rows they were computed from).
    pub async fn finish_import(
        &self,
        doc_id: i64,
        last_seq: i64,
        last_change_at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.finish_import(doc_id, last_seq, last_change_at).await)
    }

    /// Log rows with seq in `(from_seq, to_seq]`, with data, ascending: what to
    /// apply on top of a snapshot to reconstruct the document at `to_seq`.
    pub async fn log_range(
        &self,
        doc_id: i64,
        from_seq: i64,
        to_seq: i64,
    ) -> Result<Vec<LogRow>, StoreError> {
        dispatch!(self, b => b.log_range(doc_id, from_seq, to_seq).await)
    }

    /// Newest snapshot with seq <= `at_seq`: the starting point for
    /// reconstructing the document as it was at `at_seq`.
    pub async fn snapshot_at_or_before(
        &self,
        doc_id: i64,
        at_seq: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        dispatch!(self, b => b.snapshot_at_or_before(doc_id, at_seq).await)
    }
}

/// The webhook outbox (`--webhook-url`): deliveries are queued here before they are attempted
/// and removed once answered 2xx; per document, a cursor says which seqs were announced.
impl Store {
    /// Marks the first start of a server with webhooks; at that start every existing document
    /// gets a cursor at its current seq, so its old history is not announced. Returns whether
    /// this was that start. Idempotent.
    pub async fn webhooks_begin(&self) -> Result<bool, StoreError> {
        dispatch!(self, b => b.webhooks_begin().await)
    }

    /// Names of the live documents whose log holds changes past their cursor (without a
    /// cursor: any change), oldest document first.
    pub async fn webhooks_behind(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, b => b.webhooks_behind().await)
    }

    /// Where the announcements of document `name` stand; `None` if no such document exists.
    pub async fn webhook_cursor(&self, name: &str) -> Result<Option<WebhookCursor>, StoreError> {
        dispatch!(self, b => b.webhook_cursor(name).await)
    }

    /// Queues `deliveries` (an event already queued for a URL under the same
    /// [`NewDelivery::event_id`] is skipped) and applies `cursor`, all in one transaction.
    /// Returns false, queueing nothing, when the cursor was no longer at
    /// [`CursorMove::from`] (another task or server announced those changes).
    pub async fn enqueue_webhooks(
        &self,
        cursor: Option<CursorMove>,
        deliveries: &[NewDelivery],
    ) -> Result<bool, StoreError> {
        dispatch!(self, b => b.enqueue_webhooks(cursor, deliveries).await)
    }

    /// Claims at most `limit` deliveries due at `now` (the longest due first; returned in
    /// queueing order): their next attempt moves to `lease_until`, so no other server on the
    /// database takes them meanwhile and, should this one die, they are due again then.
    /// Report each outcome with [`Store::webhook_delivered`] or [`Store::webhook_retry`].
    pub async fn claim_webhooks(
        &self,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        dispatch!(self, b => b.claim_webhooks(now, lease_until, limit).await)
    }

    /// Gives claimed deliveries back before their lease ends, due at `at` (a server that
    /// stops in the middle of a batch).
    pub async fn release_webhooks(&self, ids: &[i64], at: SystemTime) -> Result<(), StoreError> {
        dispatch!(self, b => b.release_webhooks(ids, at).await)
    }

    /// Removes delivery `id`: its receiver answered 2xx.
    pub async fn webhook_delivered(&self, id: i64) -> Result<(), StoreError> {
        dispatch!(self, b => b.webhook_delivered(id).await)
    }

    /// Counts a failed attempt of delivery `id` (`error` says why) and schedules the next
    /// attempt at `next`.
    pub async fn webhook_retry(
        &self,
        id: i64,
        next: SystemTime,
        error: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.webhook_retry(id, next, error).await)
    }

    /// Deliveries waiting, how many of them failed at least `failing_after` times, and when
    /// the next is due.
    pub async fn webhook_stats(&self, failing_after: i64) -> Result<OutboxStats, StoreError> {
        dispatch!(self, b => b.webhook_stats(failing_after).await)
    }
}

#[cfg(test)]
mod tests {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn handles_can_be_shared_across_tasks() {
        assert_shareable::<super::Store>();
        assert_shareable::<super::Writer>();
        assert_shareable::<super::StoreError>();
    }
}
