//! History: timeline, state at a point, diff, restore and labels.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crdt_store::{DocumentInfo, Label, LogRow, Snapshot, Store};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::documents::{applied_answer, replace_content, update_response};
use super::openapi::{
    BadRequest, Conflict, DocName, Gone, Internal, LabelPath, NotFound, PayloadTooLarge,
    Unauthorized, Unavailable, YjsUpdate,
};
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TimelineQuery {
    /// order=asc: changes with seq > after (default 0). Negative: 400.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// order=desc: changes with seq < before (default: after the newest). Negative: 400.
    #[param(minimum = 0)]
    before: Option<i64>,
    /// Page size, in changes (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// Paging direction: asc (default) or desc.
    #[param(value_type = Option<Order>)]
    order: Option<String>,
    /// none (default), or session: merge consecutive changes by one author.
    #[param(value_type = Option<Grouping>)]
    group: Option<String>,
    /// group=session: the longest pause (seconds) inside one session (default 300).
    #[param(default = 300)]
    gap: Option<u64>,
}

/// Paging direction of the timeline. Query values stay strings in the handlers so a wrong
/// one gets this API's 400 wording; these enums only describe them.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built
pub(super) enum Order {
    /// Oldest first, from `after`.
    Asc,
    /// Newest first, from `before`.
    Desc,
}

/// Whether the timeline merges changes into sessions.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built
pub(super) enum Grouping {
    /// One entry per change.
    None,
    /// Consecutive changes by one author less than `gap` apart are merged.
    Session,
}

/// Rendering of a state read.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // described, never built
pub(super) enum StateFormat {
    /// Rendered content.
    Json,
    /// A Yjs update (v1).
    Binary,
}

/// A page of the timeline: changes, or sessions with `group=session`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TimelinePage {
    /// group=none.
    Changes(ChangePage),
    /// group=session.
    Sessions(SessionPage),
}

/// A page of changes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangePage {
    /// The changes, in the page's order.
    changes: Vec<history::summary::Change>,
    /// Pass as after (asc) or before (desc); null on the last page.
    #[schema(required = true)]
    next: Option<i64>,
}

/// A page of sessions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionPage {
    /// The sessions, in the page's order.
    sessions: Vec<history::summary::Session>,
    /// Pass as after (asc) or before (desc); null on the last page.
    #[schema(required = true)]
    next: Option<i64>,
}

/// `GET /documents/{name}/timeline`: a page of changes with authors and what they changed.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents/{name}/timeline",
    operation_id = "getTimeline",
    tag = "history",
    summary = "A page of changes (or sessions)",
    description = "order=asc pages forward from after (exclusive); order=desc pages backward from before (exclusive, default: newest). Pass next as after (asc) or before (desc). With group=session, consecutive changes by the same author less than gap seconds apart are merged into sessions.",
    params(DocName, TimelineQuery),
    responses(
        (status = 200, description = "A page: changes (group=none) or sessions (group=session).", body = TimelinePage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn timeline(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TimelineQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query?;
    let (_, store, info) = stored_doc(&state, name).await?;
    let (limit, descending, sessions) = q.checked()?;
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
        return Ok(ok(TimelinePage::Sessions(SessionPage { sessions, next })));
    }
    Ok(ok(TimelinePage::Changes(ChangePage { changes, next })))
}

impl TimelineQuery {
    /// The page size, whether the page goes backwards, whether changes are grouped into
    /// sessions; 400 for a value out of range.
    fn checked(&self) -> Result<(u32, bool, bool), AdminError> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(AdminError::BadRequest(format!(
                "limit must be 1..={MAX_PAGE}"
            )));
        }
        let descending = match self.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(AdminError::BadRequest(format!(
                    "order must be asc or desc, not {other:?}"
                )));
            }
        };
        let sessions = match self.group.as_deref() {
            None | Some("none") => false,
            Some("session") => true,
            Some(other) => {
                return Err(AdminError::BadRequest(format!(
                    "group must be none or session, not {other:?}"
                )));
            }
        };
        for (what, value) in [("after", self.after), ("before", self.before)] {
            if value.is_some_and(|v| v < 0) {
                return Err(AdminError::BadRequest(format!(
                    "{what} must be a sequence number >= 0"
                )));
            }
        }
        Ok((limit, descending, sessions))
    }
}

