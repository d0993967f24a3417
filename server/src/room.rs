//! One task per open document: it alone owns the `Doc` and the awareness table, so there are
//! no locks around them and every change is applied in one order.
//!
//! Connections talk to the room through its bounded inbox ([`RoomMsg`]); the room answers
//! through each connection's [`Peer`] queue. Every outgoing frame is encoded once and the same
//! `Bytes` is shared by all recipients.
//!
//! **Persist before relay.** An accepted update gets the next log sequence number and goes to
//! the store's group-commit writer; the frames it causes (the relay to every peer, and any
//! SyncStep2 computed after it) wait in `pending` until the writer reports the sequence
//! durable. So no peer ever holds an update that a crash could lose. The room never waits on
//! the database: it keeps applying and queueing while commits are in flight.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crdt_store::{DocRef, NewUpdate, Store, StoreError, Writer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tracing::{Instrument, debug, error, info_span, warn};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::close::Close;
use crate::config::ReadOnlyAwareness;
use crate::peer::Peer;
use crate::pending::{self, Integrated};
use crate::presence::{Change, ConnId, Limits, Presence};
use crate::protocol::{self, Inbound};
use crate::registry::{JoinError, Registry};
use crate::state::Shared;
use crate::storage::Storage;

/// Capacity of a room's inbox. Senders wait when it is full, which slows the readers of the
/// connections feeding this room and nobody else.
const INBOX_CAPACITY: usize = 1024;
/// How often awareness expiry is checked while the room has states.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Pause after a failed snapshot before the next attempt.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(5);
/// How soon an unload is retried when updates are still waiting to become durable.
const UNLOAD_RETRY: Duration = Duration::from_millis(50);

/// A message to a room.
#[derive(Debug)]
pub enum RoomMsg {
    /// A connection joins; the reply comes once the document is loaded and the peer has been
    /// sent the document's SyncStep1.
    Join {
        /// The joining connection.
        peer: Arc<Peer>,
        /// `Err` when the document could not be loaded.
        reply: oneshot::Sender<Result<(), JoinError>>,
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
    /// The server is shutting down: flush, close every connection with 1001 and stop.
    Shutdown,
    /// A request from the admin API.
    Command(Command),
}

/// What an administrator asks of a room (through the admin API). Each carries its reply.
pub enum Command {
    /// Makes the content equal to `target`'s, as one new forward change (restore, or import
    /// with `mode=replace`).
    Replace {
        /// The wanted content.
        target: Doc,
        /// Recorded as the change's author.
        author: String,
        /// The change, once accepted.
        reply: oneshot::Sender<Result<Applied, CommandError>>,
    },
    /// Applies a Yjs update as a change, like a client's (import with `mode=merge`).
    Merge {
        /// The update (v1).
        update: Vec<u8>,
        /// Recorded as the change's author.
        author: String,
        /// The change, once accepted.
        reply: oneshot::Sender<Result<Applied, CommandError>>,
    },
    /// Writes a snapshot covering every change so far; replies with its seq once stored.
    Snapshot {
        /// The snapshot's sequence number.
        reply: oneshot::Sender<Result<i64, CommandError>>,
    },
    /// The current state as one update (v1), with the sequence number it covers.
    Export {
        /// `(seq, state)`.
        reply: oneshot::Sender<Result<(i64, Vec<u8>), CommandError>>,
    },
    /// Closes the connections of `user` (all when `None`) with 4000.
    Disconnect {
        /// Only this token subject's connections.
        user: Option<String>,
        /// How many were closed.
        reply: oneshot::Sender<Result<usize, CommandError>>,
    },
    /// Closes every connection with 4410 and stops the room; replies (with how many were
    /// closed) once every accepted change is durable, so the caller can then delete the
    /// stored document without a late log row reappearing.
    Delete {
        /// How many connections were closed.
        reply: oneshot::Sender<Result<usize, CommandError>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Replace { .. } => "Replace",
            Command::Merge { .. } => "Merge",
            Command::Snapshot { .. } => "Snapshot",
            Command::Export { .. } => "Export",
            Command::Disconnect { .. } => "Disconnect",
            Command::Delete { .. } => "Delete",
        })
    }
}

