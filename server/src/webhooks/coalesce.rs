//! Turns the change bus into `document.changed` announcements: the first durable change of a
//! document opens a window of `--webhook-coalesce`; when it closes, everything the log holds
//! past the document's cursor is announced at once ([`Webhooks::announce`]).
//!
//! The bus is only a wake-up. What is announced is read from the log, so a lagging receiver
//! (the bus dropped events) or a restart costs nothing but a sweep: the documents whose log
//! moved past their cursor, read from the database at start, after a lag, and every
//! [`SWEEP`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Webhooks;
use crate::changes::{ChangeEvent, ChangeKind};

/// How often the documents table is swept for unannounced changes without any wake-up
/// (changes made by another server on the same database are found so).
const SWEEP: Duration = Duration::from_secs(300);
/// Wait before announcing again after the database failed.
const RETRY: Duration = Duration::from_secs(2);

/// Runs until shutdown.
pub(super) async fn run(
    hooks: Webhooks,
    mut bus: broadcast::Receiver<ChangeEvent>,
    shutdown: CancellationToken,
) {
    // Open windows: document → when its window closes.
    let mut windows: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut next_sweep = Instant::now();
    let coalesce = hooks.inner.settings.coalesce;
    loop {
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + sweep(&hooks, &mut windows).await;
        }
        let next = windows.values().min().copied().unwrap_or(next_sweep);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = bus.recv() => match ev {
                Ok(ChangeEvent { name, kind: ChangeKind::Durable { .. } }) => {
                    windows.entry(name).or_insert_with(|| Instant::now() + coalesce);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "webhooks: change bus lagged; sweeping the log");
                    next_sweep = Instant::now();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(next.min(next_sweep)) => {
                close_windows(&hooks, &mut windows).await;
            }
        }
    }
}

/// Announces every document whose window has closed; one that failed is tried again later.
async fn close_windows(hooks: &Webhooks, windows: &mut HashMap<Arc<str>, Instant>) {
    let now = Instant::now();
    let closed: Vec<Arc<str>> = windows
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(name, _)| name.clone())
        .collect();
    for name in closed {
        windows.remove(&name);
        if let Err(e) = hooks.announce(&name).await {
            tracing::warn!(error = %e, doc = %name, "webhooks: cannot announce changes; retrying");
            windows.insert(name, Instant::now() + RETRY);
        }
    }
}

/// Opens a window closing now for every document whose log moved past its cursor; returns
/// when to sweep next.
async fn sweep(hooks: &Webhooks, windows: &mut HashMap<Arc<str>, Instant>) -> Duration {
    match hooks.inner.store.webhooks_behind().await {
        Ok(names) => {
            let now = Instant::now();
            for name in names {
                windows.insert(Arc::from(name), now);
            }
            SWEEP
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhooks: cannot look for unannounced changes");
            RETRY
        }
    }
}
