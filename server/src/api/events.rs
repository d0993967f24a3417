//! Change feeds as Server-Sent Events.
//!
//! `GET /documents/{name}/events`: one `change` event per durable change, `id` = its seq, in
//! log order, read from the durable log; it resumes after `Last-Event-ID` (or `?after=N`)
//! across server restarts with no gap and no duplicate, and starts at the current end when
//! neither is given. The change bus only wakes the reader; a reader that lagged, or a wake-up
//! that was lost, costs nothing but a re-read of the log (which is also re-read every
//! [`POLL`]). `restored` follows the change a restore made; `deleted` ends the feed.
//!
//! `GET /events?prefix=P`: the same events for every document under a prefix, live from the
//! moment of connecting (each event names its document and seq, so a consumer that reconnects
//! catches up per document with `/documents/{name}/events?after=seq`); `lagged` tells a
//! consumer too slow for the bus that it missed events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crdt_store::{LogRow, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;
use yrs::Doc;

use super::{ApiError, Scope, caller, doc_name};
use crate::admin::openapi::{
    BadRequest, Conflict, DocName, Forbidden, Gone, Internal, NotFound, Unauthorized, Unavailable,
};
use crate::changes::{ChangeEvent, ChangeKind};
use crate::history::summary::{Change, summarize_rows};
use crate::http::AppState;

/// Log rows read (and sent) per step.
const PAGE: u32 = 256;
/// Events buffered for one consumer before the feed waits for it.
const BUFFER: usize = 64;
/// How often a feed re-reads the log even without a wake-up.
const POLL: Duration = Duration::from_secs(15);
/// How often an idle feed sends a comment, so proxies keep the stream open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `?after=&include=` of a document feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedQuery {
    /// Start after this seq (`Last-Event-ID` wins when both are given); default: the end.
    after: Option<i64>,
    /// `update`: each change event carries its Yjs update (base64).
    include: Option<String>,
}

/// `?prefix=&include=` of a prefix feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PrefixQuery {
    /// Documents whose names start with this (the token needs a prefix grant covering it).
    prefix: Option<String>,
    /// `update`: each change event carries its Yjs update (base64).
    include: Option<String>,
}

/// `?include=update` adds each change's Yjs update (base64).
fn include_update(include: Option<&str>) -> Result<bool, ApiError> {
    match include {
        None | Some("") => Ok(false),
        Some("update") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "include must be update, not {other:?}"
        ))),
    }
}

/// One change as an event's data.
#[derive(Serialize)]
struct ChangeData<'a> {
    /// The document (prefix feeds).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(flatten)]
    change: &'a Change,
    /// The update itself (base64), with `?include=update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    update: Option<String>,
}

/// An SSE response fed by a task writing into `rx`; the task ends when the client goes.
fn sse(rx: mpsc::Receiver<Event>) -> Response {
    let mut rx = rx;
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

/// The durable store, or 409 with memory storage (no log to follow).
fn store(state: &AppState) -> Result<Store, ApiError> {
    state.shared.storage.store().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "change feeds need durable storage; the server runs with --database-url memory",
        )
    })
}

/// `GET /documents/{name}/events`.
#[utoipa::path(
    get,
    path = "/api/v1/documents/{name}/events",
    operation_id = "documentEvents",
    tag = "backends",
    summary = "Follow a document's durable changes (Server-Sent Events), resumable",
    params(DocName, FeedQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq.")),
    responses(
        (status = 200, description = "text/event-stream: `change` events (id = seq; data: seq, time, size, author, clients, summary, update), `restored`, `deleted`, heartbeat comments.", content_type = "text/event-stream", body = String),
        (status = 409, response = Conflict),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(crate) async fn document(
    State(state): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = doc_name(&state, name)?;
    caller(&state, &headers, Scope::Document(&name))?;
    let Query(q) = query?;
    let with_update = include_update(q.include.as_deref())?;
    let store = store(&state)?;
    let Some(info) = store.document(&name).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such document"));
    };
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be a sequence number"))
        })
        .transpose()?;
    let after = last_event.or(q.after).unwrap_or(info.last_seq);
    if after < 0 {
        return Err(ApiError::bad_request(
            "after must be a sequence number >= 0",
        ));
    }
    // Subscribed before the first read: nothing committed after that read can be missed.
    let bus = state.shared.changes.subscribe();
    let (tx, rx) = mpsc::channel(BUFFER);
    let feed = DocFeed {
        name: Arc::from(name.as_str()),
        doc_id: info.doc_id,
        store,
        cursor: after,
        base: None,
        with_update,
        tx,
    };
    tokio::spawn(feed.run(bus));
    Ok(sse(rx))
}