/// `?seq=|at=|label=&format=` of a state read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StateQuery {
    // Not `#[serde(flatten)]` of a `Point`: flattening makes query numbers fail to parse.
    /// Sequence number of the point (0 = the empty document before any change). At most one
    /// of seq, at and label.
    #[param(minimum = 0)]
    seq: Option<i64>,
    /// The last change at or before this time: RFC 3339 with any UTC offset (e.g.
    /// 2026-11-25T18:49:10.123Z or 2026-11-25T20:49:10.123+02:00; fractional seconds
    /// optional) or unix milliseconds (e.g. 1795632550123); years 0001 to 9999, else 400.
    #[param(example = "2026-11-25T18:49:10.123Z")]
    at: Option<String>,
    /// A label's name (404 if the document has no such label).
    label: Option<String>,
    /// json (default): rendered content; binary: a Yjs update (v1).
    #[param(value_type = Option<StateFormat>)]
    format: Option<String>,
}

/// The content at a point.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = State)]
pub(crate) struct StateAt {
    /// The point.
    #[schema(minimum = 0)]
    seq: i64,
    /// Time of change seq; null for seq 0 (or when retention removed it).
    #[schema(format = DateTime, required = true)]
    time: Option<String>,
    /// By root name.
    // Rendered by `history::json` as free JSON; `RootContent` describes its shape.
    #[schema(value_type = BTreeMap<String, RootContent>)]
    content: serde_json::Value,
}

/// One root type's content, as `history::json` renders it. Describes the answer only: the
/// content is built as JSON directly.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
#[allow(dead_code)] // described, never built
pub(super) enum RootContent {
    /// A `Y.Text`: its characters.
    Text(String),
    /// A `Y.XmlFragment` as ProseMirror JSON, e.g. `{"type": "doc", "content": [{"type":
    /// "paragraph", "content": [{"type": "text", "text": "Hi", "marks": [{"type": "bold"}]}]}]}`.
    Xml(BTreeMap<String, serde_json::Value>),
    /// A `Y.Map`: its entries.
    Map(BTreeMap<String, serde_json::Value>),
    /// A `Y.Array`: its values.
    Array(Vec<serde_json::Value>),
}