impl Command {
    /// Answers the command with `err` without carrying it out.
    pub fn refuse(self, err: CommandError) {
        match self {
            Command::Replace { reply, .. } | Command::Merge { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(Err(err));
            }
            Command::Export { reply } => {
                let _ = reply.send(Err(err));
            }
            Command::Disconnect { reply, .. } | Command::Delete { reply } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// Why a room could not carry out a [`Command`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The document could not be loaded, or the server is shutting down.
    #[error("document unavailable: {0}")]
    Unavailable(String),
    /// The document was deleted.
    #[error("document deleted")]
    Deleted,
    /// The given update or content is not valid.
    #[error("{0}")]
    Invalid(String),
    /// Needs durable storage (the server runs with `--database-url memory`).
    #[error("needs durable storage; the server runs with --database-url memory")]
    NoStorage,
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(String),
}

/// A change an administrator made, as accepted by the room.
#[derive(Debug)]
pub struct Applied {
    /// Its sequence number in the log; `None` when it changed nothing.
    pub seq: Option<i64>,
    /// The room's durability watermark (`None` for memory storage).
    durable: Option<watch::Receiver<i64>>,
}

impl Applied {
    /// Waits (at most `timeout`) until the change is durable; false if it is not by then.
    pub async fn wait_durable(&mut self, timeout: Duration) -> bool {
        let (Some(seq), Some(w)) = (self.seq, self.durable.as_mut()) else {
            return true;
        };
        matches!(
            tokio::time::timeout(timeout, w.wait_for(|d| *d >= seq)).await,
            Ok(Ok(_))
        )
    }
}

/// A cheap handle to a running room.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    /// The room's inbox.
    pub tx: mpsc::Sender<RoomMsg>,
    /// Distinguishes successive rooms of the same name in the registry.
    pub generation: u64,
}

/// A frame waiting for its update to become durable.
enum Release {
    /// A relayed update, for every peer.
    All(Bytes),
    /// A SyncStep2 for one peer, computed when the document held non-durable updates.
    One(ConnId, Bytes),
}

/// The room's link to durable storage.
struct Durable {
    store: Store,
    writer: Writer,
    /// The document's id, unknown until its first change is logged: loading never creates a
    /// document's row, the writer does with the first row it commits.
    doc: DocRef,
    /// Raised by the writer as log rows commit.
    watermark: Arc<watch::Sender<i64>>,
    /// Sequence number covered by the newest snapshot.
    snapshot_seq: i64,
    /// Update bytes logged since start (to tell when a snapshot is due).
    bytes_logged: u64,
    /// `bytes_logged` when the newest snapshot was taken.
    bytes_at_snapshot: u64,
    /// After a failed snapshot, none is attempted before this (the database may be down, and
    /// encoding a large document on every turn of the loop would waste the room's time).
    snapshot_not_before: Option<Instant>,
}

/// Why the room's main loop ended.
enum Exit {
    /// Idle and removed from the registry.
    Unloaded,
    /// Server shutdown.
    Shutdown,
    /// The in-memory document can no longer be trusted.
    Poisoned,
    /// An administrator deleted the document.
    Deleted,
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
    /// Sequence number of the last accepted update.
    seq: i64,
    /// Frames waiting for durability, in sequence order.
    pending: VecDeque<(i64, Release)>,
    durable: Option<Durable>,
    poisoned: bool,
    /// Encoded size of the updates yrs holds as pending (they arrived before updates they
    /// depend on), as measured after the last apply; bounded by `--max-pending-bytes`.
    yrs_pending_bytes: u64,
    /// Set by [`Command::Delete`]: the room stops, and answers once changes are durable.
    deleting: Option<(usize, oneshot::Sender<Result<usize, CommandError>>)>,
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
        presence: Presence::new(
            shared.config.awareness_timeout,
            Limits {
                ids_per_conn: shared.config.max_awareness_ids_per_conn,
                bytes_per_conn: shared.config.max_awareness_bytes_per_conn,
            },
        ),
        name,
        generation,
        registry,
        doc: Doc::new(),
        peers: HashMap::new(),
        seq: 0,
        pending: VecDeque::new(),
        durable: None,
        poisoned: false,
        yrs_pending_bytes: 0,
        deleting: None,
        shared: shared.clone(),
    };
    shared.rooms.spawn(room.run(rx).instrument(span));
    RoomHandle { tx, generation }
}

