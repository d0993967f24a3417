//! The webhook outbox's types: deliveries waiting for a 2xx, per-document cursors of what was
//! announced, and the counts the server exports as metrics. The SQL is in
//! [`queries`](crate::queries) and [`SqlStore`](crate::sql_store::SqlStore) like the rest.

use std::time::SystemTime;

use crate::rows::StoredRow;

/// A delivery to add to the outbox (one event for one URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The event's idempotency key: the same on every attempt, and for every URL. An event
    /// already queued for the URL under this key is not queued again.
    pub event_id: String,
    /// Where to POST it.
    pub url: String,
    /// The event type (`document.changed`, ...).
    pub event: String,
    /// The JSON body, exactly as it is signed and sent.
    pub body: String,
    /// When it may first be attempted.
    pub due: SystemTime,
}

/// A delivery in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id (internal).
    pub id: i64,
    /// See [`NewDelivery::event_id`].
    pub event_id: String,
    /// See [`NewDelivery::url`].
    pub url: String,
    /// See [`NewDelivery::event`].
    pub event: String,
    /// See [`NewDelivery::body`].
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: SystemTime,
}

/// Where a document's announcements stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookCursor {
    /// The document's id.
    pub doc_id: i64,
    /// Whether the document is deleted.
    pub deleted: bool,
    /// Highest seq ever logged for the document.
    pub last_seq: i64,
    /// Highest seq announced; `None` if nothing was ever announced for it.
    pub notified_seq: Option<i64>,
}

/// Moves a document's cursor from what the caller read to `to`, in the transaction that
/// queues the announcement; refused (nothing queued) if the cursor moved meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorMove {
    /// The document's id.
    pub doc_id: i64,
    /// [`WebhookCursor::notified_seq`] as read.
    pub from: Option<i64>,
    /// The new value.
    pub to: i64,
}

/// Counts over the outbox, for metrics and for the worker's next wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Deliveries waiting (not yet answered 2xx).
    pub pending: i64,
    /// Of those, the ones that failed at least the given number of times.
    pub failing: i64,
    /// When the next one is due, if any.
    pub next_due: Option<SystemTime>,
}

/// `id, event_id, url, event, body, attempts, created_at`.
pub(crate) fn delivery(r: &impl StoredRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        id: r.int("id")?,
        event_id: r.text("event_id")?,
        url: r.text("url")?,
        event: r.text("event")?,
        body: r.text("body")?,
        attempts: r.int("attempts")?,
        created_at: r.time("created_at")?,
    })
}

/// `id, deleted_at, last_seq, notified_seq`.
pub(crate) fn cursor(r: &impl StoredRow) -> Result<WebhookCursor, sqlx::Error> {
    Ok(WebhookCursor {
        doc_id: r.int("id")?,
        deleted: r.opt_time("deleted_at")?.is_some(),
        last_seq: r.int("last_seq")?,
        notified_seq: r.opt_int("notified_seq")?,
    })
}

/// `pending, failing, next_due`.
pub(crate) fn stats(r: &impl StoredRow) -> Result<OutboxStats, sqlx::Error> {
    Ok(OutboxStats {
        pending: r.int("pending")?,
        failing: r.int("failing")?,
        next_due: r.opt_time("next_due")?,
    })
}
