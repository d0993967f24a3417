//! The HTTP fallback transport, for clients that cannot open a WebSocket: the y-websocket
//! protocol over Server-Sent Events (what the server sends) and POST (what the client sends).
//!
//! `GET /api/v1/documents/{name}/sync` opens a session: the same checks as a WebSocket upgrade
//! (name, deletion, origin, token from `Authorization: Bearer` or `?token=`, connection
//! limits), then a peer joins the room exactly as a WebSocket connection's does. The stream
//! starts with `event: session` (the session id and where to POST), then carries every frame
//! the room sends the peer as an unnamed event (`data:` = base64 of the binary frame), with
//! heartbeat comments every `--ping-interval`, and ends with `event: close` `{code, reason}`.
//!
//! `POST /api/v1/documents/{name}/sync/{session}` carries one or more y-websocket messages as
//! its binary body; they are judged like one WebSocket frame ([`connection::admit_frame`]: size,
//! messages per frame, nesting, message rate) and handed to the room in order. The room then
//! applies its rules as for any peer: read-only peers' updates are ignored, awareness
//! ownership, the pending bound. What would close a WebSocket closes the session.

mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::IntoParams;

pub(crate) use self::session::Sessions;
use self::session::{Feed, Lookup, Session, SessionId, Stage};
use crate::admin::openapi::{
    BadRequest, DocName, Forbidden, Gone, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
};
use crate::api::{ApiError, bearer, doc_name};
use crate::auth::{Access, Grant};
use crate::close::Close;
use crate::connection::{admit_frame, deadline_at};
use crate::http::AppState;
use crate::limits::RateLimiter;
use crate::peer::{Outbox, Peer};
use crate::registry::JoinError;
use crate::room::RoomMsg;

/// The routes, with their full paths.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let max = state.shared.config.max_message_size;
    Router::new()
        .route("/api/v1/documents/{name}/sync", axum::routing::get(open))
        .route(
            "/api/v1/documents/{name}/sync/{session}",
            axum::routing::post(post).layer(axum::extract::DefaultBodyLimit::max(max)),
        )
}

/// `?token=` of a session (EventSource cannot set headers).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OpenQuery {
    /// The document JWT, when it cannot be sent as `Authorization: Bearer`.
    token: Option<String>,
}

/// The `{name}` and `{session}` path segments of a POST.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // described, never built: the handler takes the segments as strings
pub(crate) struct SessionPath {
    /// The document name as one percent-encoded path segment (as in `GET .../sync`).
    name: String,
    /// The session id from the `session` event (32 hex digits).
    session: String,
}

/// `GET /documents/{name}/sync`.
#[utoipa::path(
    get,
    path = "/api/v1/documents/{name}/sync",
    operation_id = "openSyncSession",
    tag = "sync",
    summary = "Open a fallback sync session: the y-websocket protocol as Server-Sent Events",
    params(DocName, OpenQuery),
    responses(
        (status = 200, description = "text/event-stream: first `event: session` (data: {\"session\": id, \"post\": the path to POST to, \"access\": \"rw\" or \"ro\"}), then one unnamed event per y-websocket frame the server sends (data: the binary frame in base64), heartbeat comments every --ping-interval, and last `event: close` (data: {\"code\", \"reason\"}: the close code and reason a WebSocket would get).", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 410, response = Gone),
        (status = 429, description = "Too many connections to this document or from this address.", body = crate::admin::ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn open(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<OpenQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = doc_name(&state, name)?;
    let Query(query) = query?;
    check_origin(&state, &headers)?;
    let token = bearer(&headers).or(query.token.as_deref());
    let grant = grant(&state, token, &name)?;
    let shared = &state.shared;
    let name: Arc<str> = Arc::from(name);
    let ip = connect.map(|Extension(ConnectInfo(addr))| addr.ip());
    let slots = crate::http::limit_slots(shared, ip, &name).map_err(|(reason, label)| {
        shared.metrics.refused(label);
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, reason)
    })?;
    let config = &shared.config;
    let (peer, outbox, room) = join(&state, &name, &grant).await?;
    let now = Instant::now();
    let rate = RateLimiter::new(
        config.max_messages_per_sec,
        config.message_burst,
        now.into_std(),
    );
    let session = Arc::new(Session::new(name.clone(), peer.clone(), room.clone(), rate));
    let id = match state.sessions.insert(session.clone()) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a session id");
            shared.unregister(peer.id);
            crate::room::leave_later(room, peer.id);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot make a session id",
            ));
        }
    };
    shared.metrics.connections.inc();
    shared.metrics.connections_accepted.inc();
    let feed = Feed {
        id,
        session,
        outbox,
        sessions: state.sessions.clone(),
        shared: shared.clone(),
        hello: hello(id, &name, grant.access),
        opened: now,
        expiry: grant.expires_at.map(deadline_at),
        heartbeat: now + config.ping_interval,
        stage: Stage::Hello,
        _slots: slots,
    };
    Ok(stream(feed))
}

