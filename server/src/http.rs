//! HTTP surface: WebSocket upgrades on any path are rooms; plain requests are routes.
//!
//! The upgrade check runs *before* routing, so a room may be called `metrics` or `api/v1/x`
//! without ever colliding with the HTTP API.

use std::sync::Arc;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::Layer;
use tracing::debug;

use crate::connection::{self, Admission};
use crate::docname;
use crate::registry::Registry;
use crate::state::Shared;

/// Bytes tungstenite reads from the socket at a time. Small, because it is held by every
/// connection (idle memory is what limits connections per node); a large frame is read in more
/// syscalls (a 200 KB sync message: ~800 reads, about a millisecond).
const READ_BUFFER: usize = 256;
/// Outgoing frames are gathered up to this size before a write syscall.
const WRITE_BUFFER: usize = 16 * 1024;

/// An update waiting longer than this to become durable makes `/healthz` report `degraded`
/// even before the first commit attempt has failed (a stalled database).
const DEGRADED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// What request handlers need.
#[derive(Clone)]
pub struct AppState {
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// Open documents.
    pub registry: Arc<Registry>,
    /// Set while the node drains before shutdown (`/readyz` reports 503).
    pub drain: crate::readiness::Drain,
    /// Live sessions of the HTTP fallback transport (SSE + POST).
    pub(crate) sessions: Arc<crate::fallback::Sessions>,
}

/// The whole HTTP surface as one router: WebSocket upgrades on any path become rooms (checked
/// before routing, see [`dispatch`]), every other request goes to [`routes`]. What the server
/// listens with; a test can call it with `tower::ServiceExt::oneshot`, without TCP.
pub fn app(state: AppState) -> Router {
    let routed = axum::middleware::from_fn_with_state(state.clone(), dispatch).layer(routes(state));
    // A fallback service sees every request before any route matches, which is what keeps a
    // room named `metrics` from reaching `/metrics`.
    Router::new().fallback_service(routed)
}

/// The HTTP routes (everything that is not a WebSocket upgrade).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(crate::readiness::readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(crate::admin::openapi_json))
        .nest("/api/v1/admin", crate::admin::routes(state.clone()))
        .merge(crate::api::routes(&state))
        .merge(crate::fallback::routes(&state))
        .merge(crate::demo::routes())
        .fallback(not_found)
        .with_state(state)
}

/// A refusal before the upgrade: HTTP status, a short reason for the client, a metric label.
fn refuse(state: &AppState, status: StatusCode, reason: String, label: &'static str) -> Response {
    state.shared.metrics.refused(label);
    debug!(status = status.as_u16(), reason = %reason, "upgrade refused");
    (status, reason).into_response()
}

/// The token from `?token=` or, for browsers that prefer it, an item of
/// `Sec-WebSocket-Protocol` shaped like a JWT (three dot-separated base64url parts).
fn find_token(req: &Request) -> Option<String> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "token").then(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    });
    from_query.or_else(|| offered_protocols(req.headers()).find(|p| looks_like_jwt(p)))
}

fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
}

fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Places a connection holds in the connection limits; released when it ends.
pub(crate) type Slots = Vec<Box<dyn std::any::Any + Send + Sync>>;

/// A connection limit that is full: the reason for the client and the metric label.
pub(crate) type LimitFull = (&'static str, &'static str);

/// Places in the per-address (when the client's address is known) and per-document
/// connection limits for one connection, WebSocket or fallback session (released when it
/// ends); the full limit otherwise, which callers answer with 429.
pub(crate) fn limit_slots(
    shared: &Shared,
    ip: Option<std::net::IpAddr>,
    name: &Arc<str>,
) -> Result<Slots, LimitFull> {
    let mut slots: Slots = Vec::new();
    if let Some(ip) = ip {
        let slot = shared
            .per_addr
            .acquire(ip)
            .ok_or(("too many connections from this address", "per_addr_limit"))?;
        slots.push(Box::new(slot));
    }
    let slot = shared
        .per_doc
        .acquire(name.clone())
        .ok_or(("too many connections to this document", "per_doc_limit"))?;
    slots.push(Box::new(slot));
    Ok(slots)
}

