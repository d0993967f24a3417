//! One task per open document: it alone owns the document, so there are no locks around it and
//! every change is applied in one order.
//!
//! The rules live in [`core::RoomCore`] (no I/O: inputs in, [`Effect`]s out). This module is
//! its driver: the task that receives [`RoomMsg`]s from connections and the admin API, feeds
//! them to the core, and carries out the effects — frames onto each connection's [`Peer`]
//! queue (encoded once, the same `Bytes` shared by all recipients), log rows to the store's
//! group-commit writer, durability reports back into the core, snapshots, and the unload
//! lifecycle with the registry.
//!
//! **Persist before relay.** The core holds the frames an update causes until the driver
//! reports it durable. With durable storage that is when the writer raises the watermark (the
//! room never waits on the database: it keeps applying and queueing while commits are in
//! flight); with memory storage the driver reports each append durable as it executes it.

pub(crate) mod core;
mod replica;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crdt_store::{DocRef, NewUpdate, Store, StoreError, Writer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::sleep_until;
use tracing::{Instrument, debug, error, info_span, warn};
use yrs::Doc;

use self::core::{CoreConfig, CoreMetrics, Effect, PeerMeta, RoomCore};
use self::replica::Replica;
use crate::close::Close;
use crate::history::HistoryError;
use crate::peer::Peer;
use crate::presence::ConnId;
use crate::protocol::Inbound;
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
/// How many times a restore computed off the room is recomputed because the document moved
/// meanwhile, before it is computed inside the room (which cannot be overtaken).
const RESTORE_ATTEMPTS: u32 = 3;

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
    /// News from the other nodes of a cluster.
    Remote(Remote),
}