/// The task behind one document feed.
struct DocFeed {
    name: Arc<str>,
    doc_id: i64,
    store: Store,
    /// The last seq sent.
    cursor: i64,
    /// The document at `cursor`, for the change summaries (built on first use).
    base: Option<Doc>,
    with_update: bool,
    tx: mpsc::Sender<Event>,
}

/// Why a feed stops.
enum Stop {
    /// The consumer went away.
    Gone,
    /// The document was deleted (the `deleted` event was sent).
    Deleted,
}

impl DocFeed {
    async fn run(mut self, mut bus: broadcast::Receiver<ChangeEvent>) {
        let mut restored: Vec<(i64, i64, String)> = Vec::new();
        loop {
            match self.catch_up().await {
                Ok(()) => {}
                Err(Stop::Gone) => return,
                Err(Stop::Deleted) => {
                    let _ = self.tx.send(deleted_event(&self.name)).await;
                    return;
                }
            }
            // Restores are announced once their change is in the log; send each after it.
            let cursor = self.cursor;
            let (ready, later): (Vec<_>, Vec<_>) =
                restored.into_iter().partition(|(seq, _, _)| *seq <= cursor);
            restored = later;
            for (seq, to, author) in ready {
                if self
                    .tx
                    .send(restored_event(None, seq, to, &author))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let wake = tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep(POLL) => None,
                ev = bus.recv() => Some(ev),
            };
            match wake {
                None | Some(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Some(Err(broadcast::error::RecvError::Closed)) => return,
                Some(Ok(ev)) if ev.name != self.name => {}
                Some(Ok(ev)) => match ev.kind {
                    ChangeKind::Durable { .. } => {}
                    ChangeKind::Restored {
                        seq,
                        restored_to,
                        author,
                    } => restored.push((seq, restored_to, author)),
                    ChangeKind::Deleted => {
                        // What was logged before the deletion is still sent (when readable).
                        let _ = self.catch_up().await;
                        let _ = self.tx.send(deleted_event(&self.name)).await;
                        return;
                    }
                },
            }
        }
    }

    /// Sends every logged change after the cursor.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let rows = match self
                .store
                .log_page(self.doc_id, self.cursor, PAGE, true)
                .await
            {
                Ok(rows) => rows,
                Err(crdt_store::StoreError::Deleted(_)) => return Err(Stop::Deleted),
                Err(e) => {
                    // Storage trouble: try again at the next wake-up or poll.
                    tracing::warn!(error = %e, doc = %self.name, "change feed: log read failed");
                    return Ok(());
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                return Ok(());
            };
            if self.base.is_none() {
                self.base = Some(doc_at(&self.store, self.doc_id, self.cursor).await);
            }
            let base = self.base.take().unwrap_or_default();
            let (base, events) = change_events(base, rows, None, self.with_update).await;
            self.base = base;
            for event in events {
                if self.tx.send(event).await.is_err() {
                    return Err(Stop::Gone);
                }
            }
            self.cursor = last;
        }
    }
}

/// The document at `seq` for summaries; an empty one when it cannot be rebuilt (log
/// retention removed the rows), which only makes the first summaries count more.
async fn doc_at(store: &Store, doc_id: i64, seq: i64) -> Doc {
    match crate::admin::history::doc_at(store, doc_id, seq, true).await {
        Ok(doc) => doc,
        Err(e) => {
            tracing::debug!(error = %e, seq, "change feed: no base state; summaries start empty");
            crate::history::history_doc(true)
        }
    }
}

