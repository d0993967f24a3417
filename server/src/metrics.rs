//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Hot-path counters are plain handles created once (an atomic add per event); label
//! families are only used for rare events (closes, rejections) where a lookup is cheap enough.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set naming why a connection closed or a message was refused.
pub(crate) type ReasonLabels = Vec<(&'static str, &'static str)>;

/// Every metric the server exports. Cheap to share (`Arc<Metrics>`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections closed, by reason (normal, slow_consumer, ping_timeout, invalid_update, ...).
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// Pauses in reading a connection because it was over its message rate (one per pause;
    /// a writer held at the rate pauses up to 50 times a second).
    pub connections_throttled: Counter,
    /// Seconds connections spent not reading because they were over their message rate.
    pub connections_throttled_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Documents currently loaded in memory.
    pub documents_open: Gauge,
    /// Documents loaded since start.
    pub documents_loaded: Counter,
    /// Documents unloaded since start.
    pub documents_unloaded: Counter,
    /// Messages received from clients (all types).
    pub messages_in: Counter,
    /// Frames sent to clients.
    pub frames_out: Counter,
    /// Payload bytes received from clients.
    pub bytes_in: Counter,
    /// Payload bytes sent to clients.
    pub bytes_out: Counter,
    /// Updates applied that changed a document.
    pub updates_applied: Counter,
    /// Time to apply one update to its document, in seconds.
    pub update_apply_seconds: Histogram,
    /// Awareness entries refused because another connection owns the client id.
    pub awareness_foreign: Counter,
    /// Awareness states removed because they were not renewed in time.
    pub awareness_expired: Counter,
    /// Upgrades refused before the WebSocket handshake, by reason (auth, limits, origin).
    pub upgrades_refused: Family<ReasonLabels, Counter>,
    /// Updates sent by read-only connections (ignored).
    pub readonly_updates_refused: Counter,
    /// Updates accepted but not yet durable.
    pub storage_backlog_updates: Gauge,
    /// Bytes of updates accepted but not yet durable.
    pub storage_backlog_bytes: Gauge,
    /// Age of the oldest update not yet durable, in milliseconds.
    pub storage_backlog_oldest_ms: Gauge,
    /// 1 while the database is failing, else 0.
    pub storage_degraded: Gauge,
    /// Admin API requests answered with an error, by HTTP status (`status="400"`, ...).
    pub admin_refused: Family<ReasonLabels, Counter>,
    /// Updates refused after framing, by reason: `pending_too_large` (by a room) and the
    /// admin import's `nesting_too_deep` / `invalid_update`. A refusal that closes a
    /// WebSocket is also counted in `connections_closed` under the same label.
    pub updates_refused: Family<ReasonLabels, Counter>,
    /// Bytes of pending updates (waiting for missing dependencies, memory only) held by all
    /// open documents, as last measured by each room.
    pub pending_bytes: Gauge,
    /// Webhook deliveries waiting in the outbox (not yet answered 2xx).
    pub webhook_pending: Gauge,
    /// Webhook deliveries answered 2xx.
    pub webhook_delivered: Counter,
    /// Webhook delivery attempts that failed (no answer, or not 2xx); each is retried.
    pub webhook_failed: Counter,
    /// Webhook deliveries that failed at least 8 times and are still being retried.
    pub webhook_failing: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// Why one function: one registration per metric, in the order /metrics lists them; a flat list
    /// reads best.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tandem");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            connections_accepted.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "WebSocket connections closed, by reason",
            connections_closed.clone(),
        );
        let connections_throttled = Counter::default();
        registry.register(
            "connections_throttled",
            "Pauses in reading a connection because it was over its message rate",
            connections_throttled.clone(),
        );
        let connections_throttled_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "connections_throttled_seconds",
            "Seconds connections spent not reading because they were over their message rate",
            connections_throttled_seconds.clone(),
        );
        let documents_open = Gauge::default();
        registry.register(
            "documents_open",
            "Documents loaded in memory",
            documents_open.clone(),
        );
        let documents_loaded = Counter::default();
        registry.register(
            "documents_loaded",
            "Documents loaded",
            documents_loaded.clone(),
        );
        let documents_unloaded = Counter::default();
        registry.register(
            "documents_unloaded",
            "Documents unloaded after their grace period",
            documents_unloaded.clone(),
        );
        let messages_in = Counter::default();
        registry.register(
            "messages_in",
            "Protocol messages received",
            messages_in.clone(),
        );
        let frames_out = Counter::default();
        registry.register("frames_out", "Frames sent to clients", frames_out.clone());
        let bytes_in = Counter::default();
        registry.register("bytes_in", "Payload bytes received", bytes_in.clone());
        let bytes_out = Counter::default();
        registry.register("bytes_out", "Payload bytes sent", bytes_out.clone());
        let updates_applied = Counter::default();
        registry.register(
            "updates_applied",
            "Updates that changed a document",
            updates_applied.clone(),
        );
        let update_apply_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 12));
        registry.register(
            "update_apply_seconds",
            "Time to apply one update to its document",
            update_apply_seconds.clone(),
        );
        let awareness_foreign = Counter::default();
        registry.register(
            "awareness_foreign",
            "Awareness entries refused: the client id belongs to another connection",
            awareness_foreign.clone(),
        );
        let awareness_expired = Counter::default();
        registry.register(
            "awareness_expired",
            "Awareness states removed for not being renewed",
            awareness_expired.clone(),
        );
        let upgrades_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "upgrades_refused",
            "WebSocket upgrades refused before the handshake, by reason",
            upgrades_refused.clone(),
        );
        let readonly_updates_refused = Counter::default();
        registry.register(
            "readonly_updates_refused",
            "Updates sent by read-only connections, ignored",
            readonly_updates_refused.clone(),
        );
        let storage_backlog_updates = Gauge::default();
        registry.register(
            "storage_backlog_updates",
            "Updates accepted but not yet durable",
            storage_backlog_updates.clone(),
        );
        let storage_backlog_bytes = Gauge::default();
        registry.register(
            "storage_backlog_bytes",
            "Bytes of updates accepted but not yet durable",
            storage_backlog_bytes.clone(),
        );
        let storage_backlog_oldest_ms = Gauge::default();
        registry.register(
            "storage_backlog_oldest_ms",
            "Age in milliseconds of the oldest update not yet durable",
            storage_backlog_oldest_ms.clone(),
        );
        let storage_degraded = Gauge::default();
        registry.register(
            "storage_degraded",
            "1 while the database is failing and updates queue in memory",
            storage_degraded.clone(),
        );
        let admin_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admin_requests_refused",
            "Admin API requests answered with an error, by HTTP status",
            admin_refused.clone(),
        );
        let updates_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "updates_refused",
            "Updates refused, by reason (pending_too_large, nesting_too_deep, invalid_update)",
            updates_refused.clone(),
        );
        let pending_bytes = Gauge::default();
        registry.register(
            "pending_bytes",
            "Bytes of updates held in memory waiting for missing dependencies, all documents",
            pending_bytes.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_pending",
            "Webhook deliveries waiting in the outbox (not yet answered 2xx)",
            webhook_pending.clone(),
        );
        let webhook_delivered = Counter::default();
        registry.register(
            "webhook_delivered",
            "Webhook deliveries answered 2xx",
            webhook_delivered.clone(),
        );
        let webhook_failed = Counter::default();
        registry.register(
            "webhook_failed",
            "Webhook delivery attempts that failed (no answer or not 2xx); each is retried",
            webhook_failed.clone(),
        );
        let webhook_failing = Gauge::default();
        registry.register(
            "webhook_failing",
            "Webhook deliveries that failed at least 8 times and are still being retried",
            webhook_failing.clone(),
        );
        Metrics {
            registry,
            webhook_pending,
            webhook_delivered,
            webhook_failed,
            webhook_failing,
            admin_refused,
            updates_refused,
            pending_bytes,
            upgrades_refused,
            readonly_updates_refused,
            storage_backlog_updates,
            storage_backlog_bytes,
            storage_backlog_oldest_ms,
            storage_degraded,
            connections,
            connections_accepted,
            connections_closed,
            connections_throttled,
            connections_throttled_seconds,
            documents_open,
            documents_loaded,
            documents_unloaded,
            messages_in,
            frames_out,
            bytes_in,
            bytes_out,
            updates_applied,
            update_apply_seconds,
            awareness_foreign,
            awareness_expired,
        }
    }

    /// Counts one closed connection under `reason`.
    pub fn closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one admin request answered with error status `status` (4xx or 5xx).
    pub fn admin_refused(&self, status: u16) {
        let label = match status {
            400 => "400",
            401 => "401",
            403 => "403",
            404 => "404",
            405 => "405",
            409 => "409",
            410 => "410",
            413 => "413",
            500 => "500",
            503 => "503",
            _ => "other",
        };
        self.admin_refused
            .get_or_create(&vec![("status", label)])
            .inc();
    }

    /// Counts one refused upgrade under `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.upgrades_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts one refused update under `reason`.
    pub fn update_refused(&self, reason: &'static str) {
        self.updates_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Copies the storage backlog into its gauges (called before each scrape).
    pub fn observe_storage(&self, backlog: &crdt_store::Backlog) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.storage_backlog_updates.set(clamp(backlog.rows));
        self.storage_backlog_bytes.set(clamp(backlog.bytes));
        let oldest = backlog.oldest_age.map_or(0, |d| d.as_millis());
        self.storage_backlog_oldest_ms
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
        self.storage_degraded.set(i64::from(backlog.degraded));
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Mutable access to the registry so other layers (storage) can add their metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
