//! Signed webhooks (`--webhook-url`): `document.created`, `document.changed` (coalesced over
//! `--webhook-coalesce`, with the seq range and authors), `document.restored` and
//! `document.deleted`, POSTed to every configured receiver, signed with `--webhook-secret`,
//! retried with backoff until the receiver answers 2xx.
//!
//! Durable from end to end. Every delivery is a row of the outbox (crdt-store) before it is
//! attempted, and leaves it only on a 2xx ([`worker`]), so neither a restart nor a receiver
//! that is away for hours loses one. Change events come from the update log, not from memory:
//! per document the outbox keeps the last seq announced, moved in the same transaction that
//! queues the announcement; the change bus only says when to look ([`coalesce`]), and at start
//! the server announces whatever the log holds past the cursors, so a crash inside a
//! coalescing window loses nothing. Restores and deletions are queued by the admin request
//! that makes them, before it answers.
//!
//! Delivery is at least once (an attempt whose 2xx was lost is repeated): receivers dedupe
//! with the event id (`Tandem-Webhook-Id`), which is derived from what the event announces.

mod client;
mod coalesce;
pub(crate) mod events;
mod sign;
pub(crate) mod target;
mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crdt_store::{CursorMove, NewDelivery, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::ServerError;
use crate::state::Shared;
use crate::storage::Storage;
use events::{Event, Range};
use sign::Signer;
use target::Target;

/// Log rows read per step when gathering a range's authors.
const PAGE: u32 = 1000;

/// The webhook options, checked.
#[derive(Debug)]
struct Settings {
    targets: Vec<Target>,
    signer: Signer,
    coalesce: Duration,
    retry_min: Duration,
    retry_max: Duration,
    timeout: Duration,
}

impl Settings {
    /// The checked options; `None` when no `--webhook-url` is set.
    fn from_config(config: &Config) -> Result<Option<Settings>, String> {
        if config.webhook_urls.is_empty() {
            return Ok(None);
        }
        let mut targets: Vec<Target> = Vec::new();
        for url in &config.webhook_urls {
            let target = Target::parse(url)?;
            if !targets.iter().any(|t| t.url == target.url) {
                targets.push(target);
            }
        }
        let secret = config.webhook_secret.as_deref().ok_or(
            "--webhook-url needs --webhook-secret (TANDEM_WEBHOOK_SECRET): receivers check each \
             delivery's signature with it",
        )?;
        let signer = Signer::new(secret)?;
        if config.webhook_retry_min.is_zero() || config.webhook_retry_min > config.webhook_retry_max
        {
            return Err(
                "--webhook-retry-min must be above 0 and at most --webhook-retry-max".into(),
            );
        }
        if config.webhook_timeout.is_zero() {
            return Err("--webhook-timeout must be above 0".into());
        }
        Ok(Some(Settings {
            targets,
            signer,
            coalesce: config.webhook_coalesce,
            retry_min: config.webhook_retry_min,
            retry_max: config.webhook_retry_max,
            timeout: config.webhook_timeout,
        }))
    }
}

/// The webhook sender, shared by the tasks that feed and drain the outbox and by the admin
/// requests that queue restores and deletions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    store: Store,
    client: client::Client,
    /// Wakes the delivery worker when something was queued.
    wake: Notify,
    /// Deliveries claimed and not yet settled: given back at shutdown instead of waiting for
    /// their lease to end.
    claimed: Mutex<HashSet<i64>>,
    /// The coalescer and the worker, awaited at shutdown.
    tasks: TaskTracker,
}

impl Webhooks {
    /// Checks the webhook options and prepares the outbox; `None` when no `--webhook-url` is
    /// set. A bad option is a [`ServerError::Config`] that names it.
    pub(crate) async fn open(
        config: &Config,
        storage: &Storage,
    ) -> Result<Option<Webhooks>, ServerError> {
        let Some(settings) = Settings::from_config(config).map_err(ServerError::Config)? else {
            return Ok(None);
        };
        let Some(store) = storage.store() else {
            return Err(ServerError::Config(
                "--webhook-url needs durable storage (the outbox is kept in the database), not \
                 --database-url memory"
                    .into(),
            ));
        };
        let tls = settings.targets.iter().any(|t| t.https);
        let client = client::Client::new(settings.timeout, tls).map_err(ServerError::Config)?;
        if store.webhooks_begin().await? {
            tracing::info!("webhooks: first start; existing documents count as announced");
        }
        tracing::info!(receivers = settings.targets.len(), "webhooks on");
        Ok(Some(Webhooks {
            inner: Arc::new(Inner {
                settings,
                store: store.clone(),
                client,
                wake: Notify::new(),
                claimed: Mutex::default(),
                tasks: TaskTracker::new(),
            }),
        }))
    }

