//! Documents: list, detail, delete, snapshot, disconnect, export and import.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crdt_store::DocumentInfo;
use serde::Deserialize;
use serde_json::json;

use super::{AdminError, DURABLE_WITHIN, doc_name, document, ok, store, time_str};
use crate::http::AppState;
use crate::room::{Applied, Command};

/// Largest page of the document list.
const MAX_LIST: u32 = 1000;

/// `?prefix=&limit=&cursor=` of the document list.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    prefix: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A document as the API shows it; `detail` adds the oldest logged change and newest snapshot.
fn document_json(state: &AppState, d: &DocumentInfo, detail: bool) -> serde_json::Value {
    let key: Arc<str> = Arc::from(d.name.as_str());
    let mut v = json!({
        "name": d.name,
        "created_at": time_str(d.created_at),
        "last_change_at": d.last_change_at.map(time_str),
        "last_seq": d.last_seq,
        "log_rows": d.log_rows,
        "log_bytes": d.log_bytes,
        "snapshots": d.snapshots,
        "snapshot_bytes": d.snapshot_bytes,
        "stored_bytes": d.log_bytes + d.snapshot_bytes,
        "labels": d.labels,
        "connected_clients": state.shared.per_doc.count(&key),
        "loaded": state.registry.is_open(&d.name),
    });
    if detail {
        v["first_logged_seq"] = json!(d.first_logged_seq);
        v["latest_snapshot"] = match &d.latest_snapshot {
            Some(s) => json!({
                "seq": s.seq,
                "created_at": time_str(s.created_at),
                "bytes": s.bytes,
            }),
            None => serde_json::Value::Null,
        };
    }
    v
}

/// `GET /documents`: a page of documents by name, optionally under a prefix.
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
    let documents: Vec<_> = docs
        .iter()
        .map(|d| document_json(&state, d, false))
        .collect();
    Ok(ok(json!({ "documents": documents, "next_cursor": next })))
}

/// `GET /documents/{name}`.
pub(super) async fn detail(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    let info = document(store(&state)?, &name).await?;
    Ok(ok(document_json(&state, &info, true)))
}

/// `DELETE /documents/{name}`: close its clients with 4410, remove its data, keep its name
/// tombstoned.
pub(super) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = doc_name(&state, name?.0)?;
    let store = store(&state)?;
    document(store, &name).await?;
    // Refuse new joins first, then close the open room (it answers once everything it
    // accepted is durable, so no late log row lands after the data is removed), then remove.
    state.shared.mark_deleted(&name);
    let closed = state.registry.delete(&name).await;
    if !store.delete_document(&name).await? {
        return Err(AdminError::no_document());
    }
    tracing::info!(doc = %name, closed, "document deleted by an administrator");
    Ok(ok(json!({ "deleted": true, "connections_closed": closed })))
}

/// `POST /documents/{name}/snapshot`: store a snapshot of everything so far.
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
    Ok(ok(json!({ "seq": seq })))
}

/// Optional body of a disconnect request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user: Option<String>,
}

/// `POST /documents/{name}/disconnect`: close its clients (or one user's) with 4000.
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
    // A document that is not open has no clients: nothing to load.
    let closed = state
        .registry
        .command(&name, false, |reply| Command::Disconnect {
            user: req.user.clone(),
            reply,
        })
        .await
        .unwrap_or(0);
    Ok(ok(json!({ "connections_closed": closed })))
}

/// A Yjs update as a download, with the sequence number it covers.
pub(super) fn update_response(seq: i64, state: Vec<u8>) -> Response {
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
#[derive(Debug, Deserialize)]
pub(super) struct ImportQuery {
    mode: Option<String>,
}

/// `POST /documents/{name}/import?mode=merge|replace`: apply a Yjs update as a change.
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
    Ok(ok(applied_json(applied).await?))
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
pub(super) async fn applied_json(mut applied: Applied) -> Result<serde_json::Value, AdminError> {
    if !applied.wait_durable(DURABLE_WITHIN).await {
        return Err(AdminError::Storage(
            "the change was applied and is queued, but is not durable yet; check /healthz".into(),
        ));
    }
    Ok(json!({ "seq": applied.seq, "changed": applied.seq.is_some() }))
}