/// `GET /documents/{name}/state`: the content at a point, as JSON or as a Yjs update.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents/{name}/state",
    operation_id = "getState",
    tag = "history",
    summary = "The content at a point",
    description = "Without a point: the newest durable state.",
    params(DocName, StateQuery),
    responses(
        (status = 200, description = "The state: JSON, or with format=binary a Yjs update (v1).", content((StateAt = "application/json"), (YjsUpdate = "application/octet-stream")), headers(("X-Tandem-Seq" = i64, description = "format=binary: sequence number of the newest change the body covers."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
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
    Ok(ok(StateAt { seq, time, content }))
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DiffQuery {
    /// Start point (seq). One of from, from_at and from_label is required.
    #[param(minimum = 0)]
    from: Option<i64>,
    /// Start point: the last change at or before this time (RFC 3339 or unix milliseconds,
    /// as `at` of the state).
    #[param(example = "2026-11-25T18:49:10.123Z")]
    from_at: Option<String>,
    /// Start point: a label.
    from_label: Option<String>,
    /// End point (seq; default: newest).
    #[param(minimum = 0)]
    to: Option<i64>,
    /// End point: the last change at or before this time.
    #[param(example = "2026-11-25T18:49:10.123Z")]
    to_at: Option<String>,
    /// End point: a label.
    to_label: Option<String>,
}

/// `GET /documents/{name}/diff`: inserted and deleted spans with their authors between two
/// points.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents/{name}/diff",
    operation_id = "getDiff",
    tag = "history",
    summary = "What changed between two points, and who changed it",
    description = "One of from, from_at, from_label is required; to defaults to the newest change. Root types without changes are left out.",
    params(DocName, DiffQuery),
    responses(
        (status = 200, description = "The difference.", body = history::diff::DocDiff),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
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

/// Body of a restore request: exactly one of seq, at and label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreRequest {
    /// The point as a sequence number.
    #[schema(minimum = 0)]
    seq: Option<i64>,
    /// The point as a time: RFC 3339 with any UTC offset or unix milliseconds.
    #[schema(example = "2026-11-25T18:49:10.123Z")]
    at: Option<String>,
    /// The point as a label's name.
    label: Option<String>,
    /// Recorded as the restoring change's author (1..=200 bytes, no control characters;
    /// default "admin").
    #[schema(min_length = 1, max_length = 200)]
    author: Option<String>,
}

/// The answer to a restore, once durable.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Restored {
    /// The point restored to.
    #[schema(minimum = 0)]
    restored_to: i64,
    /// Seq of the restoring change; null when nothing changed.
    #[schema(required = true)]
    seq: Option<i64>,
    /// Whether a change was made.
    changed: bool,
}

/// `POST /documents/{name}/restore`: put the content back to a point, as a new change made
/// through the live room.
#[utoipa::path(
    post,
    path = "/api/v1/admin/documents/{name}/restore",
    operation_id = "restoreDocument",
    tag = "history",
    summary = "Put the content back to a point",
    description = "A new forward change applied through the live room: connected clients converge without reloading, offline clients merge when they return, and the restore is itself a change in the history (restore to the point before it to undo it).",
    params(DocName),
    request_body(content = RestoreRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Restored and durable.", body = Restored),
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
    let answer = applied_answer(applied).await?;
    if let Some(change) = answer.seq {
        let kind = crate::changes::ChangeKind::Restored {
            seq: change,
            restored_to: seq,
            author: author.clone(),
        };
        state.shared.changes.publish(&name.as_str().into(), kind);
        // Queued before the answer: an acknowledged restore is announced even after a crash.
        if let Some(hooks) = &state.shared.webhooks
            && let Err(e) = hooks
                .restored(&name, info.doc_id, change, seq, &author)
                .await
        {
            tracing::error!(error = %e, doc = %name, "webhooks: document.restored not queued");
        }
        state
            .shared
            .tell_cluster(crate::cluster::Control::Restored {
                doc: name.to_string(),
                seq: change,
                restored_to: seq,
                author: author.clone(),
            });
    }
    Ok(ok(Restored {
        restored_to: seq,
        seq: answer.seq,
        changed: answer.changed,
    }))
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

/// A label as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Label)]
pub(crate) struct LabelView {
    /// Its name, unique within the document.
    name: String,
    /// The point it names.
    #[schema(minimum = 0)]
    seq: i64,
    /// When it was created.
    #[schema(format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    created_at: String,
}

impl From<&Label> for LabelView {
    fn from(l: &Label) -> LabelView {
        LabelView {
            name: l.name.clone(),
            seq: l.seq,
            created_at: time_str(l.created_at),
        }
    }
}

/// A document's labels.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Labels {
    /// Ordered by seq.
    labels: Vec<LabelView>,
}

/// The answer to a label removal.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LabelDeleted {
    /// Always true.
    deleted: bool,
}

/// `GET /documents/{name}/labels`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/documents/{name}/labels",
    operation_id = "listLabels",
    tag = "history",
    summary = "A document's labels, by seq",
    params(DocName),
    responses(
        (status = 200, description = "The labels.", body = Labels),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(super) async fn labels(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let (_, store, info) = stored_doc(&state, name).await?;
    let labels: Vec<_> = store
        .labels(info.doc_id)
        .await?
        .iter()
        .map(LabelView::from)
        .collect();
    Ok(ok(Labels { labels }))
}

/// Body of a new label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelRequest {
    /// 1..=200 bytes (UTF-8), no control characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The point it names (default: the newest change).
    #[schema(minimum = 0)]
    seq: Option<i64>,
}

/// `POST /documents/{name}/labels`: name a point (default: the newest change).
#[utoipa::path(
    post,
    path = "/api/v1/admin/documents/{name}/labels",
    operation_id = "createLabel",
    tag = "history",
    summary = "Name a point",
    params(DocName),
    request_body(content = LabelRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = LabelView),
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
    Ok((StatusCode::CREATED, Json(LabelView::from(&label))).into_response())
}

/// `DELETE /documents/{name}/labels/{label}`.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/documents/{name}/labels/{label}",
    operation_id = "deleteLabel",
    tag = "history",
    summary = "Remove a label",
    params(LabelPath),
    responses(
        (status = 200, description = "Removed.", body = LabelDeleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
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
    Ok(ok(LabelDeleted { deleted: true }))
}
