//! The store both backends share: [`SqlStore`] is generic over a [`Dialect`], which holds
//! what differs between Postgres and SQLite in the shared methods (the SQL text that needs a
//! dialect's own syntax, how a time is bound, how a result counts its rows). Each method is
//! written once here and compiled once per backend (no dynamic dispatch, no extra round
//! trip); the backend files add only what truly differs: opening the pool, warm-up, batch
//! appends and decoding their rows ([`StoredRow`]).
//!
//! Statements written for both dialects use `$n` placeholders (sqlx's SQLite driver takes
//! them too, repeats included).

use std::time::SystemTime;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::error::{StoreError, db_err, unless_deleted, written_unless_deleted};
use crate::model::{DocumentInfo, Label, LoadedDoc, LogRow, Revocation, RevocationKind, Snapshot};
use crate::outbox::{self, CursorMove, Delivery, NewDelivery, OutboxStats, WebhookCursor};
use crate::queries::{self, Direction, DocumentList};
use crate::rows::{self, StoredRow, decode_all, decode_opt};

/// What the shared methods need to know about a backend.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database;
    /// How this backend stores a time (Postgres: `timestamptz`; SQLite: unix milliseconds).
    type Time: Send + 'static;

    /// Expression ordering `d.name` bytewise (see [`DocumentList::sql`]).
    const NAME_BYTEWISE: &'static str;
    /// Inserts label `$3` at seq `$2` created at `$4` on document `$1` if it is live;
    /// returns `name, seq, created_at`, or nothing when the name is taken.
    const PUT_LABEL: &'static str;
    /// Stores snapshot (`$1` doc, `$2` seq, `$3` state, `$4` state vector, `$5` time) if the
    /// document is live, replacing one of the same seq.
    const WRITE_SNAPSHOT: &'static str;
    /// Starts the read transaction of a load: both of its SELECTs see one snapshot.
    const BEGIN_READ: &'static str;
    /// Starts the write transaction of a document delete.
    const BEGIN_WRITE: &'static str;
    /// Inside that transaction: the id of live document `$1`, held until commit so that no
    /// concurrent write to the document slips past the purge.
    const LOCK_LIVE_DOC: &'static str;

    /// This backend's schema migrations.
    fn migrator() -> &'static Migrator;
    /// `t` as this backend binds it.
    fn time(t: SystemTime) -> Self::Time;
    /// Rows a statement inserted, updated or deleted.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
}

/// A store on backend `D`: a connection pool, nothing else. Cheap to clone.
#[derive(Debug)]
pub(crate) struct SqlStore<D: Dialect> {
    pub(crate) pool: Pool<D::Db>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
        }
    }
}

type Row<D> = <<D as Dialect>::Db as Database>::Row;

