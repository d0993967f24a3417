//! Documents: list, detail, delete, snapshot, disconnect, export and import.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crdt_store::DocumentInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{
    BadRequest, Conflict, DocName, Gone, Internal, NotFound, PayloadTooLarge, Unauthorized,
    Unavailable, YjsUpdate,
};
use super::{AdminError, DURABLE_WITHIN, doc_name, document, ok, store, time_str};
use crate::http::AppState;
use crate::room::{Applied, Command};

/// Largest page of the document list.
const MAX_LIST: u32 = 1000;

/// `?prefix=&limit=&cursor=` of the document list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only names starting with this (literal; no wildcards).
    prefix: Option<String>,
    /// Page size (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A document as the list shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Document {
    /// The document's name.
    name: String,
    /// When its first change (or first admin write) was stored.
    #[schema(format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    created_at: String,
    /// Time of the newest change; null before the first change.
    #[schema(format = DateTime, required = true)]
    last_change_at: Option<String>,
    /// Seq of the newest change (0: none).
    #[schema(minimum = 0)]
    last_seq: i64,
    /// Rows in the update log (fewer than last_seq after retention).
    #[schema(minimum = 0)]
    log_rows: i64,
    /// Bytes of update data in the log.
    #[schema(minimum = 0)]
    log_bytes: i64,
    /// Number of stored snapshots.
    #[schema(minimum = 0)]
    snapshots: i64,
    /// Bytes of the stored snapshots.
    #[schema(minimum = 0)]
    snapshot_bytes: i64,
    /// log_bytes + snapshot_bytes.
    #[schema(minimum = 0)]
    stored_bytes: i64,
    /// Number of labels.
    #[schema(minimum = 0)]
    labels: i64,
    /// Connections to it on this server, now.
    connected_clients: usize,
    /// In memory on this server now.
    loaded: bool,
}

impl Document {
    fn new(state: &AppState, d: &DocumentInfo) -> Document {
        let key: Arc<str> = Arc::from(d.name.as_str());
        Document {
            name: d.name.clone(),
            created_at: time_str(d.created_at),
            last_change_at: d.last_change_at.map(time_str),
            last_seq: d.last_seq,
            log_rows: d.log_rows,
            log_bytes: d.log_bytes,
            snapshots: d.snapshots,
            snapshot_bytes: d.snapshot_bytes,
            stored_bytes: d.log_bytes + d.snapshot_bytes,
            labels: d.labels,
            connected_clients: state.shared.per_doc.count(&key),
            loaded: state.registry.is_open(&d.name),
        }
    }
}

/// A Document plus its oldest logged change and newest snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DocumentDetail {
    // Written out rather than `#[serde(flatten)]`ed: a flattened part becomes an `allOf` in the
    // schema, which cannot also refuse unknown fields.
    /// The document's name.
    name: String,
    /// When its first change (or first admin write) was stored.
    #[schema(format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    created_at: String,
    /// Time of the newest change; null before the first change.
    #[schema(format = DateTime, required = true)]
    last_change_at: Option<String>,
    /// Seq of the newest change (0: none).
    #[schema(minimum = 0)]
    last_seq: i64,
    /// Rows in the update log (fewer than last_seq after retention).
    #[schema(minimum = 0)]
    log_rows: i64,
    /// Bytes of update data in the log.
    #[schema(minimum = 0)]
    log_bytes: i64,
    /// Number of stored snapshots.
    #[schema(minimum = 0)]
    snapshots: i64,
    /// Bytes of the stored snapshots.
    #[schema(minimum = 0)]
    snapshot_bytes: i64,
    /// log_bytes + snapshot_bytes.
    #[schema(minimum = 0)]
    stored_bytes: i64,
    /// Number of labels.
    #[schema(minimum = 0)]
    labels: i64,
    /// Connections to it on this server, now.
    connected_clients: usize,
    /// In memory on this server now.
    loaded: bool,
    /// Oldest seq still in the log; null if none.
    #[schema(required = true)]
    first_logged_seq: Option<i64>,
    /// The newest stored snapshot; null if none.
    #[schema(required = true)]
    latest_snapshot: Option<LatestSnapshot>,
}

