//! Readiness for orchestrators: `/readyz` answers 200 only while the node should get new
//! traffic. [`Drain`] is how `main` tells a running server that it is about to stop (SIGTERM),
//! so load balancers stop sending new clients while open connections are still served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// Longest a readiness probe waits for the database's answer before reporting it unreachable
/// (probes time out after 1 s by default in Kubernetes; an answer slower than this is a
/// database in trouble either way).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared "draining" flag: once started, `/readyz` reports 503 `draining`.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// Starts draining (idempotent; there is no way back: draining ends in shutdown).
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn not_ready(reason: &str, detail: serde_json::Value) -> Response {
    let body = serde_json::json!({ "status": "not_ready", "reason": reason, "detail": detail });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// `GET /readyz`: 200 `{"status":"ready",...}` when storage answers (migrations are applied
/// before the server listens) and the node is neither draining nor shutting down; otherwise
/// 503 `{"status":"not_ready","reason":"draining"|"shutting_down"|"storage_unreachable",...}`.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    if shared.shutdown.is_cancelled() {
        return not_ready("shutting_down", serde_json::Value::Null);
    }
    if state.drain.is_draining() {
        return not_ready("draining", serde_json::Value::Null);
    }
    if let Some(store) = shared.storage.store() {
        let answer = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
        let error = match answer {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {PING_TIMEOUT:?}")),
        };
        if let Some(error) = error {
            return not_ready("storage_unreachable", serde_json::Value::String(error));
        }
    }
    let body = serde_json::json!({
        "status": "ready",
        "storage": shared.storage.backend(),
        "migrations": "applied",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}
