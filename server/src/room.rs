//! One task per open document: it alone owns the `Doc` and the awareness table, so there are
//! no locks around them and every change is applied in one order.
//!
//! Connections talk to the room through its bounded inbox ([`RoomMsg`]); the room answers
//! through each connection's [`Peer`] queue. Every outgoing frame is encoded once and the same
//! `Bytes` is shared by all recipients.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{Instrument, debug, info, info_span, warn};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::peer::{CloseReason, Peer};
use crate::presence::{Change, ConnId, Presence};
use crate::protocol::{self, Inbound};
use crate::registry::Registry;
use crate::state::Shared;

/// Capacity of a room's inbox. Senders wait when it is full, which slows the readers of the
/// connections feeding this room and nobody else.
const INBOX_CAPACITY: usize = 1024;
/// How often awareness expiry is checked while the room has states.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A message to a room.
#[derive(Debug)]
pub enum RoomMsg {
    /// A connection joins; the reply comes once the document is ready to serve it.
    Join {
        /// The joining connection.
        peer: Arc<Peer>,
        /// Answered when the peer has been sent the document's SyncStep1.
        reply: oneshot::Sender<()>,
    },
    /// Messages decoded from one frame of a joined connection.
    Frame {
        /// Sender.
        conn: ConnId,
        /// What it sent, in order.
        msgs: Vec<Inbound>,
    },
    /// A connection left (closed, errored or was kicked).
    Leave {
        /// Who left.
        conn: ConnId,
    },
    /// The server is shutting down: close every connection with 1001 and stop.
    Shutdown,
}

/// A cheap handle to a running room.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    /// The room's inbox.
    pub tx: mpsc::Sender<RoomMsg>,
    /// Distinguishes successive rooms of the same name in the registry.
    pub generation: u64,
}

/// State owned by the room task.
struct Room {
    name: Arc<str>,
    generation: u64,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    doc: Doc,
    presence: Presence,
    peers: HashMap<ConnId, Arc<Peer>>,
}