impl DocumentDetail {
    fn new(state: &AppState, d: &DocumentInfo) -> DocumentDetail {
        let Document {
            name,
            created_at,
            last_change_at,
            last_seq,
            log_rows,
            log_bytes,
            snapshots,
            snapshot_bytes,
            stored_bytes,
            labels,
            connected_clients,
            loaded,
        } = Document::new(state, d);
        DocumentDetail {
            name,
            created_at,
            last_change_at,
            last_seq,
            log_rows,
            log_bytes,
            snapshots,
            snapshot_bytes,
            stored_bytes,
            labels,
            connected_clients,
            loaded,
            first_logged_seq: d.first_logged_seq,
            latest_snapshot: d.latest_snapshot.map(|s| LatestSnapshot {
                seq: s.seq,
                created_at: time_str(s.created_at),
                bytes: s.bytes,
            }),
        }
    }
}

/// Where a document's newest snapshot stands.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatestSnapshot {
    /// The last change it covers.
    #[schema(minimum = 0)]
    seq: i64,
    /// When it was written.
    #[schema(format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    created_at: String,
    /// Its size: state plus state vector.
    #[schema(minimum = 0)]
    bytes: i64,
}

/// A page of the document list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DocumentPage {
    /// Documents ordered by name (bytewise).
    documents: Vec<Document>,
    /// Pass as cursor for the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// The answer to a delete.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// Always true.
    deleted: bool,
    /// Connections closed with 4410.
    connections_closed: usize,
}

/// The answer to a snapshot request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SnapshotTaken {
    /// The last change the stored snapshot covers.
    #[schema(minimum = 0)]
    seq: i64,
}

/// The answer to a disconnect request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Disconnected {
    /// Connections closed with 4000.
    connections_closed: usize,
}

/// The answer to a change (admin import, document API write or content): the new change, once
/// durable.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Applied)]
pub(crate) struct AppliedChange {
    /// Seq of the new change; null when the update changed nothing.
    #[schema(required = true)]
    pub(super) seq: Option<i64>,
    /// Whether a change was made.
    pub(super) changed: bool,
}

/// `GET /documents`: a page of documents by name, optionally under a prefix.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents",
    operation_id = "listDocuments",
    tag = "documents",
    summary = "List documents",
    description = "A page of live (not deleted) documents ordered by name (bytewise).",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of documents.", body = DocumentPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query?;
    let store = store(&state)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIST {
        return Err(AdminError::BadRequest(format!(
            "limit must be 1..={MAX_LIST}"
        )));
    }
    // One extra row tells whether there is a next page.
    let mut docs = store
        .list_documents(q.prefix.as_deref(), q.cursor.as_deref(), limit + 1)
        .await?;
    let more = docs.len() > limit as usize;
    docs.truncate(limit as usize);
    let next = more.then(|| docs.last().map(|d| d.name.clone())).flatten();
    let documents = docs.iter().map(|d| Document::new(&state, d)).collect();
    Ok(ok(DocumentPage {
        documents,
        next_cursor: next,
    }))
}

