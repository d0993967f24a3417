//! HTTP surface: WebSocket upgrades on any path are rooms; plain requests are routes.
//!
//! The upgrade check runs *before* routing, so a room may be called `metrics` or `api/v1/x`
//! without ever colliding with the HTTP API.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::debug;

use crate::connection;
use crate::docname;
use crate::registry::Registry;
use crate::state::Shared;

/// Bytes tungstenite reads from the socket at a time; small, because it is held per connection.
const READ_BUFFER: usize = 2 * 1024;
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
}

/// The HTTP routes (everything that is not a WebSocket upgrade).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Middleware placed in front of the router: upgrades become rooms.
pub async fn dispatch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_websocket_upgrade(req.headers()) {
        return next.run(req).await;
    }
    let max_len = state.shared.config.max_name_len;
    let name = match docname::from_path(req.uri().path(), max_len) {
        Ok(name) => name,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.shared.config.max_message_size;
    let name: Arc<str> = Arc::from(name);
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + max + 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let tracker = state.shared.connections.clone();
            tracker.track_future(connection::run(socket, name, state.shared, state.registry))
        })
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `GET /healthz`: 200 with `{"status":"ok"}` while serving; 200 with `"degraded"` while
/// the database is failing (documents are served from memory and updates queue); 503 while
/// shutting down. Always includes the storage backlog.
async fn healthz(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    let backlog = shared.storage.backlog();
    let (code, status) = if shared.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if backlog.degraded || backlog.oldest_age.is_some_and(|age| age > DEGRADED_AFTER) {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = serde_json::json!({
        "status": status,
        "storage": {
            "backend": shared.storage.backend(),
            "backlog_updates": backlog.rows,
            "backlog_bytes": backlog.bytes,
            "oldest_unpersisted_seconds": backlog.oldest_age.map(|d| d.as_secs_f64()),
            "last_error": backlog.last_error,
        },
        "documents_open": state.registry.len(),
    });
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
