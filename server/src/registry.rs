//! Document name → running room. Guarantees one room (one load) per document, however many
//! clients join at the same instant, and lets an idle room remove itself without racing a
//! joiner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{mpsc, oneshot};

use crate::peer::Peer;
use crate::room::{self, Command, CommandError, RoomHandle, RoomMsg};
use crate::state::Shared;

/// How often a join retries when it meets a room that is unloading at that moment.
const JOIN_ATTEMPTS: usize = 8;

/// The map of open documents.
#[derive(Debug)]
pub struct Registry {
    rooms: Mutex<HashMap<Arc<str>, RoomHandle>>,
    next_generation: Mutex<u64>,
    shared: Arc<Shared>,
    me: Weak<Registry>,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The room kept unloading under us, or the server is shutting down.
    #[error("document is not available")]
    Unavailable,
    /// The document could not be loaded from storage; it was not created empty instead.
    #[error("document could not be loaded")]
    LoadFailed,
    /// An administrator deleted the document; its name stays unusable.
    #[error("document deleted")]
    Deleted,
}

impl Registry {
    /// An empty registry.
    pub fn new(shared: Arc<Shared>) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry {
            rooms: Mutex::new(HashMap::new()),
            next_generation: Mutex::new(0),
            shared,
            me: me.clone(),
        })
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<Arc<str>, RoomHandle>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room for `name`, started if it is not running.
    fn get_or_spawn(&self, name: &str) -> Option<RoomHandle> {
        let me = self.me.upgrade()?;
        let mut rooms = self.rooms();
        if let Some(handle) = rooms.get(name) {
            return Some(handle.clone());
        }
        let generation = {
            let mut g = self
                .next_generation
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *g += 1;
            *g
        };
        let name: Arc<str> = Arc::from(name);
        let handle = room::spawn(name.clone(), generation, self.shared.clone(), me);
        rooms.insert(name, handle.clone());
        Some(handle)
    }

    /// Joins `peer` to document `name`; resolves when the room has sent it the first sync
    /// message. Returns the room's inbox for the connection's messages.
    pub async fn join(
        &self,
        name: &str,
        peer: Arc<Peer>,
    ) -> Result<mpsc::Sender<RoomMsg>, JoinError> {
        for _ in 0..JOIN_ATTEMPTS {
            if self.shared.shutdown.is_cancelled() {
                break;
            }
            // Checked on every attempt: a deletion may have happened while this join waited.
            if self.shared.is_deleted(name) {
                return Err(JoinError::Deleted);
            }
            let Some(handle) = self.get_or_spawn(name) else {
                break;
            };
            let (reply, joined) = oneshot::channel();
            let msg = RoomMsg::Join {
                peer: peer.clone(),
                reply,
            };
            if handle.tx.send(msg).await.is_err() {
                continue;
            }
            match joined.await {
                Ok(Ok(())) => return Ok(handle.tx),
                Ok(Err(e)) => return Err(e),
                // The room closed before answering (it was unloading): try a fresh one.
                Err(_) => continue,
            }
        }
        Err(JoinError::Unavailable)
    }

    /// Carries out an administrator's command in the room of `name`, loading the document if
    /// it is not open and `load` is set (otherwise a closed document is `Unavailable`). `make`
    /// builds the command around its reply channel; it is called again if the room it reached
    /// was unloading at that moment.
    pub async fn command<T>(
        &self,
        name: &str,
        load: bool,
        make: impl Fn(oneshot::Sender<Result<T, CommandError>>) -> Command,
    ) -> Result<T, CommandError> {
        for _ in 0..JOIN_ATTEMPTS {
            if self.shared.shutdown.is_cancelled() {
                break;
            }
            if self.shared.is_deleted(name) {
                return Err(CommandError::Deleted);
            }
            let handle = if load {
                self.get_or_spawn(name)
            } else {
                self.rooms().get(name).cloned()
            };
            let Some(handle) = handle else {
                break;
            };
            let (reply, answer) = oneshot::channel();
            if handle.tx.send(RoomMsg::Command(make(reply))).await.is_err() {
                continue;
            }
            match answer.await {
                Ok(result) => return result,
                // The room closed before answering (it was unloading): try a fresh one.
                Err(_) => continue,
            }
        }
        Err(CommandError::Unavailable(
            "the document is not available (server shutting down?)".into(),
        ))
    }

    /// Closes the open room of a document being deleted (its clients get 4410); returns how
    /// many connections it closed, once everything it accepted is durable. Nothing to do when
    /// the document is not open.
    pub async fn delete(&self, name: &str) -> usize {
        for _ in 0..JOIN_ATTEMPTS {
            let Some(handle) = self.rooms().get(name).cloned() else {
                return 0;
            };
            let (reply, answer) = oneshot::channel();
            if handle
                .tx
                .send(RoomMsg::Command(Command::Delete { reply }))
                .await
                .is_ok()
                && let Ok(Ok(closed)) = answer.await
            {
                return closed;
            }
        }
        0
    }

    /// Whether the document `name` is open on this server.
    pub fn is_open(&self, name: &str) -> bool {
        self.rooms().contains_key(name)
    }

    /// Called by an idle room: removes it if it is still the registered generation and nothing
    /// is waiting in its inbox. Holding the map lock while checking means no new joiner can
    /// obtain the handle in between.
    pub fn remove_if_idle(
        &self,
        name: &str,
        generation: u64,
        inbox: &mpsc::Receiver<RoomMsg>,
    ) -> bool {
        let mut rooms = self.rooms();
        let is_ours = rooms.get(name).is_some_and(|h| h.generation == generation);
        if is_ours && inbox.is_empty() {
            rooms.remove(name);
            true
        } else {
            !is_ours
        }
    }

    /// Removes the room `name` if it is still generation `generation` (the room is ending).
    pub fn remove(&self, name: &str, generation: u64) {
        let mut rooms = self.rooms();
        if rooms.get(name).is_some_and(|h| h.generation == generation) {
            rooms.remove(name);
        }
    }

    /// Hands `msg` to the open room of `name` without waiting; false when the document is
    /// not open here or its inbox is full (a cluster message then waits for the next catch-up
    /// from the log).
    pub fn try_send(&self, name: &str, msg: RoomMsg) -> bool {
        let Some(handle) = self.rooms().get(name).cloned() else {
            return false;
        };
        handle.tx.try_send(msg).is_ok()
    }

    /// The names of the open documents.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.rooms().keys().cloned().collect()
    }

    /// Number of open documents.
    pub fn len(&self) -> usize {
        self.rooms().len()
    }

    /// Whether no document is open.
    pub fn is_empty(&self) -> bool {
        self.rooms().is_empty()
    }

    /// Tells every room to close its connections and stop.
    pub async fn shutdown(&self) {
        let handles: Vec<RoomHandle> = self.rooms().drain().map(|(_, h)| h).collect();
        for handle in handles {
            let _ = handle.tx.send(RoomMsg::Shutdown).await;
        }
    }
}
