//! Tandem: a WebSocket room server for Yjs documents.
//!
//! [`serve`] runs the server on a listener until a shutdown future resolves; `main.rs` is a
//! thin wrapper around it and tests call it directly on port 0.

#![warn(missing_docs, unreachable_pub)]

pub mod admin;
mod api;
mod auth;
pub mod backup;
mod changes;
mod close;
mod cluster;
pub mod config;
mod connection;
mod demo;
mod docname;
mod error;
mod fallback;
pub mod first_run;
pub mod fuzz_entry;
mod history;
mod hocuspocus;
pub mod http;
mod limits;
mod listener;
pub mod logging;
mod metrics;
mod peer;
mod pending;
mod presence;
pub mod protocol;
mod readiness;
mod registry;
mod room;
mod state;
pub mod storage;
mod update_check;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use config::Config;
pub use error::ServerError;
pub use readiness::Drain;

use crate::http::AppState;
use crate::registry::Registry;
use crate::state::Shared;

/// Builds the token verifier the configuration asks for.
fn authenticator(config: &Config) -> Result<auth::Authenticator, ServerError> {
    match config.auth {
        config::AuthMode::Open => {
            warn!(
                "auth mode is open: anyone who can reach this server may read and write every \
                 document; use --auth token in production"
            );
            Ok(auth::Authenticator::open())
        }
        config::AuthMode::Token => {
            let pem = match &config.jwt_public_key_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    ServerError::Config(format!("cannot read {}: {e}", path.display()))
                })?),
                None => None,
            };
            auth::Authenticator::token(
                config.jwt_secret.as_deref().map(str::as_bytes),
                pem.as_deref(),
                config.jwt_audience.as_deref(),
            )
            .map_err(ServerError::Config)
        }
    }
}

/// This node's cluster membership (`--redis-url`), which needs the log in Postgres: SQLite
/// and memory belong to one process.
fn cluster_of(config: &Config) -> Result<Option<Arc<cluster::Cluster>>, ServerError> {
    let Some(url) = config.redis_url.as_deref() else {
        return Ok(None);
    };
    let db = config.effective_database_url();
    if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        return Err(ServerError::Config(
            "--redis-url (clustering) needs --database-url postgres://...: several nodes share \
             one log in Postgres; SQLite and memory storage belong to a single process"
                .into(),
        ));
    }
    cluster::Cluster::new(url, &config.redis_prefix)
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| ServerError::Config(e.to_string()))
}

/// Opens storage and builds the state the HTTP surface ([`http::app`]) serves: the
/// configuration checked, stored revocations and deletions loaded. [`serve_with_drain`] does
/// this before listening; a test can do it to call the router without TCP.
pub async fn open(config: Config, drain: Drain) -> Result<AppState, ServerError> {
    let mut config = config;
    // Checked here, not only by the command line's parser: a configuration built in code
    // (tests, embedders) is checked too, and an empty entry in a list is only visible as a
    // list.
    config.allowed_origins = config::allowed_origins(&config.allowed_origins)
        .map_err(|e| ServerError::Config(format!("--allowed-origins: {e}")))?;
    let auth = authenticator(&config)?;
    let cluster = cluster_of(&config)?;
    let storage = storage::Storage::open(&config).await?;
    let deleted = load_stored_state(&storage, &auth).await?;
    let webhooks = webhooks::Webhooks::open(&config, &storage).await?;
    let shared = Shared::new(config, storage, auth, webhooks, cluster.clone());
    for name in &deleted {
        shared.mark_deleted(name);
    }
    let registry = Registry::new(shared.clone());
    if let Some(cluster) = cluster {
        cluster::start(cluster, shared.clone(), registry.clone());
    }
    Ok(AppState {
        shared,
        registry,
        drain,
        sessions: Arc::default(),
    })
}

/// Serves `listener` with `config` until `shutdown` resolves, then closes every connection
/// with 1001 and returns within `config.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with_drain(listener, config, Drain::default(), shutdown).await
}

/// [`serve`], with a [`Drain`] the caller can start before `shutdown` resolves: from then
/// on `/readyz` reports 503 while everything is still served (`main` does this on SIGTERM
/// for `--drain-grace`).
pub async fn serve_with_drain(
    listener: TcpListener,
    config: Config,
    drain: Drain,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = open(config, drain).await?;
    let shared = state.shared.clone();
    let registry = state.registry.clone();
    webhooks::Webhooks::spawn(&shared);
    let app = http::app(state);
    let addr = listener.local_addr()?;
    info!("listening on {addr}");

    let token = shared.shutdown.clone();
    let http_connections = TaskTracker::new();
    let server = tokio::spawn(listener::run(
        listener,
        app,
        shared.config.handshake_timeout,
        token.clone(),
        http_connections.clone(),
    ));

    shutdown.await;
    shut_down(&shared, &registry, server, http_connections).await;
    Ok(())
}

/// Reads into memory what the store keeps across restarts: the revocations (into `auth`) and
/// the names of deleted documents (returned; they stay refused).
async fn load_stored_state(
    storage: &storage::Storage,
    auth: &auth::Authenticator,
) -> Result<Vec<String>, ServerError> {
    let Some(store) = storage.store() else {
        return Ok(Vec::new());
    };
    let stored = store.revocations().await?;
    {
        let mut revocations = auth.revocations.write().unwrap_or_else(|e| e.into_inner());
        for r in &stored {
            match r.kind {
                crdt_store::RevocationKind::Token => {
                    revocations.revoke_token(&r.value, r.revoked_at)
                }
                crdt_store::RevocationKind::User => revocations.revoke_user(&r.value, r.revoked_at),
            }
        }
    }
    Ok(store.deleted_documents().await?)
}

/// The orderly shutdown, all within `--shutdown-timeout`: rooms first (they flush, deliver,
/// snapshot and close their connections), then the connections, the storage, the listener
/// and the HTTP connections.
async fn shut_down(
    shared: &Shared,
    registry: &Registry,
    server: tokio::task::JoinHandle<()>,
    http_connections: TaskTracker,
) {
    let started = Instant::now();
    info!("shutting down");
    shared.shutdown.cancel();
    // Rooms flush their pending updates, deliver them, write a final snapshot and close
    // their connections with 1001; then the writer drains whatever is left.
    registry.shutdown().await;
    shared.rooms.close();
    let deadline = shared.config.shutdown_timeout;
    if tokio::time::timeout(deadline, shared.rooms.wait())
        .await
        .is_err()
    {
        warn!(
            open = shared.rooms.len(),
            "documents still closing at shutdown deadline"
        );
    }
    shared.connections.close();
    let left = deadline.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, shared.connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = shared.connections.len(),
            "connections still open at shutdown deadline"
        );
    }
    // The webhook tasks stop at once; the worker gives back the deliveries it had claimed.
    if let Some(hooks) = &shared.webhooks {
        let left = deadline
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        if tokio::time::timeout(left, hooks.stopped()).await.is_err() {
            warn!("webhook tasks still running at shutdown deadline");
        }
    }
    let left = deadline
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    if let Err(e) = shared.storage.shutdown(left).await {
        error!(error = %e, "storage did not flush everything before shutdown");
    }
    let _ = server.await;
    http_connections.close();
    let left = deadline.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, http_connections.wait())
        .await
        .is_err()
    {
        warn!("HTTP connections still open at shutdown deadline");
    }
    info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
}
