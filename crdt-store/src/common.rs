//! Methods both backends share word for word: [`shared_methods!`] expands them inside each
//! backend's `impl`, where they use that backend's `pool`, its [`Dialect`] (`DIALECT`) and
//! its `db_time` (how it stores a time). Everything that differs between the dialects is in
//! those two, so the SQL that is the same is written once.

/// The dialect-specific parts of the shared methods.
pub(crate) struct Dialect {
    /// Expression ordering `d.name` bytewise (see
    /// [`DocumentList::sql`](crate::queries::DocumentList::sql)).
    pub(crate) name_bytewise: &'static str,
    /// Inserts label `$3` at seq `$2` created at `$4` on document `$1` if it is live;
    /// returns `name, seq, created_at`, or nothing when the name is taken.
    pub(crate) put_label: &'static str,
    /// Starts the write transaction of a document delete.
    pub(crate) begin_write: &'static str,
    /// Inside that transaction: the id of live document `$1`, held until commit so that no
    /// concurrent write to the document slips past the purge.
    pub(crate) lock_live_doc: &'static str,
}

/// Expands the shared methods inside a backend's `impl` (see the module docs).
macro_rules! shared_methods {
    () => {
        /// Id of the document called `name` if it exists; [`StoreError::Deleted`] if deleted.
        async fn existing_doc_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
            let found = sqlx::query_as::<_, (i64, bool)>(crate::queries::LOOKUP_DOCUMENT)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("load"))?;
            crate::error::unless_deleted(name, found)
        }

        /// Id of document `name` and whether it is deleted, creating its row if absent.
        pub(crate) async fn upsert_document(&self, name: &str) -> Result<(i64, bool), StoreError> {
            sqlx::query_as::<_, (i64, bool)>(crate::queries::UPSERT_DOCUMENT)
                .bind(name)
                .bind(db_time(SystemTime::now()))
                .fetch_one(&self.pool)
                .await
                .map_err(db_err("create_document"))
        }

        /// A page of the log in either direction.
        pub(crate) async fn log_page(
            &self,
            doc_id: i64,
            direction: crate::queries::Direction,
            from_seq: i64,
            limit: u32,
            with_data: bool,
        ) -> Result<Vec<LogRow>, StoreError> {
            let found = sqlx::query(crate::queries::log_page_sql(direction, with_data))
                .bind(doc_id)
                .bind(from_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("log_page"))?;
            decode_all(&found, "log_page", |r| crate::rows::log_row(r, with_data))
        }

        /// One document by name, deleted or not.
        pub(crate) async fn document(
            &self,
            name: &str,
        ) -> Result<Option<DocumentInfo>, StoreError> {
            let found = sqlx::query(crate::queries::DOCUMENT)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("document"))?;
            decode_opt(found, "document", crate::rows::document_info)
        }

        /// A page of live documents; see [`DocumentList`](crate::queries::DocumentList).
        pub(crate) async fn list_documents(
            &self,
            list: &crate::queries::DocumentList<'_>,
            limit: u32,
        ) -> Result<Vec<DocumentInfo>, StoreError> {
            let sql = list.sql(DIALECT.name_bytewise);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for bound in list.bounds() {
                query = query.bind(bound);
            }
            let found = query
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("list_documents"))?;
            decode_all(&found, "list_documents", crate::rows::document_info)
        }

        /// Id of a live document, never creating one.
        pub(crate) async fn find_doc_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
            sqlx::query_scalar(crate::queries::LIVE_DOC_ID)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("find_doc_id"))
        }

        /// See [`SEQ_AT_TIME`](crate::queries::SEQ_AT_TIME).
        pub(crate) async fn seq_at_time(
            &self,
            doc_id: i64,
            t: SystemTime,
        ) -> Result<i64, StoreError> {
            let found: Option<i64> = sqlx::query_scalar(crate::queries::SEQ_AT_TIME)
                .bind(doc_id)
                .bind(db_time(t))
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
            let found = sqlx::query(DIALECT.put_label)
                .bind(doc_id)
                .bind(seq)
                .bind(name)
                .bind(db_time(SystemTime::now()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("put_label"))?;
            decode_opt(found, "put_label", crate::rows::label)
        }

        /// All labels of a document, unordered.
        pub(crate) async fn labels(&self, doc_id: i64) -> Result<Vec<Label>, StoreError> {
            let found = sqlx::query(crate::queries::LABELS)
                .bind(doc_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("labels"))?;
            decode_all(&found, "labels", crate::rows::label)
        }

        /// One label.
        pub(crate) async fn label(
            &self,
            doc_id: i64,
            name: &str,
        ) -> Result<Option<Label>, StoreError> {
            let found = sqlx::query(crate::queries::LABEL)
                .bind(doc_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("label"))?;
            decode_opt(found, "label", crate::rows::label)
        }

        /// Removes a label; whether there was one.
        pub(crate) async fn delete_label(
            &self,
            doc_id: i64,
            name: &str,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(crate::queries::DELETE_LABEL)
                .bind(doc_id)
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(db_err("delete_label"))?;
            Ok(done.rows_affected() > 0)
        }

        /// Tombstones a live document and purges its rows in one transaction (see
        /// `Dialect::lock_live_doc` for why no concurrent write slips past the purge).
        pub(crate) async fn delete_document(&self, name: &str) -> Result<bool, StoreError> {
            let mut tx = self
                .pool
                .begin_with(DIALECT.begin_write)
                .await
                .map_err(db_err("delete_document"))?;
            let Some(id) = sqlx::query_scalar::<_, i64>(DIALECT.lock_live_doc)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err("delete_document"))?
            else {
                return Ok(false);
            };
            for purge in crate::queries::PURGE_DOCUMENT {
                sqlx::query(purge)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("delete_document"))?;
            }
            sqlx::query(crate::queries::MARK_DELETED)
                .bind(id)
                .bind(db_time(SystemTime::now()))
                .execute(&mut *tx)
                .await
                .map_err(db_err("delete_document"))?;
            tx.commit().await.map_err(db_err("delete_document"))?;
            Ok(true)
        }

        /// Names of the deleted documents.
        pub(crate) async fn deleted_documents(&self) -> Result<Vec<String>, StoreError> {
            sqlx::query_scalar(crate::queries::DELETED_DOCUMENTS)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("deleted_documents"))
        }

        /// Every snapshot of a document, ascending by seq (for a whole-store export).
        pub(crate) async fn snapshots(&self, doc_id: i64) -> Result<Vec<Snapshot>, StoreError> {
            let found = sqlx::query(crate::queries::ALL_SNAPSHOTS)
                .bind(doc_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("snapshots"))?;
            decode_all(&found, "snapshots", crate::rows::snapshot)
        }

        /// Whether the store holds no document (live or deleted) and no revocation.
        pub(crate) async fn is_empty(&self) -> Result<bool, StoreError> {
            let n: i64 = sqlx::query_scalar(crate::queries::COUNT_CONTENT)
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
            let inserted = sqlx::query_scalar::<_, i64>(crate::queries::IMPORT_DOCUMENT)
                .bind(name)
                .bind(db_time(created_at))
                .bind(deleted_at.map(db_time))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err("import_document"))?;
            inserted
                .ok_or_else(|| StoreError::Conflict(format!("document {name:?} exists already")))
        }

        /// Sets the statistics the log alone cannot restore (see
        /// [`Store::finish_import`](crate::Store::finish_import)).
        pub(crate) async fn finish_import(
            &self,
            doc_id: i64,
            last_seq: i64,
            last_change_at: Option<SystemTime>,
        ) -> Result<(), StoreError> {
            sqlx::query(crate::queries::FINISH_IMPORT)
                .bind(doc_id)
                .bind(last_seq)
                .bind(last_change_at.map(db_time))
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
            sqlx::query(crate::queries::IMPORT_SNAPSHOT)
                .bind(doc_id)
                .bind(snapshot.seq)
                .bind(snapshot.state.as_slice())
                .bind(snapshot.state_vector.as_slice())
                .bind(db_time(snapshot.created_at))
                .execute(&self.pool)
                .await
                .map_err(db_err("import_snapshot"))?;
            Ok(())
        }

        /// Restores a label with its own time.
        pub(crate) async fn import_label(
            &self,
            doc_id: i64,
            label: &Label,
        ) -> Result<(), StoreError> {
            sqlx::query(crate::queries::IMPORT_LABEL)
                .bind(doc_id)
                .bind(label.seq)
                .bind(label.name.as_str())
                .bind(db_time(label.created_at))
                .execute(&self.pool)
                .await
                .map_err(db_err("import_label"))?;
            Ok(())
        }
    };
}

pub(crate) use shared_methods;
