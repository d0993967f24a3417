//! What every part of the running server shares: configuration, metrics, shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::presence::ConnId;
use crate::storage::Storage;

/// Process-wide state, behind an `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server was started with.
    pub config: Config,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Where documents are loaded from and logged to.
    pub storage: Storage,
    /// Cancelled when the server starts shutting down; connections close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for their close handshakes.
    pub connections: TaskTracker,
    /// Tracks room tasks so shutdown can wait for their final flush and snapshot.
    pub rooms: TaskTracker,
    next_conn: AtomicU64,
}

impl Shared {
    /// Builds the shared state for a server with `config`.
    pub fn new(config: Config, storage: Storage) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            metrics: Metrics::new(),
            storage,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            rooms: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
        })
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