/// Events for consecutive `rows` on `base` (the document just before the first of them).
/// Returns the advanced base (`None` when a row could not be summarized: the next batch
/// rebuilds it) and one event per row.
async fn change_events(
    base: Doc,
    rows: Vec<LogRow>,
    name: Option<Arc<str>>,
    with_update: bool,
) -> (Option<Doc>, Vec<Event>) {
    let built = tokio::task::spawn_blocking(move || {
        let summaries = summarize_rows(&base, &rows);
        let ok = summaries.is_ok();
        let changes = summaries.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "change feed: summary failed; sending changes without it");
            rows.iter()
                .map(|r| Change {
                    seq: r.seq,
                    time: r.created_at,
                    size: r.size,
                    author: r.author.clone(),
                    clients: Vec::new(),
                    summary: Default::default(),
                })
                .collect()
        });
        let events: Vec<Event> = changes
            .iter()
            .zip(&rows)
            .map(|(change, row)| {
                let data = ChangeData {
                    name: name.as_deref(),
                    change,
                    update: with_update.then(|| STANDARD.encode(&row.data)),
                };
                let id = match &name {
                    Some(n) => format!("{n}:{}", change.seq),
                    None => change.seq.to_string(),
                };
                Event::default()
                    .event("change")
                    .id(id)
                    .json_data(&data)
                    .unwrap_or_else(|_| Event::default().event("change"))
            })
            .collect();
        (ok.then_some(base), events)
    })
    .await;
    built.unwrap_or((None, Vec::new()))
}

fn deleted_event(name: &str) -> Event {
    Event::default()
        .event("deleted")
        .json_data(serde_json::json!({ "name": name }))
        .unwrap_or_else(|_| Event::default().event("deleted"))
}

fn restored_event(name: Option<&str>, seq: i64, restored_to: i64, author: &str) -> Event {
    let mut data = serde_json::json!({ "seq": seq, "restored_to": restored_to, "author": author });
    if let Some(name) = name {
        data["name"] = serde_json::Value::from(name);
    }
    Event::default()
        .event("restored")
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("restored"))
}

/// `GET /events?prefix=P`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "prefixEvents",
    tag = "backends",
    summary = "Follow the changes of every document under a prefix, live (Server-Sent Events)",
    params(PrefixQuery),
    responses(
        (status = 200, description = "text/event-stream: `change` events (id = name:seq; data includes name), `restored`, `deleted`, `lagged`, heartbeats.", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
)]
pub(crate) async fn prefix(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PrefixQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let prefix = q.prefix.unwrap_or_default();
    caller(&state, &headers, Scope::Prefix(&prefix))?;
    let with_update = include_update(q.include.as_deref())?;
    let store = store(&state)?;
    let bus = state.shared.changes.subscribe();
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(prefix_feed(prefix, store, with_update, bus, tx));
    Ok(sse(rx))
}

/// The task behind one prefix feed: for each durable range announced on the bus under the
/// prefix, the rows of that range from the log.
async fn prefix_feed(
    prefix: String,
    store: Store,
    with_update: bool,
    mut bus: broadcast::Receiver<ChangeEvent>,
    tx: mpsc::Sender<Event>,
) {
    // Document ids seen so far (a name's id never changes: names are never reused).
    let mut ids: HashMap<Arc<str>, i64> = HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = tx.closed() => return,
            ev = bus.recv() => ev,
        };
        let ev = match ev {
            Ok(ev) if ev.name.starts_with(&prefix) => ev,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let event = Event::default()
                    .event("lagged")
                    .json_data(serde_json::json!({ "missed": missed }))
                    .unwrap_or_else(|_| Event::default().event("lagged"));
                if tx.send(event).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let events = match ev.kind {
            ChangeKind::Durable { after, upto } => {
                range_events(&store, &mut ids, &ev.name, after, upto, with_update).await
            }
            ChangeKind::Restored {
                seq,
                restored_to,
                author,
            } => vec![restored_event(Some(&ev.name), seq, restored_to, &author)],
            ChangeKind::Deleted => vec![deleted_event(&ev.name)],
        };
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Events for rows `after + 1 ..= upto` of one document.
async fn range_events(
    store: &Store,
    ids: &mut HashMap<Arc<str>, i64>,
    name: &Arc<str>,
    after: i64,
    upto: i64,
    with_update: bool,
) -> Vec<Event> {
    let doc_id = match ids.get(name) {
        Some(id) => *id,
        None => match store.document(name).await {
            Ok(Some(info)) => {
                ids.insert(name.clone(), info.doc_id);
                info.doc_id
            }
            _ => return Vec::new(),
        },
    };
    let rows = match store.log_range(doc_id, after, upto).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, doc = %name, "change feed: log read failed");
            return Vec::new();
        }
    };
    if rows.is_empty() {
        return Vec::new();
    }
    let base = doc_at(store, doc_id, after).await;
    change_events(base, rows, Some(name.clone()), with_update)
        .await
        .1
}