/// A peer with `grant`'s rights, joined to the room of `name` like a WebSocket connection's:
/// the peer, its queue and the room's inbox; 410 for a deleted document, 503 when it cannot
/// be loaded.
async fn join(
    state: &AppState,
    name: &str,
    grant: &Grant,
) -> Result<(Arc<Peer>, Outbox, mpsc::Sender<RoomMsg>), ApiError> {
    let shared = &state.shared;
    let config = &shared.config;
    let (peer, outbox) = Peer::new(
        shared.next_conn_id(),
        config.outbox_frames,
        config.outbox_bytes,
    );
    let peer = Arc::new(peer.with_grant(grant).within(&shared.shutdown));
    // Registered before joining, as a WebSocket's peer: a revocation meanwhile reaches it.
    shared.register(peer.clone());
    match state.registry.join(name, peer.clone()).await {
        Ok(room) => Ok((peer, outbox, room)),
        Err(e) => {
            shared.unregister(peer.id);
            Err(match e {
                JoinError::Deleted => {
                    shared.metrics.refused("deleted");
                    ApiError::new(StatusCode::GONE, "document deleted")
                }
                JoinError::Unavailable | JoinError::LoadFailed => {
                    shared.metrics.refused("load_failed");
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Close::LoadFailed.reason())
                }
            })
        }
    }
}

/// The `data` of a session's first event: its id, where to POST, and its access.
fn hello(id: SessionId, name: &str, access: Access) -> serde_json::Value {
    let segment = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    serde_json::json!({
        "session": format!("{id:032x}"),
        "post": format!("/api/v1/documents/{segment}/sync/{id:032x}"),
        "access": match access {
            Access::ReadOnly => "ro",
            Access::ReadWrite => "rw",
        },
    })
}

/// The response of an open session: its feed as an event stream.
fn stream(feed: Feed) -> Response {
    let events = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next_event().await?;
        Some((Ok::<_, std::convert::Infallible>(event), feed))
    });
    let mut response = Sse::new(events).into_response();
    // Proxies that buffer (nginx) would hold the frames back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The grant of a session's token: the admin token grants everything (author `admin`), a
/// document JWT is checked like a WebSocket upgrade's (open mode: anyone).
fn grant(state: &AppState, token: Option<&str>, name: &str) -> Result<Grant, ApiError> {
    let shared = &state.shared;
    if let (Some(token), Some(admin)) = (token, shared.config.admin_token.as_deref())
        && crate::admin::constant_time_eq(token.as_bytes(), admin.as_bytes())
    {
        return Ok(Grant {
            user: Some("admin".into()),
            ..Grant::open()
        });
    }
    Ok(shared
        .auth
        .authorize(token, name)
        .inspect_err(|e| shared.metrics.refused(e.label()))?)
}