/// The client ids for which `update` holds clocks `doc` does not have yet: its blocks (items
/// and GC ranges, including blocks that will wait in the pending set for a missing
/// dependency) ending above the document's state vector. `Update::state_vector` cannot be
/// used: it only counts a client's blocks when they start at clock 0.
fn new_clocks(doc: &Doc, update: &Update) -> Vec<u64> {
    let sv = doc.transact().state_vector();
    update
        .insertions(true)
        .iter()
        .filter(|(client, ranges)| ranges.iter().any(|r| r.end > sv.get(client)))
        .map(|(client, _)| client.get())
        .collect()
}

/// Whether `update` inserts or deletes anything `doc` does not already have.
fn adds_anything(doc: &Doc, update: &Update) -> bool {
    if !new_clocks(doc, update).is_empty() {
        return true;
    }
    let deletes = update.delete_set();
    !deletes.is_empty()
        && !deletes
            .diff(&doc.transact().snapshot().delete_set)
            .is_empty()
}

/// Applies stored updates into `doc` in one transaction; errors and panics become an error.
fn apply_stored<'a>(doc: &Doc, updates: impl Iterator<Item = &'a [u8]>) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        for bytes in updates {
            let update = protocol::decode_stored_update(bytes).map_err(|e| e.to_string())?;
            txn.apply_update(update).map_err(|e| e.to_string())?;
        }
        Ok(())
    }));
    outcome.unwrap_or_else(|_| Err("stored update made yrs panic".into()))
}