    /// Starts the tasks that announce changes and deliver the outbox (nothing without
    /// webhooks); they stop at shutdown. Subscribes to the change bus before returning.
    pub(crate) fn spawn(shared: &Arc<Shared>) {
        let Some(hooks) = shared.webhooks.clone() else {
            return;
        };
        let bus = shared.changes.subscribe();
        let tasks = &hooks.inner.tasks;
        tasks.spawn(coalesce::run(hooks.clone(), bus, shared.shutdown.clone()));
        tasks.spawn(worker::run(hooks.clone(), shared.clone()));
        tasks.close();
    }

    /// Waits for the tasks [`Webhooks::spawn`] started to stop (they stop at shutdown, the
    /// worker after giving back the deliveries it had claimed).
    pub(crate) async fn stopped(&self) {
        self.inner.tasks.wait().await;
    }

    /// Announces the changes of document `name` past its cursor, if any: a
    /// `document.changed` for their range, preceded by a `document.created` when nothing was
    /// announced for the document before.
    pub(crate) async fn announce(&self, name: &str) -> Result<(), StoreError> {
        // The cursor moves only if nobody else moved it meanwhile; then look again.
        for _ in 0..3 {
            let store = &self.inner.store;
            let Some(cursor) = store.webhook_cursor(name).await? else {
                return Ok(());
            };
            let after = cursor.notified_seq.unwrap_or(0);
            if cursor.deleted || cursor.last_seq <= after {
                return Ok(());
            }
            let range = unannounced(store, cursor.doc_id, after, cursor.last_seq).await?;
            let mut events = Vec::with_capacity(2);
            if cursor.notified_seq.is_none() {
                events.push(Event::created(cursor.doc_id, name, range.first));
            }
            events.push(Event::changed(cursor.doc_id, name, &range));
            let moved = CursorMove {
                doc_id: cursor.doc_id,
                from: cursor.notified_seq,
                to: range.last,
            };
            if self.enqueue(Some(moved), &events).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Queues `document.restored` (change `seq` of document `doc_id` restored `restored_to`).
    pub(crate) async fn restored(
        &self,
        name: &str,
        doc_id: i64,
        seq: i64,
        restored_to: i64,
        author: &str,
    ) -> Result<(), StoreError> {
        let event = Event::restored(doc_id, name, seq, restored_to, author);
        self.enqueue(None, &[event]).await.map(drop)
    }

    /// Queues `document.deleted`.
    pub(crate) async fn deleted(&self, name: &str, doc_id: i64) -> Result<(), StoreError> {
        self.enqueue(None, &[Event::deleted(doc_id, name)])
            .await
            .map(drop)
    }

    /// Queues `events` for every receiver (moving `cursor` with them) and wakes the worker.
    async fn enqueue(
        &self,
        cursor: Option<CursorMove>,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let due = SystemTime::now();
        let deliveries: Vec<NewDelivery> = events
            .iter()
            .flat_map(|e| {
                self.inner
                    .settings
                    .targets
                    .iter()
                    .map(move |t| NewDelivery {
                        event_id: e.id.clone(),
                        url: t.url.clone(),
                        event: e.kind.to_string(),
                        body: e.body.clone(),
                        due,
                    })
            })
            .collect();
        let queued = self
            .inner
            .store
            .enqueue_webhooks(cursor, &deliveries)
            .await?;
        if queued {
            self.inner.wake.notify_one();
        }
        Ok(queued)
    }
}

/// The unannounced changes `after + 1 ..= last_seq` of document `doc_id`, read from the log
/// (without the updates' bytes). Rows pruned by retention are missing from the counts; the
/// range still ends at `last_seq`.
async fn unannounced(
    store: &Store,
    doc_id: i64,
    after: i64,
    last_seq: i64,
) -> Result<Range, StoreError> {
    let mut range = Range {
        first: after + 1,
        last: last_seq,
        ..Range::default()
    };
    let mut cursor = after;
    while cursor < last_seq {
        let rows = store.log_page(doc_id, cursor, PAGE, false).await?;
        for row in rows.iter().filter(|r| r.seq <= last_seq) {
            if range.changes == 0 {
                range.first = row.seq;
            }
            range.changes += 1;
            range.authors.extend(row.author.clone());
        }
        match rows.last() {
            Some(row) if rows.len() == PAGE as usize => cursor = row.seq,
            _ => break,
        }
    }
    Ok(range)
}
