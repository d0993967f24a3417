//! History: timeline, state at a point, diff, restore and labels.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crdt_store::{DocumentInfo, Label, LogRow, Snapshot, Store};
use serde::Deserialize;
use serde_json::json;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::documents::{applied_json, replace_content, update_response};
use super::{AdminError, Point, doc_name, document, ok, store, time_str};
use crate::history;
use crate::http::AppState;

/// Largest timeline page.
const MAX_PAGE: u32 = 1000;
/// Longest label name, in bytes.
const MAX_LABEL: usize = 200;

/// The stored rows that rebuild the document at `seq`: the newest snapshot at or before it and
/// the log after that snapshot up to `seq`. 409 when retention removed rows in between.
async fn rows_to(
    store: &Store,
    doc_id: i64,
    seq: i64,
) -> Result<(Option<Snapshot>, Vec<LogRow>), AdminError> {
    let snapshot = store.snapshot_at_or_before(doc_id, seq).await?;
    let from = snapshot.as_ref().map_or(0, |s| s.seq);
    let rows = store.log_range(doc_id, from, seq).await?;
    let contiguous = rows.len() as i64 == seq - from
        && rows.first().is_none_or(|r| r.seq == from + 1)
        && rows.last().is_none_or(|r| r.seq == seq);
    if !contiguous {
        return Err(AdminError::Conflict(format!(
            "the history at seq {seq} is no longer stored (removed by log retention)"
        )));
    }
    Ok((snapshot, rows))
}

/// The document as it was at `seq` (built off the async runtime: a large document takes
/// milliseconds). `skip_gc` keeps deleted content, which diffs need.
pub(crate) async fn doc_at(
    store: &Store,
    doc_id: i64,
    seq: i64,
    skip_gc: bool,
) -> Result<Doc, AdminError> {
    let (snapshot, rows) = rows_to(store, doc_id, seq).await?;
    tokio::task::spawn_blocking(move || {
        history::reconstruct(
            snapshot.as_ref().map(|s| s.state.as_slice()),
            rows.iter().map(|r| r.data.as_slice()),
            skip_gc,
        )
    })
    .await
    .map_err(|_| AdminError::Internal)?
    .map_err(stored_data_error)
}

/// Stored history that cannot be decoded is a server-side fault, not the caller's.
fn stored_data_error(e: history::HistoryError) -> AdminError {
    tracing::error!(error = %e, "stored history could not be rebuilt");
    AdminError::Internal
}

/// The document named by the path, with its stored record.
async fn stored_doc(
    state: &AppState,
    raw: Result<Path<String>, PathRejection>,
) -> Result<(String, &Store, DocumentInfo), AdminError> {
    let name = doc_name(state, raw?.0)?;
    let store = store(state)?;
    let info = document(store, &name).await?;
    Ok((name, store, info))
}

/// `?after=&before=&limit=&order=&group=&gap=` of the timeline.
#[derive(Debug, Deserialize)]
pub(super) struct TimelineQuery {
    after: Option<i64>,
    before: Option<i64>,
    limit: Option<u32>,
    order: Option<String>,
    group: Option<String>,
    gap: Option<u64>,
}

