//! The delivery worker: claims due rows from the outbox (leased, so a second server on the
//! same database does not send them too), POSTs them (several at once), removes each one
//! answered 2xx and reschedules the others with exponential backoff and jitter, forever. Rows
//! left by a previous run are simply due (or due when their lease ends): nothing else is
//! needed at start.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crdt_store::Delivery;
use futures::StreamExt;
use hyper::header::HeaderName;
use tokio_util::sync::CancellationToken;

use super::Webhooks;
use crate::metrics::Metrics;
use crate::state::Shared;

/// Deliveries claimed from the outbox at a time (a small multiple of `CONCURRENCY`: the
/// lease, and so the delay after a crash, grows with it).
const BATCH: u32 = 64;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 32;
/// A delivery that failed this many times counts in `tandem_webhook_failing` (it is still
/// retried). With the default backoff that is about four minutes of failures.
pub(crate) const FAILING_AFTER: i64 = 8;
/// Longest sleep without a wake-up: the outbox is looked at at least this often (rows queued
/// by another server on the same database are found so).
const IDLE: Duration = Duration::from_secs(30);
/// Wait after the database failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

const ID: HeaderName = HeaderName::from_static("tandem-webhook-id");
const EVENT: HeaderName = HeaderName::from_static("tandem-event");
const SIGNATURE: HeaderName = HeaderName::from_static("tandem-signature");
const ATTEMPT: HeaderName = HeaderName::from_static("tandem-attempt");

/// Runs until shutdown; then gives back what it had claimed.
pub(super) async fn run(hooks: Webhooks, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    while let Some(wait) = hooks.drain(&shared.metrics, &shutdown).await {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hooks.inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    hooks.release().await;
}

impl Webhooks {
    /// Delivers everything due now; returns how long to sleep before looking again, or
    /// `None` at shutdown. Only the attempts are cut short by shutdown, never a claim (whose
    /// rows would then stay leased without anyone knowing).
    async fn drain(&self, metrics: &Metrics, shutdown: &CancellationToken) -> Option<Duration> {
        let store = &self.inner.store;
        while !shutdown.is_cancelled() {
            let now = SystemTime::now();
            let due = match store.claim_webhooks(now, now + self.lease(), BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                    return Some(STORE_RETRY);
                }
            };
            let full = due.len() == BATCH as usize;
            self.claimed().extend(due.iter().map(|d| d.id));
            let attempts = futures::stream::iter(due)
                .for_each_concurrent(CONCURRENCY, |d| self.deliver(d, metrics));
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = attempts => {}
            }
            let stats = match store.webhook_stats(FAILING_AFTER).await {
                Ok(stats) => stats,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot count the outbox");
                    return Some(STORE_RETRY);
                }
            };
            metrics.webhook_pending.set(stats.pending);
            metrics.webhook_failing.set(stats.failing);
            if !full {
                let until_due = stats.next_due.map_or(IDLE, |t| {
                    t.duration_since(SystemTime::now()).unwrap_or_default()
                });
                if !until_due.is_zero() {
                    return Some(until_due.min(IDLE));
                }
            }
        }
        None
    }

    /// Deliveries claimed and not yet settled (each leaves when its attempt is recorded).
    fn claimed(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i64>> {
        self.inner.claimed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the deliveries claimed but not settled (a batch cut short by shutdown) due now,
    /// so the next start sends them without waiting for their lease to end.
    async fn release(&self) {
        let ids: Vec<i64> = self.claimed().drain().collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self
            .inner
            .store
            .release_webhooks(&ids, SystemTime::now())
            .await
        {
            tracing::warn!(error = %e, "webhooks: claimed deliveries wait for their lease to end");
        }
    }

    /// How long a claimed batch is this server's: each attempt may take the whole timeout,
    /// `CONCURRENCY` at a time, plus a margin.
    fn lease(&self) -> Duration {
        let rounds = u32::try_from(BATCH as usize / CONCURRENCY + 1).unwrap_or(u32::MAX);
        self.inner.settings.timeout.saturating_mul(rounds) + Duration::from_secs(10)
    }

    /// One attempt of one delivery, its outcome written to the outbox.
    async fn deliver(&self, d: Delivery, metrics: &Metrics) {
        let id = d.id;
        self.attempt(d, metrics).await;
        self.claimed().remove(&id);
    }

    async fn attempt(&self, d: Delivery, metrics: &Metrics) {
        let store = &self.inner.store;
        let Some(target) = self.inner.settings.targets.iter().find(|t| t.url == d.url) else {
            // Queued for a receiver that is no longer configured: nobody wants it any more.
            tracing::warn!(url = %d.url, id = %d.event_id, "webhooks: dropping a delivery to a URL no longer configured");
            if let Err(e) = store.webhook_delivered(d.id).await {
                tracing::warn!(error = %e, "webhooks: cannot drop the delivery");
            }
            return;
        };
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let headers = [
            (ID, d.event_id.clone()),
            (EVENT, d.event.clone()),
            (
                SIGNATURE,
                self.inner.settings.signer.header(t, d.body.as_bytes()),
            ),
            (ATTEMPT, (d.attempts + 1).to_string()),
        ];
        let outcome = self
            .inner
            .client
            .post(target, &headers, Bytes::from(d.body.clone()))
            .await;
        let error = match outcome {
            Ok(status) if (200..300).contains(&status) => {
                metrics.webhook_delivered.inc();
                if let Err(e) = store.webhook_delivered(d.id).await {
                    // Stays queued: the receiver gets it again, under the same id.
                    tracing::warn!(error = %e, id = %d.event_id, "webhooks: delivered, but the outbox row stays");
                }
                return;
            }
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e.to_string(),
        };
        metrics.webhook_failed.inc();
        let attempts = d.attempts + 1;
        let wait = backoff(
            self.inner.settings.retry_min,
            self.inner.settings.retry_max,
            attempts,
        );
        let level_warn = attempts == FAILING_AFTER;
        if level_warn {
            tracing::warn!(url = %d.url, id = %d.event_id, attempts, error = %error, "webhooks: delivery keeps failing; still retrying");
        } else {
            tracing::debug!(url = %d.url, id = %d.event_id, attempts, error = %error, retry_in = ?wait, "webhooks: delivery failed");
        }
        if let Err(e) = store
            .webhook_retry(d.id, SystemTime::now() + wait, &error)
            .await
        {
            tracing::warn!(error = %e, "webhooks: cannot reschedule a failed delivery");
        }
    }
}

/// Wait before the next attempt after `attempts` failures: `min` doubled per failure up to
/// `max`, then "equal jitter" (half fixed, half random) so receivers coming back are not hit
/// by every queued delivery at once.
fn backoff(min: Duration, max: Duration, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = min.saturating_mul(1 << doublings).min(max);
    let half = base / 2;
    let mut bytes = [0u8; 8];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes) as f64 / u64::MAX as f64,
        Err(_) => 0.5,
    };
    half + half.mul_f64(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for (attempts, base) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (1000, 300)] {
            let d = backoff(min, max, attempts);
            let base = Duration::from_secs(base);
            assert!(d >= base / 2 && d <= base, "{attempts}: {d:?}");
        }
    }
}