/// What a cluster tells a room (see [`crate::cluster`]).
#[derive(Debug)]
pub enum Remote {
    /// Log row `seq`, written by another node.
    Update {
        /// Its sequence number.
        seq: i64,
        /// The Yjs update (v1).
        update: Bytes,
    },
    /// Awareness of another node's clients.
    Awareness {
        /// That node.
        node: crate::cluster::NodeId,
        /// A y-websocket awareness frame.
        frame: Bytes,
    },
    /// A node died or left: its clients' awareness goes.
    NodeGone {
        /// That node.
        node: crate::cluster::NodeId,
    },
    /// The document's log reaches `seq` (the cluster's periodic check): the room catches up
    /// if it has less.
    LogAt {
        /// The log's newest sequence number.
        seq: i64,
    },
    /// The link to the other nodes is back after an outage: catch up from the log and tell
    /// them this node's awareness again.
    Relinked,
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
        /// Which roots, and on what condition.
        scope: ReplaceScope,
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

/// What a [`Command::Replace`] may touch, and when.
#[derive(Debug, Clone, Default)]
pub struct ReplaceScope {
    /// Only these roots are made equal to the target's; the others stay as they are (all
    /// roots when `None`).
    pub roots: Option<Arc<std::collections::BTreeSet<String>>>,
    /// Refused with [`CommandError::Moved`] when the document is past this sequence number.
    pub if_seq: Option<i64>,
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
    /// A conditional change found the document past the sequence number it was made for.
    #[error("the document moved on: it is at seq {0}")]
    Moved(i64),
}

/// A change an administrator made, as accepted by the room.
#[derive(Debug)]
pub struct Applied {
    /// Its sequence number in the log; `None` when it changed nothing. In a cluster this is
    /// the room's ticket until [`Applied::wait_durable`] replaces it with the log's number.
    pub seq: Option<i64>,
    /// The room's durability watermark (`None` for memory storage).
    durable: Option<watch::Receiver<i64>>,
    /// In a cluster: the log's number for the change, once it commits.
    number: Option<oneshot::Receiver<i64>>,
}

impl Applied {
    /// Waits (at most `timeout`) until the change is durable; false if it is not by then.
    pub async fn wait_durable(&mut self, timeout: Duration) -> bool {
        let (Some(seq), Some(w)) = (self.seq, self.durable.as_mut()) else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        if !matches!(
            tokio::time::timeout_at(deadline, w.wait_for(|d| *d >= seq)).await,
            Ok(Ok(_))
        ) {
            return false;
        }
        match self.number.take() {
            None => true,
            Some(number) => match tokio::time::timeout_at(deadline, number).await {
                Ok(Ok(n)) => {
                    self.seq = Some(n);
                    true
                }
                _ => false,
            },
        }
    }
}

/// A cheap handle to a running room.
#[derive(Debug, Clone)]
pub(crate) struct RoomHandle {
    /// The room's inbox.
    pub tx: mpsc::Sender<RoomMsg>,
    /// Distinguishes successive rooms of the same name in the registry.
    pub generation: u64,
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

/// A restore being computed off the room task, on a copy of the document at `base_seq`.
struct Restore {
    /// The document's [`RoomCore::version`] when the copy was taken.
    base_version: u64,
    target: Doc,
    author: String,
    scope: ReplaceScope,
    reply: oneshot::Sender<Result<Applied, CommandError>>,
    /// Computations so far (each one found the document moved before it could apply).
    attempts: u32,
    /// What `restore_into` made of the copy; `Err` when the copy could not be built.
    outcome: Result<Result<Option<Vec<u8>>, HistoryError>, String>,
}

/// Rows read back from the log (in a cluster): the end of the range read, and the rows.
type ReadBack = Result<(i64, Vec<crdt_store::LogRow>), StoreError>;

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

/// State owned by the room task: the core, and the I/O it drives.
struct Room {
    name: Arc<str>,
    generation: u64,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    core: RoomCore,
    /// The joined connections' queues (the core knows the same set by id).
    peers: HashMap<ConnId, Arc<Peer>>,
    durable: Option<Durable>,
    /// Set by [`Command::Delete`]: the room stops, and answers once changes are durable.
    deleting: Option<(usize, oneshot::Sender<Result<usize, CommandError>>)>,
    /// Restores computed on blocking threads (see [`Room::start_restore`]).
    restores: JoinSet<Restore>,
    /// The durable watermark last announced on the change bus.
    announced: i64,
    /// In a cluster: which log rows the document holds (see [`replica`]).
    replica: Option<Replica>,
    /// In a cluster: a read of rows missing from the document.
    catch_up: Option<JoinHandle<ReadBack>>,
}

/// Tells a room that `conn` left without waiting on its inbox (from code that cannot wait:
/// a socket task between events, a dropped fallback stream). Outside a runtime (only while
/// the process exits) a full inbox gets no message: the room is going away too.
pub(crate) fn leave_later(room: mpsc::Sender<RoomMsg>, conn: ConnId) {
    if let Err(mpsc::error::TrySendError::Full(msg)) = room.try_send(RoomMsg::Leave { conn })
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        runtime.spawn(async move {
            let _ = room.send(msg).await;
        });
    }
}

/// Starts the task for document `name` and returns its handle.
pub(crate) fn spawn(
    name: Arc<str>,
    generation: u64,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
) -> RoomHandle {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let span = info_span!("room", doc = %name);
    let room = Room {
        core: RoomCore::new(
            CoreConfig::from_config(&shared.config),
            CoreMetrics::new(&shared.metrics),
        ),
        name,
        generation,
        registry,
        peers: HashMap::new(),
        durable: None,
        deleting: None,
        restores: JoinSet::new(),
        announced: 0,
        replica: None,
        catch_up: None,
        shared: shared.clone(),
    };
    shared.rooms.spawn(room.run(rx).instrument(span));
    RoomHandle { tx, generation }
}

/// The id of a document some of whose changes are durable (the writer creates the row before
/// the first of them commits).
fn logged_id(doc: &DocRef) -> Result<i64, StoreError> {
    doc.id()
        .ok_or_else(|| StoreError::Deleted(format!("document {:?} has no row", doc.name())))
}

impl Room {
    /// The room's task: loads the document, then serves messages, durability, restores,
    /// snapshots, presence sweeps and the unload timer until it exits, then retires.
    ///
    /// Why one function: the `select!` loop's state (watermark, snapshot task, timers) lives in
    /// its locals across iterations; each branch's work is a method of its own.
    async fn run(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let mut watermark = match self.load().await {
            Ok(watermark) => watermark,
            Err(e) => {
                self.unsubscribe();
                return self.refuse_all(&mut rx, e).await;
            }
        };
        metrics.documents_open.inc();
        metrics.documents_loaded.inc();
        debug!(seq = self.core.seq(), "loaded");

        let mut unload_at = Some(Instant::now() + shared.config.unload_after);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut snapshot: Option<JoinHandle<Result<(i64, u64), StoreError>>> = None;
        let mut catch_up = None;
        let exit = loop {
            if self.core.poisoned() {
                break Exit::Poisoned;
            }
            if self.deleting.is_some() {
                break Exit::Deleted;
            }
            if snapshot.is_none() {
                snapshot = self.start_snapshot_if_due();
            }
            let sweeping = self.core.has_presence();
            let waiting = self.core.waiting();
            if catch_up.is_none() {
                catch_up = self.catch_up.take();
            }
            let gap_at = self.replica.as_ref().and_then(Replica::gap_deadline);
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(RoomMsg::Shutdown) | None => break Exit::Shutdown,
                    Some(msg) => self.handle(msg),
                },
                changed = async { watermark.as_mut()?.changed().await.ok() }, if waiting => {
                    if changed.is_some() {
                        let durable = watermark.as_ref().map_or(self.core.seq(), |w| *w.borrow());
                        self.durable_reached(durable);
                    }
                }
                done = async { catch_up.as_mut()?.await.ok() }, if catch_up.is_some() => {
                    catch_up = None;
                    self.caught_up(done);
                }
                _ = sleep_until(gap_at.unwrap_or_else(Instant::now).into()), if gap_at.is_some() && catch_up.is_none() => {
                    self.start_catch_up(false);
                }
                Some(done) = self.restores.join_next(), if !self.restores.is_empty() => {
                    match done {
                        Ok(restore) => self.restore_done(restore),
                        // Its reply sender went with it: the caller sees the room as gone.
                        Err(e) => error!(error = %e, "restore task failed"),
                    }
                }
                done = async { snapshot.as_mut()?.await.ok() }, if snapshot.is_some() => {
                    snapshot = None;
                    self.snapshot_done(done);
                }
                _ = sleep_until(next_sweep.into()), if sweeping => {
                    next_sweep = Instant::now() + SWEEP_EVERY;
                    let effects = self.core.tick(Instant::now());
                    self.execute(effects);
                }
                _ = sleep_until(unload_at.unwrap_or_else(Instant::now).into()), if unload_at.is_some() => {
                    if !self.core.waiting()
                        && snapshot.is_none()
                        && self.restores.is_empty()
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
        self.unsubscribe();
        self.core.retire();
        metrics.documents_open.dec();
    }

    /// In a cluster: this node stops following the document's channel (for this room).
    fn unsubscribe(&self) {
        if let Some(cluster) = &self.shared.cluster {
            cluster.unsubscribe(&self.name);
        }
    }

    /// After a failed load: leaves the registry and refuses everything still queued (joins
    /// with the reason, commands with the error) until the last sender is gone.
    async fn refuse_all(&self, rx: &mut mpsc::Receiver<RoomMsg>, e: CommandError) {
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
    }

    /// Loads the document: newest snapshot plus the log after it. Returns the durability
    /// watermark receiver (none for memory storage).
    async fn load(&mut self) -> Result<Option<watch::Receiver<i64>>, CommandError> {
        let Storage::Durable { store, writer } = &self.shared.storage else {
            return Ok(None);
        };
        // Subscribed before loading: an update committed elsewhere between the load and the
        // subscription would otherwise reach this room only with the next periodic check.
        if let Some(cluster) = &self.shared.cluster
            && !cluster.subscribe(&self.name).await
        {
            warn!("redis unavailable; following other nodes through the log only");
        }
        let loaded = store.load(&self.name).await.map_err(|e| match e {
            StoreError::Deleted(_) => CommandError::Deleted,
            e => CommandError::Unavailable(e.to_string()),
        })?;
        let snapshot = loaded.snapshot.as_ref();
        let stored = snapshot
            .map(|s| s.state.as_slice())
            .into_iter()
            .chain(loaded.updates.iter().map(|row| row.data.as_slice()));
        self.core
            .load(stored, loaded.last_seq)
            .map_err(CommandError::Unavailable)?;
        let snapshot_seq = snapshot.map_or(0, |s| s.seq);
        let bytes_since: u64 = loaded.updates.iter().map(|r| r.size.max(0) as u64).sum();
        let (watermark, rx) = watch::channel(loaded.last_seq);
        self.announced = loaded.last_seq;
        if let Some(cluster) = &self.shared.cluster {
            // The core's seq goes on counting this node's updates as tickets; the log's
            // numbers are the replica's business.
            self.replica = Some(Replica::new(cluster.clone(), loaded.last_seq));
        }
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
                    if !self.core.has_peer(conn) || self.core.poisoned() {
                        break;
                    }
                    // Asked per update: the backlog grows with each append of this frame.
                    let backlog_full = matches!(msg, Inbound::Update(_)) && self.backlog_full();
                    let effects = self.core.message(conn, msg, backlog_full, Instant::now());
                    self.execute(effects);
                }
            }
            RoomMsg::Leave { conn } => self.leave(conn),
            RoomMsg::Shutdown => {}
            RoomMsg::Command(cmd) => self.command(cmd),
            RoomMsg::Remote(remote) => self.remote(remote),
        }
    }

    /// The writer made this node's updates durable up to ticket `durable`: frames waiting
    /// for them go out, change feeds learn of the new rows, and in a cluster the updates'
    /// numbers are taken and the other nodes told.
    fn durable_reached(&mut self, durable: i64) {
        match &mut self.replica {
            Some(replica) => {
                replica.take_numbers(&self.name);
                let (after, upto) = (self.announced, replica.contiguous());
                if upto > after {
                    replica.announce(&self.name, after, upto);
                }
                self.announce(upto);
            }
            None => self.announce(durable),
        }
        let effects = self.core.durable_up_to(durable);
        self.execute(effects);
    }

    /// News from the other nodes of the cluster.
    fn remote(&mut self, remote: Remote) {
        let Some(replica) = &mut self.replica else {
            return;
        };
        let now = Instant::now();
        match remote {
            Remote::Update { seq, update } => {
                if replica.relayed(seq) {
                    let effects = self.core.remote_update(&update);
                    self.execute(effects);
                    let upto = self.replica.as_ref().map_or(0, Replica::contiguous);
                    self.announce(upto);
                }
            }
            Remote::Awareness { node, frame } => {
                let limits = crate::protocol::frame_limits(&self.shared.config);
                let Ok(msgs) = crate::protocol::decode_frame_with(&frame, &limits) else {
                    warn!("unreadable awareness from another node; ignored");
                    return;
                };
                for msg in msgs {
                    if let Inbound::Awareness(update) = msg {
                        let stand_in = crate::cluster::stand_in(node);
                        let effects = self.core.remote_awareness(stand_in, &update, now);
                        self.execute(effects);
                    }
                }
            }
            Remote::NodeGone { node } => {
                let effects = self.core.node_gone(crate::cluster::stand_in(node), now);
                self.execute(effects);
            }
            Remote::LogAt { seq } => {
                replica.log_at(seq);
                self.start_catch_up(true);
            }
            Remote::Relinked => {
                replica.log_at(replica.known());
                if let Some(frame) = self.core.own_awareness() {
                    replica.cluster.publish_awareness(&self.name, frame);
                }
                self.start_catch_up(true);
            }
        }
    }

    /// Reads the log rows the document lacks (in a cluster), when some are missing for long
    /// enough (or at once with `now`).
    fn start_catch_up(&mut self, now: bool) {
        let (Some(replica), Some(durable)) = (&mut self.replica, &self.durable) else {
            return;
        };
        let Some((after, upto)) = replica.due(Instant::now(), now) else {
            return;
        };
        replica.catching_up = true;
        let (store, doc) = (durable.store.clone(), durable.doc.clone());
        debug!(after, upto, "reading rows written elsewhere from the log");
        self.catch_up = Some(tokio::spawn(
            async move {
                let doc_id = match doc.id() {
                    Some(id) => id,
                    // Created by another node: this one has not written to it yet.
                    None => match store.find_doc_id(doc.name()).await? {
                        Some(id) => {
                            doc.set_id(id);
                            id
                        }
                        None => return Ok((upto, Vec::new())),
                    },
                };
                Ok((upto, store.log_range(doc_id, after, upto).await?))
            }
            .in_current_span(),
        ));
    }

    /// Applies rows read back from the log.
    fn caught_up(&mut self, done: Option<ReadBack>) {
        let rows = match done {
            Some(Ok(rows)) => Some(rows),
            Some(Err(e)) => {
                warn!(error = %e, "reading rows written elsewhere failed; retrying later");
                None
            }
            None => None,
        };
        let Some(replica) = &mut self.replica else {
            return;
        };
        let Some((upto, rows)) = rows else {
            replica.catching_up = false;
            return;
        };
        for row in &rows {
            if let Some(replica) = &mut self.replica {
                replica.read_back(row.seq);
            }
            let effects = self.core.remote_update(&row.data);
            self.execute(effects);
        }
        if let Some(replica) = &mut self.replica {
            replica.read_done(upto);
            let contiguous = replica.contiguous();
            self.announce(contiguous);
        }
    }

    /// Whether the storage backlog is past `--max-backlog-bytes` (never with memory storage).
    fn backlog_full(&self) -> bool {
        let max_backlog = self.shared.config.max_backlog_bytes as u64;
        self.durable.is_some() && self.shared.storage.backlog().bytes > max_backlog
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Replace {
                target,
                author,
                scope,
                reply,
            } => self.start_restore(target, author, scope, reply, 0),
            Command::Merge {
                update,
                author,
                reply,
            } => {
                let (result, effects) = self.core.merge(&update, author);
                self.execute(effects);
                let _ = reply.send(result.map(|seq| self.applied(seq)));
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
                    } else if self.snapshot_point().is_none() {
                        CommandError::Unavailable(
                            "the document is taking in changes from other nodes; retry".into(),
                        )
                    } else {
                        CommandError::Unavailable("could not encode the document".into())
                    }));
                }
            },
            Command::Export { reply } => {
                let result = self
                    .core
                    .encode_state()
                    .map(|(state, _)| (self.log_seq(), state))
                    .ok_or_else(|| {
                        CommandError::Unavailable("could not encode the document".into())
                    });
                let _ = reply.send(result);
            }
            Command::Disconnect { user, reply } => {
                let (closed, effects) = self.core.disconnect(user.as_deref(), Instant::now());
                self.execute(effects);
                let _ = reply.send(Ok(closed));
            }
            Command::Delete { reply } => {
                let (closed, effects) = self.core.delete();
                self.execute(effects);
                self.deleting = Some((closed, reply));
            }
        }
    }

    /// Computes a restore on a blocking thread, on a copy of the document made from its
    /// encoded state, so the room keeps serving while the diff runs (134 ms on a 100 KB text).
    /// The copy writes under the document's own client id, so its update continues the
    /// document's clocks. Encoding the state is the only part done here.
    fn start_restore(
        &mut self,
        target: Doc,
        author: String,
        scope: ReplaceScope,
        reply: oneshot::Sender<Result<Applied, CommandError>>,
        attempts: u32,
    ) {
        if let Some(moved) = self.moved_past(&scope) {
            let _ = reply.send(Err(moved));
            return;
        }
        let Some((state, _)) = self.core.encode_state() else {
            let _ = reply.send(Err(CommandError::Unavailable(
                "could not encode the document".into(),
            )));
            return;
        };
        let base_version = self.core.version();
        let client_id = self.core.client_id();
        let span = tracing::Span::current();
        self.restores.spawn_blocking(move || {
            let _entered = span.enter();
            let copy = Doc::with_client_id(client_id);
            let outcome = RoomCore::apply_state(&copy, &state).map(|()| {
                crate::history::restore::restore_roots_into(&copy, &target, scope.roots.as_deref())
            });
            Restore {
                base_version,
                target,
                author,
                scope,
                reply,
                attempts: attempts + 1,
                outcome,
            }
        });
    }

    /// The refusal of a conditional replace whose document moved past its `if_seq`.
    fn moved_past(&self, scope: &ReplaceScope) -> Option<CommandError> {
        let seq = self.log_seq();
        scope
            .if_seq
            .is_some_and(|n| seq > n)
            .then_some(CommandError::Moved(seq))
    }

    /// Tells change feeds that the log grew up to `durable` (durable storage only: memory
    /// storage keeps no log to read from).
    fn announce(&mut self, durable: i64) {
        if self.durable.is_some() && durable > self.announced {
            let kind = crate::changes::ChangeKind::Durable {
                after: self.announced,
                upto: durable,
            };
            self.shared.changes.publish(&self.name, kind);
            self.announced = durable;
        }
    }

    /// Applies a restore computed off the room, if the document did not move meanwhile.
    ///
    /// If it moved (a client's or another admin's change was accepted), the diff was made
    /// against a state that no longer exists: applied now it would merge with the newer
    /// changes and the result would not equal the target. So it is recomputed on the latest
    /// state rather than rebased; after [`RESTORE_ATTEMPTS`] computations overtaken by edits,
    /// the last one runs inside the room, which nothing can overtake (the old behaviour).
    fn restore_done(&mut self, restore: Restore) {
        let Restore {
            base_version,
            target,
            author,
            scope,
            reply,
            attempts,
            outcome,
        } = restore;
        if let Some(moved) = self.moved_past(&scope) {
            let _ = reply.send(Err(moved));
            return;
        }
        let result = match outcome {
            Ok(Ok(changed)) if base_version == self.core.version() => {
                let (result, effects) = self.core.apply_restore(changed, author);
                self.execute(effects);
                result
            }
            Ok(Ok(_)) if attempts < RESTORE_ATTEMPTS => {
                debug!(attempts, "document moved during a restore; recomputing");
                return self.start_restore(target, author, scope, reply, attempts);
            }
            Ok(Ok(_)) => {
                let (result, effects) = self.core.replace(&target, scope.roots.as_deref(), author);
                self.execute(effects);
                result
            }
            // Only the copy was touched: the live document is intact.
            Ok(Err(HistoryError::Panicked(_))) => {
                error!("restore made yrs panic on a copy; the document is unchanged");
                Err(CommandError::Unavailable("restore failed".into()))
            }
            Ok(Err(e)) => Err(CommandError::Invalid(e.to_string())),
            Err(e) => {
                error!(error = %e, "could not copy the document for a restore");
                Err(CommandError::Unavailable("restore failed".into()))
            }
        };
        let _ = reply.send(result.map(|seq| self.applied(seq)));
    }

    /// An administrator's change as accepted, with the durability watermark to wait on.
    fn applied(&mut self, seq: Option<i64>) -> Applied {
        let number = match (&mut self.replica, seq) {
            (Some(replica), Some(ticket)) => Some(replica.wait_for_number(ticket)),
            _ => None,
        };
        Applied {
            seq,
            durable: self.durable.as_ref().map(|d| d.watermark.subscribe()),
            number,
        }
    }

    /// The log's newest sequence number the document holds: the core's count alone; in a
    /// cluster, the newest row known to exist (another node may have logged it).
    fn log_seq(&self) -> i64 {
        self.replica
            .as_ref()
            .map_or(self.core.seq(), Replica::known)
    }

    /// The log's sequence number the document's state is exactly, if it is one (a snapshot
    /// of it is then valid): always on one node (rows become durable in the room's order);
    /// in a cluster only when it holds no row above a gap and no update waiting for its
    /// number.
    fn snapshot_point(&self) -> Option<i64> {
        match &self.replica {
            None => Some(self.core.seq()),
            Some(r) if r.is_prefix() && !self.core.waiting() => Some(r.contiguous()),
            Some(_) => None,
        }
    }

    fn join(&mut self, peer: Arc<Peer>, reply: oneshot::Sender<Result<(), JoinError>>) {
        for frame in self.core.welcome() {
            peer.push(frame);
        }
        if reply.send(Ok(())).is_ok() {
            let meta = PeerMeta {
                user: peer.user.clone(),
                read_only: peer.read_only,
                acks: peer.is_multiplexed(),
            };
            self.core.join(peer.id, meta, Instant::now());
            self.peers.insert(peer.id, peer);
        }
    }

    /// A connection left, or its queue overflowed (its connection then closes with 4001).
    fn leave(&mut self, conn: ConnId) {
        self.peers.remove(&conn);
        let effects = self.core.leave(conn, Instant::now());
        self.execute(effects);
    }

    /// Carries out the core's effects in order. A peer whose queue overflows is dropped and
    /// reported to the core, whose resulting effects run before the remaining ones.
    fn execute(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(conn, frame) => {
                    let ok = self.peers.get(&conn).is_some_and(|peer| peer.push(frame));
                    if !ok {
                        self.leave(conn);
                    }
                }
                Effect::Broadcast(frame) => {
                    let overflowed: Vec<ConnId> = self
                        .peers
                        .iter()
                        .filter(|(_, peer)| !peer.push(frame.clone()))
                        .map(|(id, _)| *id)
                        .collect();
                    for conn in overflowed {
                        self.leave(conn);
                    }
                }
                Effect::Append {
                    seq,
                    update,
                    author,
                } => match &mut self.durable {
                    Some(durable) => {
                        durable.bytes_logged += update.len() as u64;
                        let data = Bytes::from(update);
                        let numbered = self.replica.as_mut().map(|replica| {
                            replica.accepted(seq, data.clone());
                            replica.assigned.clone()
                        });
                        durable.writer.append_numbered(
                            &durable.doc,
                            NewUpdate {
                                doc_id: 0, // set by the writer from `doc`
                                seq,
                                data,
                                author,
                                created_at: SystemTime::now(),
                            },
                            durable.watermark.clone(),
                            numbered,
                        );
                    }
                    // Memory storage: nothing to wait for.
                    None => {
                        let effects = self.core.durable_up_to(seq);
                        self.execute(effects);
                    }
                },
                Effect::Close(conn, reason) => {
                    if let Some(peer) = self.peers.remove(&conn) {
                        peer.close(reason);
                    }
                }
                Effect::Share(frame) => {
                    if let Some(cluster) = &self.shared.cluster {
                        cluster.publish_awareness(&self.name, frame);
                    }
                }
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
        let seq = self.snapshot_point()?;
        let rows = (seq - durable.snapshot_seq).max(0) as u64;
        let bytes = durable.bytes_logged - durable.bytes_at_snapshot;
        if rows == 0
            || (rows < config.snapshot_every_updates && bytes < config.snapshot_every_bytes as u64)
        {
            return None;
        }
        let (state, sv) = self.core.encode_state()?;
        let (store, doc, bytes_logged) = (
            durable.store.clone(),
            durable.doc.clone(),
            durable.bytes_logged,
        );
        let mut watermark = durable.watermark.subscribe();
        let ticket = self.core.seq();
        let retention = config.log_retention;
        Some(tokio::spawn(
            async move {
                // The sender lives in this room, which outlives the task.
                let _ = watermark.wait_for(|w| *w >= ticket).await;
                let doc_id = logged_id(&doc)?;
                store.write_snapshot(doc_id, seq, &state, &sv).await?;
                if let Some(keep) = retention {
                    // A retention longer than the clock's past keeps everything.
                    let before = SystemTime::now()
                        .checked_sub(keep)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
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
        if self.snapshot_point() == Some(durable.snapshot_seq) || self.core.poisoned() {
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
        let seq = self.snapshot_point()?;
        let (state, sv) = self.core.encode_state()?;
        let (store, doc, ticket) = (durable.store.clone(), durable.doc.clone(), self.core.seq());
        let mut watermark = durable.watermark.subscribe();
        Some((seq, async move {
            let _ = watermark.wait_for(|w| *w >= ticket).await;
            if seq == 0 && doc.id().is_none() {
                // Nothing was ever written: there is nothing to store, and no row to store it in.
                return Ok(());
            }
            store
                .write_snapshot(logged_id(&doc)?, seq, &state, &sv)
                .await
        }))
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
        let seq = self.core.seq();
        let durable = match watermark.as_mut() {
            Some(w) => {
                if tokio::time::timeout(timeout, w.wait_for(|d| *d >= seq))
                    .await
                    .is_err()
                {
                    warn!(
                        seq,
                        "updates not durable before the room closed; they stay queued in the writer"
                    );
                }
                *w.borrow()
            }
            None => seq,
        };
        let effects = self.core.durable_up_to(durable);
        self.execute(effects);
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
}