/// `--allowed-origins` as for upgrades, except that a request without `Origin` passes:
/// browsers send it on every cross-origin request, but not on a same-origin `GET` (the demo's
/// own stream), and a client outside a browser can send any origin anyway.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let config = &state.shared.config;
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    match origin {
        Some(origin) if !config.allowed_origins.is_empty() => {
            if crate::http::origin_allowed(config, origin) {
                Ok(())
            } else {
                state.shared.metrics.refused("origin");
                Err(ApiError::new(StatusCode::FORBIDDEN, "origin not allowed"))
            }
        }
        _ => Ok(()),
    }
}

/// `POST /documents/{name}/sync/{session}`.
#[utoipa::path(
    post,
    path = "/api/v1/documents/{name}/sync/{session}",
    operation_id = "postSyncMessages",
    tag = "sync",
    summary = "Send y-websocket messages into a fallback sync session",
    params(SessionPath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "One or more y-websocket messages, concatenated (judged like one WebSocket frame: at most --max-message-size bytes and --max-messages-per-frame messages)."),
    responses(
        (status = 204, description = "Handed to the document's room, in order (answered later when the session is over its message rate)."),
        (status = 400, description = "Malformed messages: the session is closed with the close code in the reason (and in its stream's close event).", body = crate::admin::ErrorBody),
        (status = 403, description = "An Origin not in --allowed-origins.", body = crate::admin::ErrorBody),
        (status = 404, response = NotFound),
        (status = 410, description = "The session is closed (the reason names its close code), or the document was deleted.", body = crate::admin::ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, description = "Rate abuse: more messages in one request than --message-burst; the session is closed with 4429.", body = crate::admin::ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub(crate) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((name, id)) = path?;
    check_origin(&state, &headers)?;
    let session = live_session(&state, &name, &id)?;
    let peer = &session.peer;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            peer.close(Close::MessageTooBig);
        }
        ApiError::from(e)
    })?;
    let shared = &state.shared;
    let limits = crate::protocol::frame_limits(&shared.config);
    let mut rate = session.input.lock().await;
    let now = Instant::now();
    let (msg, pause) = admit_frame(&body, peer.id, &shared.metrics, &limits, &mut rate, now)
        .map_err(|reason| {
            peer.close(reason);
            let status = match reason {
                Close::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, closed_reason(reason))
        })?;
    session.touch(now);
    if session.room.send(msg).await.is_err() {
        peer.close(Close::Internal);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            closed_reason(Close::Internal),
        ));
    }
    // Over the message rate: the answer (and with it the client's next POST, which waits for
    // the rate lock) comes once the budget refilled, as a WebSocket is not read meanwhile.
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The live session `id` of document `name`: 404 when there is none (or it belongs to
/// another document), 410 when it closed.
fn live_session(state: &AppState, name: &str, id: &str) -> Result<Arc<Session>, ApiError> {
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "no such session");
    let id = parse_id(id).ok_or_else(unknown)?;
    match state.sessions.find(id) {
        Lookup::Live(session) if *session.name == *name => Ok(session),
        Lookup::Ended(reason) => Err(ApiError::new(StatusCode::GONE, closed_reason(reason))),
        Lookup::Live(_) | Lookup::Unknown => Err(unknown()),
    }
}

/// A session id as the `session` event gives it: 32 lowercase hex digits.
fn parse_id(id: &str) -> Option<SessionId> {
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| SessionId::from_str_radix(id, 16).ok())
        .flatten()
}

/// "session closed: <code> <reason>".
fn closed_reason(reason: Close) -> String {
    format!("session closed: {} {}", reason.code(), reason.reason())
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_exactly_32_lowercase_hex_digits() {
        let id: SessionId = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
        assert_eq!(parse_id(&format!("{id:032x}")), Some(id));
        assert_eq!(parse_id(&format!("{:032x}", 1u128)), Some(1));
        for bad in [
            "",
            "1",
            "+0123456789abcdef0123456789abcde",
            "0123456789ABCDEF0123456789abcdef",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
        assert_eq!(
            closed_reason(Close::ClientClosed),
            "session closed: 1000",
            "no trailing space"
        );
    }
}