/// `GET /documents/{name}/timeline`: a page of changes with authors and what they changed.
pub(super) async fn timeline(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TimelineQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query?;
    let (_, store, info) = stored_doc(&state, name).await?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(AdminError::BadRequest(format!(
            "limit must be 1..={MAX_PAGE}"
        )));
    }
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "order must be asc or desc, not {other:?}"
            )));
        }
    };
    let sessions = match q.group.as_deref() {
        None | Some("none") => false,
        Some("session") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "group must be none or session, not {other:?}"
            )));
        }
    };
    for (what, value) in [("after", q.after), ("before", q.before)] {
        if value.is_some_and(|v| v < 0) {
            return Err(AdminError::BadRequest(format!(
                "{what} must be a sequence number >= 0"
            )));
        }
    }
    let gap = std::time::Duration::from_secs(q.gap.unwrap_or(300));
    let mut rows = if descending {
        let before = q.before.unwrap_or(info.last_seq + 1);
        let mut rows = store
            .log_page_desc(info.doc_id, before, limit + 1, true)
            .await?;
        rows.reverse();
        rows
    } else {
        store
            .log_page(info.doc_id, q.after.unwrap_or(0), limit + 1, true)
            .await?
    };
    // One extra row tells whether there is another page; it is dropped from this one.
    let more = rows.len() > limit as usize;
    if more {
        if descending {
            rows.remove(0);
        } else {
            rows.truncate(limit as usize);
        }
    }
    let next = match (more, descending) {
        (false, _) => None,
        (true, false) => rows.last().map(|r| r.seq),
        (true, true) => rows.first().map(|r| r.seq),
    };
    let start = rows.first().map_or(0, |r| r.seq - 1);
    let base = doc_at(store, info.doc_id, start, true).await?;
    let changes =
        tokio::task::spawn_blocking(move || history::summary::summarize_rows(&base, &rows))
            .await
            .map_err(|_| AdminError::Internal)?
            .map_err(stored_data_error)?;
    let mut changes = changes;
    if descending {
        changes.reverse();
    }
    if sessions {
        let sessions = history::summary::group_sessions(&changes, gap);
        return Ok(ok(json!({ "sessions": sessions, "next": next })));
    }
    Ok(ok(json!({ "changes": changes, "next": next })))
}

/// `?seq=|at=|label=&format=` of a state read.
#[derive(Debug, Deserialize)]
pub(super) struct StateQuery {
    // Not `#[serde(flatten)]` of a `Point`: flattening makes query numbers fail to parse.
    seq: Option<i64>,
    at: Option<String>,
    label: Option<String>,
    format: Option<String>,
}

/// `GET /documents/{name}/state`: the content at a point, as JSON or as a Yjs update.
pub(super) async fn state(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query?;
    let binary = match q.format.as_deref() {
        None | Some("json") => false,
        Some("binary") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "format must be json or binary, not {other:?}"
            )));
        }
    };
    let (_, store, info) = stored_doc(&state, name).await?;
    let point = Point {
        seq: q.seq,
        at: q.at,
        label: q.label,
    };
    let seq = point
        .resolve(store, &info, "")
        .await?
        .unwrap_or(info.last_seq);
    let doc = doc_at(store, info.doc_id, seq, false).await?;
    if binary {
        let update = tokio::task::spawn_blocking(move || {
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default())
        })
        .await
        .map_err(|_| AdminError::Internal)?;
        return Ok(update_response(seq, update));
    }
    let time = change_time(store, info.doc_id, seq).await?;
    let content = tokio::task::spawn_blocking(move || history::json::content_json(&doc))
        .await
        .map_err(|_| AdminError::Internal)?;
    Ok(ok(json!({ "seq": seq, "time": time, "content": content })))
}

/// When change `seq` was made (`None` for 0, or when retention removed it).
async fn change_time(store: &Store, doc_id: i64, seq: i64) -> Result<Option<String>, AdminError> {
    if seq <= 0 {
        return Ok(None);
    }
    let row = store.log_page(doc_id, seq - 1, 1, false).await?;
    Ok(row
        .first()
        .filter(|r| r.seq == seq)
        .map(|r| time_str(r.created_at)))
}

/// `?from=&from_at=&from_label=&to=&to_at=&to_label=` of a diff.
#[derive(Debug, Deserialize)]
pub(super) struct DiffQuery {
    from: Option<i64>,
    from_at: Option<String>,
    from_label: Option<String>,
    to: Option<i64>,
    to_at: Option<String>,
    to_label: Option<String>,
}