/// `GET /documents/{name}`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents/{name}",
    operation_id = "getDocument",
    tag = "documents",
    summary = "One document's metadata and statistics",
    params(DocName),
    responses(
        (status = 200, description = "The document.", body = DocumentDetail),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn detail(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    let info = document(store(&state)?, &name).await?;
    Ok(ok(DocumentDetail::new(&state, &info)))
}

/// `DELETE /documents/{name}`: close its clients with 4410, remove its data, keep its name
/// tombstoned.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/documents/{name}",
    operation_id = "deleteDocument",
    tag = "documents",
    summary = "Delete a document",
    description = "Closes its connections with 4410 \"document deleted\", removes its log, snapshots and labels, and keeps the name tombstoned: later WebSocket joins are refused with HTTP 410 and imports answer 410. A deleted document never comes back under the same name.",
    params(DocName),
    responses(
        (status = 200, description = "Deleted.", body = Deleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    let store = store(&state)?;
    let info = document(store, &name).await?;
    // Refuse new joins first, then close the open room (it answers once everything it
    // accepted is durable, so no late log row lands after the data is removed), then remove.
    state.shared.mark_deleted(&name);
    state.shared.tell_cluster(crate::cluster::Control::Deleted {
        doc: name.to_string(),
    });
    let closed = state.registry.delete(&name).await;
    // Announce what was written before the deletion while the log still holds it.
    if let Some(hooks) = &state.shared.webhooks
        && let Err(e) = hooks.announce(&name).await
    {
        tracing::warn!(error = %e, doc = %name, "webhooks: last changes before a delete not announced");
    }
    if !store.delete_document(&name).await? {
        return Err(AdminError::no_document());
    }
    if let Some(hooks) = &state.shared.webhooks
        && let Err(e) = hooks.deleted(&name, info.doc_id).await
    {
        tracing::error!(error = %e, doc = %name, "webhooks: document.deleted not queued");
    }
    tracing::info!(doc = %name, closed, "document deleted by an administrator");
    Ok(ok(Deleted {
        deleted: true,
        connections_closed: closed,
    }))
}

/// `POST /documents/{name}/snapshot`: store a snapshot of everything so far.
#[utoipa::path(
    post,
    path = "/api/v1/admin/documents/{name}/snapshot",
    operation_id = "snapshotDocument",
    tag = "documents",
    summary = "Store a snapshot now",
    description = "Answers once a snapshot covering every change up to seq is stored (loads the document if needed).",
    params(DocName),
    responses(
        (status = 200, description = "The snapshot is stored.", body = SnapshotTaken),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn snapshot(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    document(store(&state)?, &name).await?;
    let seq = state
        .registry
        .command(&name, true, |reply| Command::Snapshot { reply })
        .await?;
    Ok(ok(SnapshotTaken { seq }))
}

/// Optional body of a disconnect request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectRequest {
    /// Only this token subject's connections.
    user: Option<String>,
}

/// `POST /documents/{name}/disconnect`: close its clients (or one user's) with 4000.
#[utoipa::path(
    post,
    path = "/api/v1/admin/documents/{name}/disconnect",
    operation_id = "disconnectClients",
    tag = "documents",
    summary = "Close a document's connections",
    description = "Closes the document's connections (or only those of one user) with 4000 \"disconnected by an administrator\". y-websocket clients reconnect; to keep someone out, revoke their token.",
    params(DocName),
    request_body(content = Option<DisconnectRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Closed.", body = Disconnected),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn disconnect(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    let body = body?;
    let req: DisconnectRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DisconnectRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    state
        .shared
        .tell_cluster(crate::cluster::Control::Disconnect {
            doc: name.to_string(),
            user: req.user.clone(),
        });
    // A document that is not open has no clients: nothing to load.
    let closed = state
        .registry
        .command(&name, false, |reply| Command::Disconnect {
            user: req.user.clone(),
            reply,
        })
        .await
        .unwrap_or(0);
    Ok(ok(Disconnected {
        connections_closed: closed,
    }))
}

/// A Yjs update as a download, with the sequence number it covers.
pub(crate) fn update_response(seq: i64, state: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, state).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-tandem-seq", HeaderValue::from(seq));
    response
}

/// `GET /documents/{name}/export`: the current state as one Yjs update.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents/{name}/export",
    operation_id = "exportDocument",
    tag = "documents",
    summary = "Download the current state as a Yjs update",
    params(DocName),
    responses(
        (status = 200, description = "A Yjs update (v1) of the current state (from the live room when loaded).", content_type = "application/octet-stream", body = YjsUpdate, headers(("X-Tandem-Seq" = i64, description = "Sequence number of the newest change the body covers."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn export(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    if let Some(store) = state.shared.storage.store() {
        document(store, &name).await?;
    } else if !state.registry.is_open(&name) {
        return Err(AdminError::no_document());
    }
    let (seq, update) = state
        .registry
        .command(&name, true, |reply| Command::Export { reply })
        .await?;
    Ok(update_response(seq, update))
}

/// `?mode=` of an import.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ImportQuery {
    /// How the update is applied: merge (default) or replace.
    #[param(value_type = Option<ImportMode>)]
    mode: Option<String>,
}

/// How an import applies its update (the query stays a string so an unknown mode gets this
/// API's 400 wording).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", default = "merge")]
#[allow(dead_code)] // described, never built
pub(super) enum ImportMode {
    /// Apply the update as a change.
    Merge,
    /// Make the content equal to the update's, as one new forward change.
    Replace,
}

/// `POST /documents/{name}/import?mode=merge|replace`: apply a Yjs update as a change.
#[utoipa::path(
    post,
    path = "/api/v1/admin/documents/{name}/import",
    operation_id = "importDocument",
    tag = "documents",
    summary = "Apply a Yjs update",
    description = "merge (default) applies the update as a change; replace makes the document's content equal to the update's, as one new forward change (like a restore). Creates the document if new.",
    params(DocName, ImportQuery),
    request_body(content = YjsUpdate, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Applied and durable.", body = AppliedChange),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn import(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    let Query(q) = query?;
    let body = body?;
    let replace = match q.mode.as_deref() {
        None | Some("merge") => false,
        Some("replace") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "mode must be merge or replace, not {other:?}"
            )));
        }
    };
    if body.is_empty() {
        return Err(AdminError::BadRequest(
            "the body must be a Yjs update (application/octet-stream)".into(),
        ));
    }
    let author = "admin:import".to_string();
    // Walked before anything decodes it (for both modes): a deeply nested update would crash
    // yrs' recursive decoder. Also keeps a garbage body from creating the document by
    // loading it.
    crate::protocol::check_update(&body, state.shared.config.max_nesting_depth).map_err(|e| {
        state
            .shared
            .metrics
            .update_refused(crate::protocol::malformed(&e).label());
        AdminError::BadRequest(format!("not a valid Yjs update: {e}"))
    })?;
    let applied = if replace {
        let bytes = body.to_vec();
        let target = tokio::task::spawn_blocking(move || {
            crate::history::reconstruct(Some(&bytes), std::iter::empty(), false)
        })
        .await
        .map_err(|_| AdminError::Internal)?
        .map_err(|e| AdminError::BadRequest(format!("not a valid Yjs update: {e}")))?;
        replace_content(&state, &name, target, author).await?
    } else {
        crate::protocol::decode_update(&body, state.shared.config.max_nesting_depth).map_err(
            |e| {
                state
                    .shared
                    .metrics
                    .update_refused(crate::protocol::malformed(&e).label());
                AdminError::BadRequest(format!("not a valid Yjs update: {e}"))
            },
        )?;
        let update = body.to_vec();
        state
            .registry
            .command(&name, true, |reply| Command::Merge {
                update: update.clone(),
                author: author.clone(),
                reply,
            })
            .await?
    };
    Ok(ok(applied_answer(applied).await?))
}

/// Makes the document's content equal to `target`'s through its room.
pub(super) async fn replace_content(
    state: &AppState,
    name: &str,
    target: yrs::Doc,
    author: String,
) -> Result<Applied, AdminError> {
    Ok(state
        .registry
        .command(name, true, |reply| Command::Replace {
            target: target.clone(),
            author: author.clone(),
            scope: Default::default(),
            reply,
        })
        .await?)
}

/// Waits until an admin change is durable; its answer is `{"seq", "changed"}`.
pub(crate) async fn applied_answer(mut applied: Applied) -> Result<AppliedChange, AdminError> {
    if !applied.wait_durable(DURABLE_WITHIN).await {
        return Err(AdminError::Storage(
            "the change was applied and is queued, but is not durable yet; check /healthz".into(),
        ));
    }
    Ok(AppliedChange {
        seq: applied.seq,
        changed: applied.seq.is_some(),
    })
}