/// Starts the task for document `name` and returns its handle.
pub fn spawn(
    name: Arc<str>,
    generation: u64,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
) -> RoomHandle {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let span = info_span!("room", doc = %name);
    let room = Room {
        presence: Presence::new(shared.config.awareness_timeout),
        name,
        generation,
        shared,
        registry,
        doc: Doc::new(),
        peers: HashMap::new(),
    };
    tokio::spawn(room.run(rx).instrument(span));
    RoomHandle { tx, generation }
}

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        metrics.documents_open.inc();
        metrics.documents_loaded.inc();
        debug!("loaded");
        let mut unload_at = Some(Instant::now() + self.shared.config.unload_after);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            let sweeping = !self.presence.is_empty();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(RoomMsg::Shutdown) | None => break,
                    Some(msg) => self.handle(msg),
                },
                _ = sleep_until(next_sweep.into()), if sweeping => {
                    next_sweep = Instant::now() + SWEEP_EVERY;
                    self.sweep_awareness();
                }
                _ = sleep_until(unload_at.unwrap_or_else(Instant::now).into()), if unload_at.is_some() => {
                    if self.registry.remove_if_idle(&self.name, self.generation, &rx) {
                        rx.close();
                        // Anything that slipped in before the close is answered by dropping it:
                        // joiners see their reply channel close and retry through the registry.
                        while rx.recv().await.is_some() {}
                        metrics.documents_unloaded.inc();
                        debug!("unloaded");
                        break;
                    }
                    unload_at = Some(Instant::now() + self.shared.config.unload_after);
                    continue;
                }
            }
            unload_at = if self.peers.is_empty() {
                unload_at.or_else(|| Some(Instant::now() + self.shared.config.unload_after))
            } else {
                None
            };
        }
        for peer in self.peers.values() {
            peer.close(CloseReason::SHUTDOWN);
        }
        metrics.documents_open.dec();
    }

    fn handle(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Join { peer, reply } => self.join(peer, reply),
            RoomMsg::Frame { conn, msgs } => {
                for msg in msgs {
                    if !self.peers.contains_key(&conn) {
                        break;
                    }
                    self.inbound(conn, msg);
                }
            }
            RoomMsg::Leave { conn } => self.leave(conn),
            RoomMsg::Shutdown => {}
        }
    }

    fn join(&mut self, peer: Arc<Peer>, reply: oneshot::Sender<()>) {
        let sv = self.doc.transact().state_vector();
        peer.push(protocol::encode_sync_step1(&sv));
        let live = self.presence.live();
        if !live.is_empty() {
            peer.push(protocol::encode_awareness(
                live.into_iter()
                    .map(|(id, clock, state)| (id, clock, Some(state))),
            ));
        }
        if reply.send(()).is_ok() {
            self.peers.insert(peer.id, peer);
        }
    }

    fn leave(&mut self, conn: ConnId) {
        if self.peers.remove(&conn).is_some() {
            let removed = self.presence.remove_conn(conn, Instant::now());
            self.broadcast_awareness(&removed);
        }
    }

    fn inbound(&mut self, conn: ConnId, msg: Inbound) {
        match msg {
            Inbound::SyncStep1(sv) => {
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                self.send_to(conn, protocol::encode_sync_step2(&update));
            }
            Inbound::Update(update) => self.apply(conn, update),
            Inbound::Awareness(entries) => {
                let applied = self.presence.apply(conn, entries, Instant::now());
                if applied.foreign > 0 {
                    self.shared
                        .metrics
                        .awareness_foreign
                        .inc_by(applied.foreign as u64);
                    debug!(
                        conn,
                        refused = applied.foreign,
                        "awareness for ids owned by another connection"
                    );
                }
                self.broadcast_awareness(&applied.changes);
            }
            Inbound::QueryAwareness => {
                let live = self.presence.live();
                let frame = protocol::encode_awareness(
                    live.into_iter()
                        .map(|(id, clock, state)| (id, clock, Some(state))),
                );
                self.send_to(conn, frame);
            }
        }
    }

    /// Applies one update; relays what it changed to everyone, sender included.
    fn apply(&mut self, conn: ConnId, update: Update) {
        let started = Instant::now();
        let doc = &self.doc;
        // yrs must not take the server down on a hostile update: a panic is caught and the
        // room is rebuilt from a clean copy (see `recover`).
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(update)?;
            Ok::<_, yrs::error::UpdateError>(txn.has_changes().then(|| txn.encode_update_v1()))
        }));
        let metrics = &self.shared.metrics;
        metrics
            .update_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(Some(changed))) => {
                metrics.updates_applied.inc();
                self.broadcast(protocol::encode_update(&changed));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                warn!(conn, error = %e, "rejected update");
                self.kick(
                    conn,
                    CloseReason {
                        code: crate::close::INVALID_PAYLOAD,
                        reason: "invalid update",
                        label: "invalid_update",
                    },
                );
            }
            Err(_) => {
                warn!(
                    conn,
                    "update made yrs panic; closing the sender and rebuilding the document"
                );
                self.kick(
                    conn,
                    CloseReason {
                        code: crate::close::INVALID_PAYLOAD,
                        reason: "invalid update",
                        label: "invalid_update",
                    },
                );
                self.recover();
            }
        }
    }

    /// After a panic inside yrs the in-memory `Doc` cannot be trusted. Every client is closed
    /// so it reconnects and resyncs; the room rebuilds from the last trustworthy state.
    fn recover(&mut self) {
        let peers: Vec<_> = self.peers.keys().copied().collect();
        for conn in peers {
            self.kick(conn, CloseReason::INTERNAL);
        }
        let fresh = Doc::new();
        let state = catch_unwind(AssertUnwindSafe(|| {
            self.doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default())
        }));
        if let Ok(state) = state {
            if let Ok(update) = Update::decode_v1(&state) {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    fresh.transact_mut().apply_update(update)
                }));
            }
        }
        self.doc = fresh;
        info!("document rebuilt after a failed update");
    }

    fn sweep_awareness(&mut self) {
        let expired = self.presence.expire(Instant::now());
        if !expired.is_empty() {
            self.shared
                .metrics
                .awareness_expired
                .inc_by(expired.len() as u64);
            self.broadcast_awareness(&expired);
        }
    }

    fn broadcast_awareness(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let frame = protocol::encode_awareness(
            changes
                .iter()
                .map(|(id, clock, state)| (*id, *clock, state.as_deref())),
        );
        self.broadcast(frame);
    }

    /// Queues one shared frame on every peer; peers that overflow are dropped from the room
    /// (their connection closes with 4001) and their awareness removal is announced.
    fn broadcast(&mut self, frame: Bytes) {
        let mut overflowed = Vec::new();
        for (id, peer) in &self.peers {
            if !peer.push(frame.clone()) {
                overflowed.push(*id);
            }
        }
        for conn in overflowed {
            self.leave(conn);
        }
    }

    fn send_to(&mut self, conn: ConnId, frame: Bytes) {
        let ok = self.peers.get(&conn).is_some_and(|peer| peer.push(frame));
        if !ok {
            self.leave(conn);
        }
    }

    fn kick(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(peer) = self.peers.get(&conn) {
            peer.close(reason);
        }
        self.leave(conn);
    }
}