/// `GET /documents/{name}/diff`: inserted and deleted spans with their authors between two
/// points.
pub(super) async fn diff(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query?;
    let (_, store, info) = stored_doc(&state, name).await?;
    let from = Point {
        seq: q.from,
        at: q.from_at,
        label: q.from_label,
    }
    .resolve(store, &info, "from_")
    .await?
    .ok_or_else(|| AdminError::BadRequest("give from, from_at or from_label".into()))?;
    let to = Point {
        seq: q.to,
        at: q.to_at,
        label: q.to_label,
    }
    .resolve(store, &info, "to_")
    .await?
    .unwrap_or(info.last_seq);
    if to < from {
        return Err(AdminError::BadRequest(format!(
            "to ({to}) is before from ({from})"
        )));
    }
    let base = doc_at(store, info.doc_id, from, true).await?;
    let rows = store.log_range(info.doc_id, from, to).await?;
    if rows.len() as i64 != to - from {
        return Err(AdminError::Conflict(format!(
            "the history between {from} and {to} is no longer stored (removed by log retention)"
        )));
    }
    let diff = tokio::task::spawn_blocking(move || history::diff::diff(base, from, &rows))
        .await
        .map_err(|_| AdminError::Internal)?
        .map_err(stored_data_error)?;
    Ok((StatusCode::OK, Json(diff)).into_response())
}

/// Body of a restore request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreRequest {
    seq: Option<i64>,
    at: Option<String>,
    label: Option<String>,
    author: Option<String>,
}

/// `POST /documents/{name}/restore`: put the content back to a point, as a new change made
/// through the live room.
pub(super) async fn restore(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<RestoreRequest>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(req) = body?;
    let (name, store, info) = stored_doc(&state, name).await?;
    let author = req.author.unwrap_or_else(|| "admin".into());
    check_text("author", &author)?;
    let seq = Point {
        seq: req.seq,
        at: req.at,
        label: req.label,
    }
    .resolve(store, &info, "")
    .await?
    .ok_or_else(|| AdminError::BadRequest("give seq, at or label".into()))?;
    let target = doc_at(store, info.doc_id, seq, false).await?;
    let applied = replace_content(&state, &name, target, author.clone()).await?;
    let mut answer = applied_json(applied).await?;
    if let Some(change) = answer["seq"].as_i64() {
        let kind = crate::changes::ChangeKind::Restored {
            seq: change,
            restored_to: seq,
            author,
        };
        state.shared.changes.publish(&name.as_str().into(), kind);
    }
    answer["restored_to"] = json!(seq);
    Ok(ok(answer))
}

/// A short caller-chosen string (label name, author): 1..=200 bytes, no control characters.
fn check_text(what: &str, s: &str) -> Result<(), AdminError> {
    if s.is_empty() || s.len() > MAX_LABEL || s.chars().any(char::is_control) {
        return Err(AdminError::BadRequest(format!(
            "{what} must be 1..={MAX_LABEL} bytes without control characters"
        )));
    }
    Ok(())
}

fn label_json(l: &Label) -> serde_json::Value {
    json!({ "name": l.name, "seq": l.seq, "created_at": time_str(l.created_at) })
}

/// `GET /documents/{name}/labels`.
pub(super) async fn labels(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let (_, store, info) = stored_doc(&state, name).await?;
    let labels: Vec<_> = store
        .labels(info.doc_id)
        .await?
        .iter()
        .map(label_json)
        .collect();
    Ok(ok(json!({ "labels": labels })))
}

/// Body of a new label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LabelRequest {
    name: String,
    seq: Option<i64>,
}

/// `POST /documents/{name}/labels`: name a point (default: the newest change).
pub(super) async fn add_label(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<LabelRequest>, JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(req) = body?;
    let (_, store, info) = stored_doc(&state, name).await?;
    check_text("label name", &req.name)?;
    let seq = Point {
        seq: req.seq,
        ..Point::default()
    }
    .resolve(store, &info, "")
    .await?
    .unwrap_or(info.last_seq);
    let label = store.put_label(info.doc_id, &req.name, seq).await?;
    Ok((StatusCode::CREATED, Json(label_json(&label))).into_response())
}

/// `DELETE /documents/{name}/labels/{label}`.
pub(super) async fn delete_label(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AdminError> {
    let Path((name, label)) = path?;
    let name = doc_name(&state, name)?;
    let store = store(&state)?;
    let info = document(store, &name).await?;
    if !store.delete_label(info.doc_id, &label).await? {
        return Err(AdminError::NotFound(format!("no label {label:?}")));
    }
    Ok(ok(json!({ "deleted": true })))
}
