//! Tandem: a WebSocket room server for Yjs documents.
//!
//! [`serve`] runs the server on a listener until a shutdown future resolves; `main.rs` is a
//! thin wrapper around it and tests call it directly on port 0.

pub mod close;
pub mod config;
pub mod connection;
pub mod docname;
pub mod error;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod presence;
pub mod protocol;
pub mod registry;
pub mod room;
pub mod state;

use std::future::Future;
use std::time::Instant;

use axum::ServiceExt;
use axum::extract::Request;
use tokio::net::TcpListener;
use tower::Layer;
use tracing::{info, warn};

pub use config::Config;
pub use error::ServerError;

use crate::http::AppState;
use crate::registry::Registry;
use crate::state::Shared;

/// Serves `listener` with `config` until `shutdown` resolves, then closes every connection
/// with 1001 and returns within `config.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let shared = Shared::new(config);
    let registry = Registry::new(shared.clone());
    let state = AppState {
        shared: shared.clone(),
        registry: registry.clone(),
    };
    let router = http::routes(state.clone());
    let app = axum::middleware::from_fn_with_state(state, http::dispatch).layer(router);
    let addr = listener.local_addr()?;
    info!("listening on {addr}");

    let token = shared.shutdown.clone();
    let serve_token = token.clone();
    let server = axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(async move { serve_token.cancelled().await });
    let server = tokio::spawn(async move { server.await });

    shutdown.await;
    let started = Instant::now();
    info!("shutting down");
    token.cancel();
    registry.shutdown().await;
    shared.connections.close();
    let deadline = shared.config.shutdown_timeout;
    if tokio::time::timeout(deadline, shared.connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = shared.connections.len(),
            "connections still open at shutdown deadline"
        );
    }
    match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => warn!(error = %e, "server task failed"),
        Err(_) => warn!("HTTP server did not stop in time"),
    }
    info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(())
}