/// The client's address, when the listener recorded it.
fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Middleware placed in front of the router: upgrades become rooms, after the name, origin,
/// token and connection limits are checked. No document byte reaches a refused client.
pub async fn dispatch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_websocket_upgrade(req.headers()) {
        return next.run(req).await;
    }
    let config = &state.shared.config;
    if is_hocuspocus_path(req.uri().path(), &config.hocuspocus_path) {
        return hocuspocus_upgrade(state, req).await;
    }
    let name = match docname::from_path(req.uri().path(), config.max_name_len) {
        Ok(name) => name,
        Err(e) => return refuse(&state, StatusCode::BAD_REQUEST, e.to_string(), "bad_name"),
    };
    if state.shared.is_deleted(&name) {
        let reason = "document deleted".to_string();
        return refuse(&state, StatusCode::GONE, reason, "deleted");
    }
    if let Some(refused) = check_origin(&state, &req) {
        return refused;
    }
    let token = find_token(&req);
    let grant = match state.shared.auth.authorize(token.as_deref(), &name) {
        Ok(grant) => grant,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return refuse(&state, status, e.to_string(), e.label());
        }
    };
    let name: Arc<str> = Arc::from(name);
    let slots = match limit_slots(&state.shared, client_ip(&req), &name) {
        Ok(slots) => slots,
        Err((reason, label)) => {
            return refuse(&state, StatusCode::TOO_MANY_REQUESTS, reason.into(), label);
        }
    };
    let selected = offered_protocols(req.headers())
        .find(|p| p == "tandem")
        .or_else(|| {
            token
                .clone()
                .filter(|t| offered_protocols(req.headers()).any(|p| p == *t))
        });
    let (mut parts, _body) = req.into_parts();
    let mut upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if let Some(protocol) = selected.and_then(|p| HeaderValue::from_str(&p).ok()) {
        upgrade.set_selected_protocol(protocol);
    }
    let max = config.max_message_size;
    let admission = Admission { name, grant, slots };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + max + 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let tracker = state.shared.connections.clone();
            tracker.track_future(connection::run(
                socket,
                admission,
                state.shared,
                state.registry,
            ))
        })
}

/// The origin check (`--allowed-origins`), shared by both protocols: `Some` is the refusal.
fn check_origin(state: &AppState, req: &Request) -> Option<Response> {
    let config = &state.shared.config;
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if origin.is_some_and(|o| origin_allowed(config, o)) {
        return None;
    }
    let reason = "origin not allowed".to_string();
    Some(refuse(state, StatusCode::FORBIDDEN, reason, "origin"))
}

/// Whether `origin` is in `--allowed-origins` (which must not be empty).
pub(crate) fn origin_allowed(config: &crate::Config, origin: &str) -> bool {
    // Entries are lowercased at start-up; browsers send scheme and host in lowercase,
    // other clients may not.
    config
        .allowed_origins
        .iter()
        .any(|a| a.eq_ignore_ascii_case(origin.trim()))
}

/// Whether `path` is the Hocuspocus endpoint `configured` (stored without a trailing slash;
/// the provider strips it too unless told otherwise).
fn is_hocuspocus_path(path: &str, configured: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    trimmed == configured
}

/// An upgrade on the Hocuspocus path: one socket for many documents, each authorized by its
/// own auth message after the upgrade (see [`crate::hocuspocus`]). Only what belongs to the
/// socket is checked here: origin and the per-address limit.
async fn hocuspocus_upgrade(state: AppState, req: Request) -> Response {
    if let Some(refused) = check_origin(&state, &req) {
        return refused;
    }
    let mut slots: Slots = Vec::new();
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        match state.shared.per_addr.acquire(addr.ip()) {
            Some(slot) => slots.push(Box::new(slot)),
            None => {
                let reason = "too many connections from this address".to_string();
                return refuse(
                    &state,
                    StatusCode::TOO_MANY_REQUESTS,
                    reason,
                    "per_addr_limit",
                );
            }
        }
    }
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.shared.config.max_message_size;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + max + 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let tracker = state.shared.connections.clone();
            tracker.track_future(crate::hocuspocus::run(
                socket,
                slots,
                state.shared,
                state.registry,
            ))
        })
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `GET /healthz`: 200 with `{"status":"ok"}` while serving; 200 with `"degraded"` while
/// the database is failing (documents are served from memory and updates queue) or, in a
/// cluster, Redis is unreachable (each node serves its own clients; other nodes' changes
/// arrive through the log); 503 while shutting down. Always includes the storage backlog, and
/// in a cluster the link's state.
async fn healthz(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    let backlog = shared.storage.backlog();
    let cluster_down = shared.cluster.as_ref().is_some_and(|c| !c.is_up());
    let (code, status) = if shared.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if cluster_down
        || backlog.degraded
        || backlog.oldest_age.is_some_and(|age| age > DEGRADED_AFTER)
    {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let mut body = serde_json::json!({
        "status": status,
        "storage": {
            "backend": shared.storage.backend(),
            "backlog_updates": backlog.rows,
            "backlog_bytes": backlog.bytes,
            "oldest_unpersisted_seconds": backlog.oldest_age.map(|d| d.as_secs_f64()),
            "last_error": backlog.last_error,
        },
        "documents_open": state.registry.len(),
        "pending_bytes": shared.metrics.pending_bytes.get(),
    });
    if let Some(cluster) = &shared.cluster {
        body["cluster"] = cluster.health();
    }
    (code, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        {
            let shared = &state.shared;
            shared.metrics.observe_storage(&shared.storage.backlog());
            shared.metrics.render()
        },
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: WebSocket clients connect to /<document name>\n",
    )
        .into_response()
}