/// The id of a document some of whose changes are durable (the writer creates the row before
/// the first of them commits).
fn logged_id(doc: &DocRef) -> Result<i64, StoreError> {
    doc.id()
        .ok_or_else(|| StoreError::Deleted(format!("document {:?} has no row", doc.name())))
}

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let mut watermark = match self.load().await {
            Ok(watermark) => watermark,
            Err(e) => {
                if matches!(e, CommandError::Deleted) {
                    debug!("document is deleted; refusing joins");
                } else {
                    error!(error = %e, "load failed; refusing joins");
                }
                self.registry.remove(&self.name, self.generation);
                rx.close();
                while let Some(msg) = rx.recv().await {
                    match msg {
                        RoomMsg::Join { reply, .. } => {
                            let _ = reply.send(Err(match e {
                                CommandError::Deleted => JoinError::Deleted,
                                _ => JoinError::LoadFailed,
                            }));
                        }
                        RoomMsg::Command(cmd) => cmd.refuse(e.clone()),
                        _ => {}
                    }
                }
                return;
            }
        };
        metrics.documents_open.inc();
        metrics.documents_loaded.inc();
        debug!(seq = self.seq, "loaded");

        let mut unload_at = Some(Instant::now() + shared.config.unload_after);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut snapshot: Option<JoinHandle<Result<(i64, u64), StoreError>>> = None;
        let exit = loop {
            if self.poisoned {
                break Exit::Poisoned;
            }
            if self.deleting.is_some() {
                break Exit::Deleted;
            }
            if snapshot.is_none() {
                snapshot = self.start_snapshot_if_due();
            }
            let sweeping = !self.presence.is_empty();
            let waiting = !self.pending.is_empty();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(RoomMsg::Shutdown) | None => break Exit::Shutdown,
                    Some(msg) => self.handle(msg),
                },
                changed = async { watermark.as_mut()?.changed().await.ok() }, if waiting => {
                    if changed.is_some() {
                        let durable = watermark.as_ref().map_or(self.seq, |w| *w.borrow());
                        self.release(durable);
                    }
                }
                done = async { snapshot.as_mut()?.await.ok() }, if snapshot.is_some() => {
                    snapshot = None;
                    self.snapshot_done(done);
                }
                _ = sleep_until(next_sweep.into()), if sweeping => {
                    next_sweep = Instant::now() + SWEEP_EVERY;
                    self.sweep_awareness();
                }
                _ = sleep_until(unload_at.unwrap_or_else(Instant::now).into()), if unload_at.is_some() => {
                    if self.pending.is_empty()
                        && snapshot.is_none()
                        && self.registry.remove_if_idle(&self.name, self.generation, &rx)
                    {
                        // Written in the background: the next load is correct without it
                        // (snapshot + log), only faster with it.
                        if let Some(write) = self.final_snapshot() {
                            shared.rooms.spawn(write);
                        }
                        break Exit::Unloaded;
                    }
                    unload_at = Some(Instant::now() + UNLOAD_RETRY);
                    continue;
                }
            }
            unload_at = if self.peers.is_empty() {
                unload_at.or_else(|| Some(Instant::now() + shared.config.unload_after))
            } else {
                None
            };
        };
        if let Some(task) = snapshot {
            // Bounded: at shutdown during an outage it may be waiting on the database.
            let abort = task.abort_handle();
            if tokio::time::timeout(shared.config.shutdown_timeout, task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.retire(exit, &mut rx, watermark).await;
        // Pending updates are memory only and leave with the room (their senders resend them
        // on their next sync).
        self.set_yrs_pending_bytes(0);
        metrics.documents_open.dec();
    }

    /// Loads the document: newest snapshot plus the log after it. Returns the durability
    /// watermark receiver (none for memory storage).
    async fn load(&mut self) -> Result<Option<watch::Receiver<i64>>, CommandError> {
        let Storage::Durable { store, writer } = &self.shared.storage else {
            return Ok(None);
        };
        let loaded = store.load(&self.name).await.map_err(|e| match e {
            StoreError::Deleted(_) => CommandError::Deleted,
            e => CommandError::Unavailable(e.to_string()),
        })?;
        let snapshot = loaded.snapshot.as_ref();
        let stored = snapshot
            .map(|s| s.state.as_slice())
            .into_iter()
            .chain(loaded.updates.iter().map(|row| row.data.as_slice()));
        apply_stored(&self.doc, stored).map_err(CommandError::Unavailable)?;
        self.seq = loaded.last_seq;
        let snapshot_seq = snapshot.map_or(0, |s| s.seq);
        let bytes_since: u64 = loaded.updates.iter().map(|r| r.size.max(0) as u64).sum();
        let (watermark, rx) = watch::channel(loaded.last_seq);
        self.durable = Some(Durable {
            store: store.clone(),
            writer: writer.clone(),
            doc: loaded.doc_ref(&self.name),
            watermark: Arc::new(watermark),
            snapshot_seq,
            bytes_logged: bytes_since,
            bytes_at_snapshot: 0,
            snapshot_not_before: None,
        });
        Ok(Some(rx))
    }

    fn handle(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Join { peer, reply } => self.join(peer, reply),
            RoomMsg::Frame { conn, msgs } => {
                for msg in msgs {
                    if !self.peers.contains_key(&conn) || self.poisoned {
                        break;
                    }
                    self.inbound(conn, msg);
                }
            }
            RoomMsg::Leave { conn } => self.leave(conn),
            RoomMsg::Shutdown => {}
            RoomMsg::Command(cmd) => self.command(cmd),
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Replace {
                target,
                author,
                reply,
            } => {
                let doc = &self.doc;
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    crate::history::restore::restore_into(doc, &target)
                }));
                let result = match outcome {
                    Ok(Ok(changed)) => Ok(self.accept_admin(author, changed)),
                    // A panic inside restore_into may leave part of the restore applied with
                    // no update describing it: the document can no longer be trusted.
                    Ok(Err(crate::history::HistoryError::Panicked(_))) | Err(_) => {
                        error!("restore made yrs panic; reloading the document");
                        self.poisoned = true;
                        Err(CommandError::Unavailable("restore failed".into()))
                    }
                    Ok(Err(e)) => Err(CommandError::Invalid(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Merge {
                update,
                author,
                reply,
            } => {
                let depth = self.shared.config.max_nesting_depth;
                let result = match protocol::decode_update(&update, depth) {
                    Ok(update) => match self.integrate(update) {
                        Ok(Integrated {
                            changed,
                            pending_refused: false,
                            ..
                        }) => Ok(self.accept_admin(author, changed)),
                        Ok(Integrated {
                            changed,
                            pending_refused: true,
                            ..
                        }) => {
                            // What did integrate is kept (and logged) like any change.
                            self.accept_admin(author, changed);
                            self.shared
                                .metrics
                                .update_refused(Close::PendingTooLarge.label());
                            Err(CommandError::Invalid(
                                "the update depends on changes the document does not have \
                                 (pending beyond --max-pending-bytes)"
                                    .into(),
                            ))
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(CommandError::Invalid(format!("not a Yjs update: {e}"))),
                };
                let _ = reply.send(result);
            }
            Command::Snapshot { reply } => match self.snapshot_write() {
                Some((seq, write)) => {
                    self.shared.rooms.spawn(
                        async move {
                            let result = write
                                .await
                                .map(|()| seq)
                                .map_err(|e| CommandError::Storage(e.to_string()));
                            let _ = reply.send(result);
                        }
                        .in_current_span(),
                    );
                }
                None => {
                    let _ = reply.send(Err(if self.durable.is_none() {
                        CommandError::NoStorage
                    } else {
                        CommandError::Unavailable("could not encode the document".into())
                    }));
                }
            },
            Command::Export { reply } => {
                let result = self
                    .encode_state()
                    .map(|(state, _)| (self.seq, state))
                    .ok_or_else(|| {
                        CommandError::Unavailable("could not encode the document".into())
                    });
                let _ = reply.send(result);
            }
            Command::Disconnect { user, reply } => {
                let chosen: Vec<ConnId> = self
                    .peers
                    .values()
                    .filter(|p| user.is_none() || p.user == user)
                    .map(|p| p.id)
                    .collect();
                for conn in &chosen {
                    self.kick(*conn, Close::Disconnected);
                }
                let _ = reply.send(Ok(chosen.len()));
            }
            Command::Delete { reply } => {
                let closed = self.peers.len();
                for peer in self.peers.values() {
                    peer.close(Close::Deleted);
                }
                self.peers.clear();
                self.deleting = Some((closed, reply));
            }
        }
    }

    /// Logs and relays an administrator's change (if it changed anything).
    fn accept_admin(&mut self, author: String, changed: Option<Vec<u8>>) -> Applied {
        let durable = self.durable.as_ref().map(|d| d.watermark.subscribe());
        let Some(changed) = changed else {
            return Applied { seq: None, durable };
        };
        self.shared.metrics.updates_applied.inc();
        self.accept(Some(author), changed);
        Applied {
            seq: Some(self.seq),
            durable,
        }
    }

    fn join(&mut self, peer: Arc<Peer>, reply: oneshot::Sender<Result<(), JoinError>>) {
        let sv = self.doc.transact().state_vector();
        peer.push(protocol::encode_sync_step1(&sv));
        let live = self.presence.live();
        if !live.is_empty() {
            peer.push(protocol::encode_awareness(
                live.into_iter()
                    .map(|(id, clock, state)| (id, clock, Some(state))),
            ));
        }
        if reply.send(Ok(())).is_ok() {
            self.presence
                .join(peer.id, peer.user.as_deref(), Instant::now());
            self.peers.insert(peer.id, peer);
        }
    }

    fn is_read_only(&self, conn: ConnId) -> bool {
        self.peers.get(&conn).is_some_and(|p| p.read_only)
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
                let frame = protocol::encode_sync_step2(&update);
                if self.pending.is_empty() {
                    self.send_to(conn, frame);
                } else {
                    // The diff may contain updates not yet durable: hold it with them.
                    self.pending
                        .push_back((self.seq, Release::One(conn, frame)));
                }
            }
            Inbound::Update(update) if self.is_read_only(conn) => {
                // Not applied, persisted or relayed; the connection stays open. Counted only
                // if it holds something new: every y-websocket client answers the server's
                // SyncStep1 with a SyncStep2, which from a reader holds nothing new, and
                // counting those made every read-only join look like a refused write.
                if adds_anything(&self.doc, &update) {
                    self.shared.metrics.readonly_updates_refused.inc();
                }
            }
            Inbound::Update(update) => self.apply(conn, update),
            Inbound::Awareness(_)
                if self.is_read_only(conn)
                    && self.shared.config.readonly_awareness == ReadOnlyAwareness::Drop => {}
            Inbound::Awareness(update) => {
                let applied = self.presence.apply(conn, &update, Instant::now());
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
                if applied.over_limit {
                    warn!(conn, "awareness limit reached; closing the connection");
                    self.kick(conn, Close::AwarenessLimit);
                }
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

    /// Applies one update from a client; logs what it changed and relays it (once durable) to
    /// everyone, sender included.
    fn apply(&mut self, conn: ConnId, update: Update) {
        let max_backlog = self.shared.config.max_backlog_bytes as u64;
        if self.durable.is_some() && self.shared.storage.backlog().bytes > max_backlog {
            warn!(conn, "storage backlog full; refusing update");
            self.kick(conn, Close::BacklogFull);
            return;
        }
        // Client-id ownership: an update adding clocks for an id another live connection owns
        // is refused whole. This is what tells the legitimate cases apart:
        // - a client reconnecting with its id: its old connection left, and the id was
        //   reserved for its user (token `sub`), so it takes it back (awareness or write);
        // - an offline client resending hours of edits: they are under its own id;
        // - a client relaying structs of others it received elsewhere: accepted when their
        //   owners are not connected here (the relayer then holds those ids until it leaves,
        //   yielding to their owners' awareness announcements); when an owner is connected
        //   here, the owner delivers its edits itself, so refusing the relay loses nothing
        //   (the relayer's provider reconnects on 1008 and resyncs).
        // Deletions of others' content are normal editing and not checked.
        let ids = new_clocks(&self.doc, &update);
        let now = Instant::now();
        if let Err(id) = self.presence.may_write(conn, &ids, now) {
            warn!(
                conn,
                client_id = id,
                "update writes a client id another connection owns; refused"
            );
            self.kick(conn, Close::ForeignClientId);
            return;
        }
        match self.integrate(update) {
            Ok(integrated) => {
                if let Some(changed) = integrated.changed {
                    self.presence.wrote(conn, &ids, now);
                    self.shared.metrics.updates_applied.inc();
                    let author = self.peers.get(&conn).and_then(|p| p.user.clone());
                    self.accept(author, changed);
                }
                if integrated.pending_refused {
                    warn!(
                        conn,
                        "pending updates past --max-pending-bytes; refusing sender"
                    );
                    self.shared
                        .metrics
                        .update_refused(Close::PendingTooLarge.label());
                    self.kick(conn, Close::PendingTooLarge);
                }
            }
            Err(e) => {
                if self.poisoned {
                    error!(
                        conn,
                        "update made yrs panic; closing the sender and reloading the document"
                    );
                } else {
                    warn!(conn, error = %e, "rejected update");
                }
                self.kick(conn, Close::InvalidUpdate);
            }
        }
    }

    /// Applies an update to the document and returns what it changed, keeping yrs' pending
    /// set within `--max-pending-bytes` (see [`pending::integrate`]). yrs must not take the
    /// server down on a hostile update: a panic is caught and the room marked poisoned, so it
    /// retires and the document reloads.
    fn integrate(&mut self, update: Update) -> Result<Integrated, CommandError> {
        let started = Instant::now();
        let max_pending = self.shared.config.max_pending_bytes as u64;
        let pending_before = self.yrs_pending_bytes;
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pending::integrate(doc, update, pending_before, max_pending)
        }));
        self.shared
            .metrics
            .update_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(integrated)) => {
                self.set_yrs_pending_bytes(integrated.pending_bytes);
                Ok(integrated)
            }
            Ok(Err(e)) => Err(CommandError::Invalid(e.to_string())),
            Err(_) => {
                self.poisoned = true;
                Err(CommandError::Unavailable("update made yrs panic".into()))
            }
        }
    }

    /// Records the document's pending size, keeping the process-wide gauge in step.
    fn set_yrs_pending_bytes(&mut self, bytes: u64) {
        let delta = i64::try_from(bytes).unwrap_or(i64::MAX)
            - i64::try_from(self.yrs_pending_bytes).unwrap_or(i64::MAX);
        self.shared.metrics.pending_bytes.inc_by(delta);
        self.yrs_pending_bytes = bytes;
    }

    /// Logs an applied change and relays it: at once with memory storage, otherwise when
    /// durable.
    fn accept(&mut self, author: Option<String>, changed: Vec<u8>) {
        let frame = protocol::encode_update(&changed);
        self.log(author, changed);
        match self.durable {
            Some(_) => self.pending.push_back((self.seq, Release::All(frame))),
            None => self.broadcast(frame),
        }
    }

    /// Gives an accepted update the next sequence number and queues it for the log.
    fn log(&mut self, author: Option<String>, changed: Vec<u8>) {
        self.seq += 1;
        let Some(durable) = &mut self.durable else {
            return;
        };
        durable.bytes_logged += changed.len() as u64;
        durable.writer.append_to(
            &durable.doc,
            NewUpdate {
                doc_id: 0, // set by the writer from `doc`
                seq: self.seq,
                data: Bytes::from(changed),
                author,
                created_at: SystemTime::now(),
            },
            durable.watermark.clone(),
        );
    }

    /// Sends every pending frame whose update is now durable.
    fn release(&mut self, durable: i64) {
        while self.pending.front().is_some_and(|(seq, _)| *seq <= durable) {
            let Some((_, release)) = self.pending.pop_front() else {
                break;
            };
            match release {
                Release::All(frame) => self.broadcast(frame),
                Release::One(conn, frame) => self.send_to(conn, frame),
            }
        }
    }

    /// Starts writing a snapshot in the background when the log since the last one is long
    /// enough. The task waits until the covered updates are durable before writing, so a
    /// snapshot never claims a sequence number the log does not have.
    fn start_snapshot_if_due(&mut self) -> Option<JoinHandle<Result<(i64, u64), StoreError>>> {
        let config = &self.shared.config;
        let durable = self.durable.as_ref()?;
        if durable
            .snapshot_not_before
            .is_some_and(|t| Instant::now() < t)
        {
            return None;
        }
        let rows = (self.seq - durable.snapshot_seq) as u64;
        let bytes = durable.bytes_logged - durable.bytes_at_snapshot;
        if rows == 0
            || (rows < config.snapshot_every_updates && bytes < config.snapshot_every_bytes as u64)
        {
            return None;
        }
        let (state, sv) = self.encode_state()?;
        let (store, doc, seq, bytes_logged) = (
            durable.store.clone(),
            durable.doc.clone(),
            self.seq,
            durable.bytes_logged,
        );
        let mut watermark = durable.watermark.subscribe();
        let retention = config.log_retention;
        Some(tokio::spawn(
            async move {
                // The sender lives in this room, which outlives the task.
                let _ = watermark.wait_for(|w| *w >= seq).await;
                let doc_id = logged_id(&doc)?;
                store.write_snapshot(doc_id, seq, &state, &sv).await?;
                if let Some(keep) = retention {
                    let before = SystemTime::now() - keep;
                    let pruned = store.prune_log(doc_id, before).await?;
                    debug!(pruned, "log retention applied");
                }
                Ok((seq, bytes_logged))
            }
            .in_current_span(),
        ))
    }

    fn snapshot_done(&mut self, done: Option<Result<(i64, u64), StoreError>>) {
        match (done, &mut self.durable) {
            (Some(Ok((seq, bytes))), Some(durable)) => {
                durable.snapshot_seq = seq;
                durable.bytes_at_snapshot = bytes;
                debug!(seq, "snapshot written");
            }
            // The thresholds stay crossed, so it is retried after a pause.
            (Some(Err(e)), Some(durable)) => {
                warn!(error = %e, "snapshot failed; retrying later");
                durable.snapshot_not_before = Some(Instant::now() + SNAPSHOT_RETRY);
            }
            _ => {}
        }
    }

    /// A snapshot covering everything, if the log has grown since the last one (so the next
    /// load reads one row), as a task bounded by the shutdown timeout. Errors are logged: the
    /// log alone is still complete, so the document never depends on this write.
    fn final_snapshot(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let durable = self.durable.as_ref()?;
        if self.seq == durable.snapshot_seq || self.poisoned {
            return None;
        }
        let (seq, write) = self.snapshot_write()?;
        let timeout = self.shared.config.shutdown_timeout;
        Some(
            async move {
                match tokio::time::timeout(timeout, write).await {
                    Ok(Ok(())) => debug!(seq, "final snapshot written"),
                    Ok(Err(e)) => warn!(error = %e, "final snapshot failed"),
                    Err(_) => warn!("final snapshot timed out"),
                }
            }
            .in_current_span(),
        )
    }

    /// The current state, and the write that stores it as a snapshot at the current sequence
    /// number once every change it covers is durable (a snapshot never claims a sequence
    /// number the log does not have). `None` without durable storage or if encoding failed.
    fn snapshot_write(
        &self,
    ) -> Option<(
        i64,
        impl Future<Output = Result<(), StoreError>> + Send + 'static,
    )> {
        let durable = self.durable.as_ref()?;
        let (state, sv) = self.encode_state()?;
        let (store, doc, seq) = (durable.store.clone(), durable.doc.clone(), self.seq);
        let mut watermark = durable.watermark.subscribe();
        Some((seq, async move {
            let _ = watermark.wait_for(|w| *w >= seq).await;
            if seq == 0 && doc.id().is_none() {
                // Nothing was ever written: there is nothing to store, and no row to store it in.
                return Ok(());
            }
            store
                .write_snapshot(logged_id(&doc)?, seq, &state, &sv)
                .await
        }))
    }

    fn encode_state(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        catch_unwind(AssertUnwindSafe(|| {
            let txn = self.doc.transact();
            (
                txn.encode_state_as_update_v1(&StateVector::default()),
                txn.state_vector().encode_v1(),
            )
        }))
        .ok()
    }

    /// Ends the room: waits (bounded) for pending updates to become durable and delivers them,
    /// writes a final snapshot, closes the peers, leaves the registry and answers anything
    /// still in the inbox so joiners retry against a fresh room.
    async fn retire(
        &mut self,
        exit: Exit,
        rx: &mut mpsc::Receiver<RoomMsg>,
        mut watermark: Option<watch::Receiver<i64>>,
    ) {
        let timeout = self.shared.config.shutdown_timeout;
        if let Some(w) = watermark.as_mut() {
            let seq = self.seq;
            if tokio::time::timeout(timeout, w.wait_for(|d| *d >= seq))
                .await
                .is_err()
            {
                warn!(
                    seq,
                    "updates not durable before the room closed; they stay queued in the writer"
                );
            }
            let durable = *w.borrow();
            self.release(durable);
        } else {
            self.release(self.seq);
        }
        if let Some((closed, reply)) = self.deleting.take() {
            let _ = reply.send(Ok(closed));
        }
        let reason = match exit {
            Exit::Poisoned => Close::Internal,
            Exit::Deleted => Close::Deleted,
            Exit::Shutdown | Exit::Unloaded => Close::Shutdown,
        };
        let write = matches!(exit, Exit::Shutdown)
            .then(|| self.final_snapshot())
            .flatten();
        if let Some(write) = write {
            write.await;
        }
        for peer in self.peers.values() {
            peer.close(reason);
        }
        self.peers.clear();
        if !matches!(exit, Exit::Unloaded) {
            self.registry.remove(&self.name, self.generation);
        }
        rx.close();
        // Anything that slipped in is answered by dropping it: joiners see their reply channel
        // close and retry through the registry, reaching a fresh room.
        while rx.recv().await.is_some() {}
        if matches!(exit, Exit::Unloaded) {
            self.shared.metrics.documents_unloaded.inc();
        }
        debug!("room closed");
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

    fn kick(&mut self, conn: ConnId, reason: Close) {
        if let Some(peer) = self.peers.get(&conn) {
            peer.close(reason);
        }
        self.leave(conn);
    }
}