impl<D: Dialect> SqlStore<D>
where
    // What the shared methods do with the driver; every sqlx backend provides all of it.
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Connection: Migrate,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    Row<D>: StoredRow,
    for<'r> (i64,): FromRow<'r, Row<D>>,
    for<'r> (String,): FromRow<'r, Row<D>>,
    for<'r> (i64, bool): FromRow<'r, Row<D>>,
    for<'t> i64: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> &'t str: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> &'t [u8]: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> D::Time: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> Option<D::Time>: Encode<'t, D::Db> + Type<D::Db>,
{
    /// Brings the schema up to date.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        D::migrator()
            .run(&self.pool)
            .await
            .map_err(StoreError::from_migrate)
    }

    /// One trivial round trip.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err("ping"))?;
        Ok(())
    }

    /// See [`Store::load`](crate::Store::load).
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
        // One consistent read: a compaction + prune running between the two SELECTs must
        // not make us miss the rows it folded into a snapshot.
        let mut tx = self
            .pool
            .begin_with(D::BEGIN_READ)
            .await
            .map_err(db_err("load"))?;
        let snapshot = sqlx::query(queries::NEWEST_SNAPSHOT)
            .bind(doc_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("load"))?;
        let snapshot = decode_opt(snapshot, "load", rows::snapshot)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let updates = sqlx::query(queries::LOG_AFTER)
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

    /// Id of the document called `name` if it exists; [`StoreError::Deleted`] if deleted.
    async fn existing_doc_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let found = sqlx::query_as::<_, (i64, bool)>(queries::LOOKUP_DOCUMENT)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("load"))?;
        unless_deleted(name, found)
    }

    /// Id of document `name` and whether it is deleted, creating its row if absent.
    pub(crate) async fn upsert_document(&self, name: &str) -> Result<(i64, bool), StoreError> {
        sqlx::query_as::<_, (i64, bool)>(queries::UPSERT_DOCUMENT)
            .bind(name)
            .bind(D::time(SystemTime::now()))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("create_document"))
    }

    /// See [`Store::write_snapshot`](crate::Store::write_snapshot).
    pub(crate) async fn write_snapshot(
        &self,
        doc_id: i64,
        seq: i64,
        state: &[u8],
        state_vector: &[u8],
    ) -> Result<(), StoreError> {
        let done = sqlx::query(D::WRITE_SNAPSHOT)
            .bind(doc_id)
            .bind(seq)
            .bind(state)
            .bind(state_vector)
            .bind(D::time(SystemTime::now()))
            .execute(&self.pool)
            .await
            .map_err(db_err("write_snapshot"))?;
        written_unless_deleted(D::rows_affected(&done), doc_id)
    }

    /// See [`Store::prune_log`](crate::Store::prune_log).
    pub(crate) async fn prune_log(
        &self,
        doc_id: i64,
        before: SystemTime,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(queries::PRUNE_LOG)
            .bind(doc_id)
            .bind(D::time(before))
            .execute(&self.pool)
            .await
            .map_err(db_err("prune_log"))?;
        Ok(D::rows_affected(&done))
    }

    /// Records a revocation (replacing an earlier one of the same token or user).
    pub(crate) async fn put_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query(queries::PUT_REVOCATION)
            .bind(kind.as_str())
            .bind(value)
            .bind(D::time(at))
            .execute(&self.pool)
            .await
            .map_err(db_err("put_revocation"))?;
        Ok(())
    }

    /// Removes a revocation; whether there was one.
    pub(crate) async fn delete_revocation(
        &self,
        kind: RevocationKind,
        value: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(queries::DELETE_REVOCATION)
            .bind(kind.as_str())
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db_err("delete_revocation"))?;
        Ok(D::rows_affected(&done) > 0)
    }

    /// Every stored revocation (rows of a kind this version does not know are skipped).
    pub(crate) async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let found = sqlx::query(queries::REVOCATIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("revocations"))?;
        let all = decode_all(&found, "revocations", rows::revocation)?;
        Ok(all.into_iter().flatten().collect())
    }

    /// Log rows with seq in `(from_seq, to_seq]`, with data, ascending.
    pub(crate) async fn log_range(
        &self,
        doc_id: i64,
        from_seq: i64,
        to_seq: i64,
    ) -> Result<Vec<LogRow>, StoreError> {
        let found = sqlx::query(queries::LOG_RANGE)
            .bind(doc_id)
            .bind(from_seq)
            .bind(to_seq)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("log_range"))?;
        decode_all(&found, "log_range", |r| rows::log_row(r, true))
    }

    /// Newest snapshot with seq <= `at_seq`.
    pub(crate) async fn snapshot_at_or_before(
        &self,
        doc_id: i64,
        at_seq: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        let found = sqlx::query(queries::SNAPSHOT_AT_OR_BEFORE)
            .bind(doc_id)
            .bind(at_seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("snapshot_at_or_before"))?;
        decode_opt(found, "snapshot_at_or_before", rows::snapshot)
    }

    /// A page of the log in either direction.
    pub(crate) async fn log_page(
        &self,
        doc_id: i64,
        direction: Direction,
        from_seq: i64,
        limit: u32,
        with_data: bool,
    ) -> Result<Vec<LogRow>, StoreError> {
        let found = sqlx::query(queries::log_page_sql(direction, with_data))
            .bind(doc_id)
            .bind(from_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("log_page"))?;
        decode_all(&found, "log_page", |r| rows::log_row(r, with_data))
    }

    /// One document by name, deleted or not.
    pub(crate) async fn document(&self, name: &str) -> Result<Option<DocumentInfo>, StoreError> {
        let found = sqlx::query(queries::DOCUMENT)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("document"))?;
        decode_opt(found, "document", rows::document_info)
    }

    /// A page of live documents; see [`DocumentList`].
    pub(crate) async fn list_documents(
        &self,
        list: &DocumentList<'_>,
        limit: u32,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let sql = list.sql(D::NAME_BYTEWISE);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bound in list.bounds() {
            query = query.bind(bound);
        }
        let found = query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("list_documents"))?;
        decode_all(&found, "list_documents", rows::document_info)
    }

    /// Id of a live document, never creating one.
    pub(crate) async fn find_doc_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(queries::LIVE_DOC_ID)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("find_doc_id"))
    }

    /// See [`SEQ_AT_TIME`](queries::SEQ_AT_TIME).
    pub(crate) async fn seq_at_time(&self, doc_id: i64, t: SystemTime) -> Result<i64, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(queries::SEQ_AT_TIME)
            .bind(doc_id)
            .bind(D::time(t))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("seq_at_time"))?;
        Ok(found.unwrap_or(0))
    }

    /// Inserts a label on a live document; `None` when the name is taken or the document
    /// is not live (the caller tells which).
    pub(crate) async fn put_label(
        &self,
        doc_id: i64,
        name: &str,
        seq: i64,
    ) -> Result<Option<Label>, StoreError> {
        let found = sqlx::query(D::PUT_LABEL)
            .bind(doc_id)
            .bind(seq)
            .bind(name)
            .bind(D::time(SystemTime::now()))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("put_label"))?;
        decode_opt(found, "put_label", rows::label)
    }

    /// All labels of a document, unordered.
    pub(crate) async fn labels(&self, doc_id: i64) -> Result<Vec<Label>, StoreError> {
        let found = sqlx::query(queries::LABELS)
            .bind(doc_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("labels"))?;
        decode_all(&found, "labels", rows::label)
    }

    /// One label.
    pub(crate) async fn label(&self, doc_id: i64, name: &str) -> Result<Option<Label>, StoreError> {
        let found = sqlx::query(queries::LABEL)
            .bind(doc_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("label"))?;
        decode_opt(found, "label", rows::label)
    }

    /// Removes a label; whether there was one.
    pub(crate) async fn delete_label(&self, doc_id: i64, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(queries::DELETE_LABEL)
            .bind(doc_id)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err("delete_label"))?;
        Ok(D::rows_affected(&done) > 0)
    }

    /// Tombstones a live document and purges its rows in one transaction (see
    /// [`Dialect::LOCK_LIVE_DOC`] for why no concurrent write slips past the purge).
    pub(crate) async fn delete_document(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(db_err("delete_document"))?;
        let Some(id) = sqlx::query_scalar::<_, i64>(D::LOCK_LIVE_DOC)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("delete_document"))?
        else {
            return Ok(false);
        };
        for purge in queries::PURGE_DOCUMENT {
            sqlx::query(purge)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err("delete_document"))?;
        }
        sqlx::query(queries::MARK_DELETED)
            .bind(id)
            .bind(D::time(SystemTime::now()))
            .execute(&mut *tx)
            .await
            .map_err(db_err("delete_document"))?;
        tx.commit().await.map_err(db_err("delete_document"))?;
        Ok(true)
    }

    /// Names of the deleted documents.
    pub(crate) async fn deleted_documents(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(queries::DELETED_DOCUMENTS)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("deleted_documents"))
    }

    /// Every snapshot of a document, ascending by seq (for a whole-store export).
    pub(crate) async fn snapshots(&self, doc_id: i64) -> Result<Vec<Snapshot>, StoreError> {
        let found = sqlx::query(queries::ALL_SNAPSHOTS)
            .bind(doc_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("snapshots"))?;
        decode_all(&found, "snapshots", rows::snapshot)
    }

    /// Whether the store holds no document (live or deleted) and no revocation.
    pub(crate) async fn is_empty(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(queries::COUNT_CONTENT)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("is_empty"))?;
        Ok(n == 0)
    }

    /// Restores a document's row with its own times (see
    /// [`Store::import_document`](crate::Store::import_document)).
    pub(crate) async fn import_document(
        &self,
        name: &str,
        created_at: SystemTime,
        deleted_at: Option<SystemTime>,
    ) -> Result<i64, StoreError> {
        let inserted = sqlx::query_scalar::<_, i64>(queries::IMPORT_DOCUMENT)
            .bind(name)
            .bind(D::time(created_at))
            .bind(deleted_at.map(D::time))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("import_document"))?;
        inserted.ok_or_else(|| StoreError::Conflict(format!("document {name:?} exists already")))
    }

    /// Sets the statistics the log alone cannot restore (see
    /// [`Store::finish_import`](crate::Store::finish_import)).
    pub(crate) async fn finish_import(
        &self,
        doc_id: i64,
        last_seq: i64,
        last_change_at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        sqlx::query(queries::FINISH_IMPORT)
            .bind(doc_id)
            .bind(last_seq)
            .bind(last_change_at.map(D::time))
            .execute(&self.pool)
            .await
            .map_err(db_err("finish_import"))?;
        Ok(())
    }

    /// Restores a snapshot with its own time.
    pub(crate) async fn import_snapshot(
        &self,
        doc_id: i64,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        sqlx::query(queries::IMPORT_SNAPSHOT)
            .bind(doc_id)
            .bind(snapshot.seq)
            .bind(snapshot.state.as_slice())
            .bind(snapshot.state_vector.as_slice())
            .bind(D::time(snapshot.created_at))
            .execute(&self.pool)
            .await
            .map_err(db_err("import_snapshot"))?;
        Ok(())
    }

    /// Restores a label with its own time.
    pub(crate) async fn import_label(&self, doc_id: i64, label: &Label) -> Result<(), StoreError> {
        sqlx::query(queries::IMPORT_LABEL)
            .bind(doc_id)
            .bind(label.seq)
            .bind(label.name.as_str())
            .bind(D::time(label.created_at))
            .execute(&self.pool)
            .await
            .map_err(db_err("import_label"))?;
        Ok(())
    }

    /// Marks the first start with webhooks; at that start, gives every existing document a
    /// cursor at its current seq (one transaction). Returns whether this was that start.
    pub(crate) async fn webhooks_begin(&self) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(db_err("webhooks_begin"))?;
        let done = sqlx::query(queries::WEBHOOK_START)
            .bind(D::time(SystemTime::now()))
            .execute(&mut *tx)
            .await
            .map_err(db_err("webhooks_begin"))?;
        let first = D::rows_affected(&done) > 0;
        if first {
            sqlx::query(queries::WEBHOOK_BASELINE)
                .execute(&mut *tx)
                .await
                .map_err(db_err("webhooks_begin"))?;
        }
        tx.commit().await.map_err(db_err("webhooks_begin"))?;
        Ok(first)
    }

    /// See [`WEBHOOK_BEHIND`](queries::WEBHOOK_BEHIND).
    pub(crate) async fn webhooks_behind(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(queries::WEBHOOK_BEHIND)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("webhooks_behind"))
    }

    /// See [`WEBHOOK_CURSOR`](queries::WEBHOOK_CURSOR).
    pub(crate) async fn webhook_cursor(
        &self,
        name: &str,
    ) -> Result<Option<WebhookCursor>, StoreError> {
        let found = sqlx::query(queries::WEBHOOK_CURSOR)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("webhook_cursor"))?;
        decode_opt(found, "webhook_cursor", outbox::cursor)
    }

    /// Queues `deliveries`, moving a cursor with them, in one transaction; false (nothing
    /// queued) if the cursor was not where the caller read it.
    pub(crate) async fn enqueue_webhooks(
        &self,
        cursor: Option<CursorMove>,
        deliveries: &[NewDelivery],
    ) -> Result<bool, StoreError> {
        let op = "enqueue_webhooks";
        let mut tx = self
            .pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(db_err(op))?;
        if let Some(m) = cursor {
            let query = match m.from {
                None => sqlx::query(queries::WEBHOOK_CURSOR_CREATE)
                    .bind(m.doc_id)
                    .bind(m.to),
                Some(from) => sqlx::query(queries::WEBHOOK_CURSOR_MOVE)
                    .bind(m.doc_id)
                    .bind(m.to)
                    .bind(from),
            };
            let done = query.execute(&mut *tx).await.map_err(db_err(op))?;
            if D::rows_affected(&done) == 0 {
                // Dropping the transaction rolls it back.
                return Ok(false);
            }
        }
        for d in deliveries {
            sqlx::query(queries::WEBHOOK_ENQUEUE)
                .bind(d.event_id.as_str())
                .bind(d.url.as_str())
                .bind(d.event.as_str())
                .bind(d.body.as_str())
                .bind(D::time(d.due))
                .execute(&mut *tx)
                .await
                .map_err(db_err(op))?;
        }
        tx.commit().await.map_err(db_err(op))?;
        Ok(true)
    }

    /// See [`WEBHOOK_CLAIM`](queries::WEBHOOK_CLAIM); ordered by id.
    pub(crate) async fn claim_webhooks(
        &self,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let found = sqlx::query(queries::WEBHOOK_CLAIM)
            .bind(D::time(now))
            .bind(D::time(lease_until))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("claim_webhooks"))?;
        let mut claimed = decode_all(&found, "claim_webhooks", outbox::delivery)?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    /// Makes claimed deliveries due at `at` again.
    pub(crate) async fn release_webhooks(
        &self,
        ids: &[i64],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query(queries::WEBHOOK_RELEASE)
                .bind(*id)
                .bind(D::time(at))
                .execute(&self.pool)
                .await
                .map_err(db_err("release_webhooks"))?;
        }
        Ok(())
    }

    /// Removes delivery `id` (answered 2xx).
    pub(crate) async fn webhook_delivered(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(queries::WEBHOOK_DONE)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err("webhook_delivered"))?;
        Ok(())
    }

    /// Counts a failed attempt of delivery `id` and schedules the next one.
    pub(crate) async fn webhook_retry(
        &self,
        id: i64,
        next: SystemTime,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(queries::WEBHOOK_RETRY)
            .bind(id)
            .bind(D::time(next))
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(db_err("webhook_retry"))?;
        Ok(())
    }

    /// See [`WEBHOOK_STATS`](queries::WEBHOOK_STATS).
    pub(crate) async fn webhook_stats(
        &self,
        failing_after: i64,
    ) -> Result<OutboxStats, StoreError> {
        let found = sqlx::query(queries::WEBHOOK_STATS)
            .bind(failing_after)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("webhook_stats"))?;
        outbox::stats(&found).map_err(db_err("webhook_stats"))
    }
}
