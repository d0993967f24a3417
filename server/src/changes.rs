//! The change bus: a process-wide broadcast that wakes change-feed readers (SSE) when a
//! document's log grows, or when it is restored or deleted.
//!
//! It carries no content and is not the source of truth: a reader that lags behind (the
//! channel is bounded) or has just subscribed reads what it missed from the durable log.
//! Publishing is a clone of an `Arc<str>` and never blocks the room.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Events kept for slow readers before they are told they lagged.
const CAPACITY: usize = 4096;

/// Something that happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The document.
    pub name: Arc<str>,
    /// What happened.
    pub kind: ChangeKind,
}

/// The kinds of [`ChangeEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Log rows `after + 1 ..= upto` became durable.
    Durable {
        /// The durable watermark before.
        after: i64,
        /// The durable watermark now.
        upto: i64,
    },
    /// Change `seq` (already announced as durable) restored the content of `restored_to`.
    Restored {
        /// The restore's own change.
        seq: i64,
        /// The point restored to.
        restored_to: i64,
        /// Who restored it.
        author: String,
    },
    /// The document was deleted; its feed ends.
    Deleted,
}

/// The bus itself; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeBus {
    tx: broadcast::Sender<ChangeEvent>,
}

impl Default for ChangeBus {
    fn default() -> Self {
        ChangeBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl ChangeBus {
    /// Announces an event (dropped when nobody listens).
    pub fn publish(&self, name: &Arc<str>, kind: ChangeKind) {
        let _ = self.tx.send(ChangeEvent {
            name: name.clone(),
            kind,
        });
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.tx.subscribe()
    }
}
