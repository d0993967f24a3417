//! The room's rules without I/O: the `Doc`, the presence table, the joined peers' metadata,
//! the log sequence and the persist-before-relay queue.
//!
//! [`RoomCore`] takes inputs (a join, one decoded message, a leave, the pure part of an admin
//! command, "durable up to seq", a clock tick) and answers with [`Effect`]s for its driver
//! ([`super`]) to carry out: frames to queue on peers, rows to append to the log, connections
//! to close. It never waits, holds no channels and knows no storage, so every rule here is
//! unit-tested by feeding inputs and reading effects.
//!
//! **Persist before relay.** An accepted update gets the next sequence number and an
//! [`Effect::Append`]; the frames it causes (the relay to every peer, and any SyncStep2 computed
//! while the document holds updates not yet durable) wait in the core until the driver reports
//! [`RoomCore::durable_up_to`] that sequence. A driver without durable storage reports each
//! append durable as soon as it executes it.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tracing::{debug, error, warn};

use crate::protocol::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::CommandError;
use crate::close::Close;
use crate::config::ReadOnlyAwareness;
use crate::metrics::Metrics;
use crate::pending::{self, Integrated};
use crate::presence::{Change, ConnId, Limits, Presence};
use crate::protocol::{self, Inbound};

/// The options the core's rules depend on (a subset of the server's `Config`).
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// Awareness states expire after this long without renewal.
    pub awareness_timeout: Duration,
    /// Per-connection awareness limits.
    pub limits: Limits,
    /// Bound on yrs' pending set (`--max-pending-bytes`).
    pub max_pending_bytes: u64,
    /// Nesting bound for updates given to admin merges (`--max-nesting-depth`).
    pub max_nesting_depth: usize,
    /// What happens to awareness from read-only connections.
    pub readonly_awareness: ReadOnlyAwareness,
    /// Clustered: awareness changes of this node's connections are also given to the driver
    /// to share with the other nodes ([`Effect::Share`]).
    pub share_awareness: bool,
}

impl CoreConfig {
    /// The core's options taken from the server's configuration.
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        CoreConfig {
            awareness_timeout: config.awareness_timeout,
            limits: Limits {
                ids_per_conn: config.max_awareness_ids_per_conn,
                bytes_per_conn: config.max_awareness_bytes_per_conn,
            },
            max_pending_bytes: config.max_pending_bytes as u64,
            max_nesting_depth: config.max_nesting_depth,
            readonly_awareness: config.readonly_awareness,
            share_awareness: config.redis_url.is_some(),
        }
    }
}

/// The process-wide metrics the core counts into (prometheus handles share their values, so
/// these clones count into the server's registry).
#[derive(Debug, Clone)]
pub(crate) struct CoreMetrics {
    updates_applied: Counter,
    update_apply_seconds: Histogram,
    awareness_foreign: Counter,
    awareness_expired: Counter,
    readonly_updates_refused: Counter,
    updates_refused: Family<Vec<(&'static str, &'static str)>, Counter>,
    pending_bytes: Gauge,
}

impl CoreMetrics {
    /// Handles on `metrics`' counters.
    pub(crate) fn new(metrics: &Metrics) -> Self {
        CoreMetrics {
            updates_applied: metrics.updates_applied.clone(),
            update_apply_seconds: metrics.update_apply_seconds.clone(),
            awareness_foreign: metrics.awareness_foreign.clone(),
            awareness_expired: metrics.awareness_expired.clone(),
            readonly_updates_refused: metrics.readonly_updates_refused.clone(),
            updates_refused: metrics.updates_refused.clone(),
            pending_bytes: metrics.pending_bytes.clone(),
        }
    }

    fn update_refused(&self, reason: &'static str) {
        self.updates_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }
}

/// What the core asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Queue a frame on one peer. If its queue is full, the driver drops the peer and reports
    /// it with [`RoomCore::leave`].
    Send(ConnId, Bytes),
    /// Queue one shared frame on every joined peer (same overflow rule as `Send`).
    Broadcast(Bytes),
    /// Append an accepted update to the log; report it durable with
    /// [`RoomCore::durable_up_to`] once committed.
    Append {
        /// Its sequence number.
        seq: i64,
        /// The update (v1).
        update: Vec<u8>,
        /// The token subject that made it.
        author: Option<String>,
    },
    /// Close a peer's connection; the core already removed it.
    Close(ConnId, Close),
    /// Tell the other cluster nodes (with [`CoreConfig::share_awareness`]): an awareness
    /// frame of this node's connections, already broadcast here.
    Share(Bytes),
}

/// What the core knows about a joined connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerMeta {
    /// Token subject.
    pub user: Option<String>,
    /// Updates from it are not applied; its awareness follows `readonly_awareness`.
    pub read_only: bool,
    /// It wants a sync-status frame per update it sends (the Hocuspocus protocol), released
    /// only once that update is durable.
    pub acks: bool,
}

/// A frame waiting for its update to become durable.
#[derive(Debug)]
enum Release {
    /// A relayed update, for every peer.
    All(Bytes),
    /// A SyncStep2 for one peer, computed when the document held non-durable updates.
    One(ConnId, Bytes),
}

/// One document's state and rules; see the module documentation.
pub(crate) struct RoomCore {
    config: CoreConfig,
    metrics: CoreMetrics,
    doc: Doc,
    presence: Presence,
    peers: HashMap<ConnId, PeerMeta>,
    /// Sequence number of the last accepted update (clustered: this node's own count of
    /// accepted updates, a ticket; the log's numbers are the driver's business).
    seq: i64,
    /// Counts every change to the document, accepted here or applied from another node: a
    /// restore computed on a copy applies only if it did not move.
    version: u64,
    /// Frames waiting for durability, in sequence order.
    pending: VecDeque<(i64, Release)>,
    /// Set when yrs panicked: the document can no longer be trusted and the room retires.
    poisoned: bool,
    /// Encoded size of the updates yrs holds as pending (they arrived before updates they
    /// depend on), as measured after the last apply; bounded by `--max-pending-bytes`.
    yrs_pending_bytes: u64,
    /// Updates held until the clocks before them arrive (see [`pending::Held`]).
    held: pending::Held,
    /// Effects of the input being handled.
    out: Vec<Effect>,
}

/// The client ids for which `update` holds clocks the document (whose state vector is
/// `known`) does not have yet: its blocks (items and GC ranges, including blocks that will wait
/// in the pending set for a missing dependency) ending above `known`. `Update::state_vector`
/// cannot be used: it only counts a client's blocks when they start at clock 0.
fn new_clocks(known: &StateVector, update: &Update) -> Vec<u64> {
    update
        .insertions(true)
        .iter()
        .filter(|(client, ranges)| ranges.iter().any(|r| r.end > known.get(client)))
        .map(|(client, _)| client.get())
        .collect()
}

/// Whether `update` inserts or deletes anything `doc` does not already have.
fn adds_anything(doc: &Doc, update: &Update) -> bool {
    if !new_clocks(&doc.transact().state_vector(), update).is_empty() {
        return true;
    }
    let deletes = update.delete_set();
    !deletes.is_empty()
        && !deletes
            .diff(&doc.transact().snapshot().delete_set)
            .is_empty()
}

impl RoomCore {
    /// An empty document with no peers.
    pub(crate) fn new(config: CoreConfig, metrics: CoreMetrics) -> Self {
        RoomCore {
            presence: Presence::new(config.awareness_timeout, config.limits),
            config,
            metrics,
            doc: Doc::new(),
            peers: HashMap::new(),
            seq: 0,
            version: 0,
            pending: VecDeque::new(),
            poisoned: false,
            yrs_pending_bytes: 0,
            held: pending::Held::default(),
            out: Vec::new(),
        }
    }

    /// Applies an update (v1) to `doc` in one transaction (an encoded state into an empty
    /// copy, or a computed restore into the document); errors and panics become an error.
    pub(crate) fn apply_state(doc: &Doc, state: &[u8]) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let update = Update::decode_v1(state).map_err(|e| e.to_string())?;
            doc.transact_mut()
                .apply_update(update)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("copying the document made yrs panic".into()))
    }

    /// Applies stored updates (snapshot, then log rows) in one transaction; `last_seq` is the
    /// sequence number they end at. Errors and panics become an error.
    pub(crate) fn load<'a>(
        &mut self,
        updates: impl Iterator<Item = &'a [u8]>,
        last_seq: i64,
    ) -> Result<(), String> {
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let mut txn = doc.transact_mut();
            for bytes in updates {
                let update = protocol::decode_stored_update(bytes).map_err(|e| e.to_string())?;
                txn.apply_update(update).map_err(|e| e.to_string())?;
            }
            Ok(())
        }));
        outcome.unwrap_or_else(|_| Err("stored update made yrs panic".into()))?;
        self.seq = last_seq;
        Ok(())
    }

    /// Sequence number of the last accepted update.
    pub(crate) fn seq(&self) -> i64 {
        self.seq
    }

    /// How many changes the document has had since it was loaded (see the field).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Applies a change another cluster node logged (durable already, so it is relayed at
    /// once, not logged again). Applying a change the document already has changes nothing
    /// and sends nothing, so the driver may replay log rows freely.
    pub(crate) fn remote_update(&mut self, bytes: &[u8]) -> Vec<Effect> {
        let update = match protocol::decode_stored_update(bytes) {
            Ok(update) => update,
            Err(e) => {
                warn!(error = %e, "undecodable update from another node; ignored");
                return self.take();
            }
        };
        match self.integrate(update, None) {
            Ok(Integrated {
                changed: Some(changed),
                ..
            }) => {
                self.version += 1;
                self.out
                    .push(Effect::Broadcast(protocol::encode_update(&changed)));
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "update from another node refused"),
        }
        self.take()
    }

    /// Applies awareness relayed by another cluster node (`node`: its stand-in connection
    /// id) and relays what changed to this node's connections.
    pub(crate) fn remote_awareness(
        &mut self,
        node: ConnId,
        update: &AwarenessUpdate,
        now: Instant,
    ) -> Vec<Effect> {
        let applied = self.presence.apply_remote(node, update, now);
        self.broadcast_awareness(&applied.changes, false);
        self.take()
    }

    /// Another cluster node died or left: its clients' awareness is removed here.
    pub(crate) fn node_gone(&mut self, node: ConnId, now: Instant) -> Vec<Effect> {
        let removed = self.presence.remove_conn(node, now);
        self.broadcast_awareness(&removed, false);
        self.take()
    }

    /// This node's live awareness states as one frame, for the other nodes after a Redis
    /// outage (so they need not wait for the clients' next renewal); `None` when there are
    /// none.
    pub(crate) fn own_awareness(&self) -> Option<Bytes> {
        let live = self.presence.live_of(|conn| self.peers.contains_key(&conn));
        (!live.is_empty()).then(|| {
            protocol::encode_awareness(
                live.into_iter()
                    .map(|(id, clock, state)| (id, clock, Some(state))),
            )
        })
    }

    /// Whether the document can no longer be trusted (yrs panicked on it).
    pub(crate) fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether frames are waiting for durability.
    pub(crate) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether some awareness state is live (so [`RoomCore::tick`] has work).
    pub(crate) fn has_presence(&self) -> bool {
        !self.presence.is_empty()
    }

    /// Whether `conn` is joined.
    pub(crate) fn has_peer(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    /// The frames a joining connection gets first: the document's SyncStep1, then the live
    /// awareness states if any.
    pub(crate) fn welcome(&self) -> Vec<Bytes> {
        let sv = self.doc.transact().state_vector();
        let mut frames = vec![protocol::encode_sync_step1(&sv)];
        let live = self.presence.live();
        if !live.is_empty() {
            frames.push(protocol::encode_awareness(
                live.into_iter()
                    .map(|(id, clock, state)| (id, clock, Some(state))),
            ));
        }
        frames
    }

    /// Registers a connection that was sent [`RoomCore::welcome`].
    pub(crate) fn join(&mut self, conn: ConnId, meta: PeerMeta, now: Instant) {
        self.presence.join(conn, meta.user.as_deref(), now);
        self.peers.insert(conn, meta);
    }

    /// A connection left (closed, errored, or its queue overflowed): its awareness states are
    /// removed and the removal broadcast.
    pub(crate) fn leave(&mut self, conn: ConnId, now: Instant) -> Vec<Effect> {
        self.remove(conn, now);
        self.take()
    }

    /// One decoded message from joined connection `conn`. `backlog_full` says whether the
    /// storage backlog is past `--max-backlog-bytes` (updates are then refused with 1013).
    pub(crate) fn message(
        &mut self,
        conn: ConnId,
        msg: Inbound,
        backlog_full: bool,
        now: Instant,
    ) -> Vec<Effect> {
        if self.peers.contains_key(&conn) && !self.poisoned {
            self.inbound(conn, msg, backlog_full, now);
        }
        self.take()
    }

    /// Sends every waiting frame whose update is durable up to `seq`.
    pub(crate) fn durable_up_to(&mut self, seq: i64) -> Vec<Effect> {
        while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
            let Some((_, release)) = self.pending.pop_front() else {
                break;
            };
            self.out.push(match release {
                Release::All(frame) => Effect::Broadcast(frame),
                Release::One(conn, frame) => Effect::Send(conn, frame),
            });
        }
        self.take()
    }

    /// Expires awareness states not renewed in time and broadcasts their removal.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let expired = self.presence.expire(now);
        if !expired.is_empty() {
            self.metrics.awareness_expired.inc_by(expired.len() as u64);
            self.broadcast_awareness(&expired, false);
        }
        self.take()
    }

    /// Makes the content (of the roots in `only`; all when `None`) equal to `target`'s as
    /// one new change (restore, import with `mode=replace`, the content API). Returns its sequence number (`None` when nothing changed).
    pub(crate) fn replace(
        &mut self,
        target: &Doc,
        only: Option<&std::collections::BTreeSet<String>>,
        author: String,
    ) -> (Result<Option<i64>, CommandError>, Vec<Effect>) {
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            crate::history::restore::restore_roots_into(doc, target, only)
        }));
        let result = match outcome {
            Ok(Ok(changed)) => Ok(self.accept_admin(author, changed)),
            // A panic inside restore_into may leave part of the restore applied with no
            // update describing it: the document can no longer be trusted.
            Ok(Err(crate::history::HistoryError::Panicked(_))) | Err(_) => {
                error!("restore made yrs panic; reloading the document");
                self.poisoned = true;
                Err(CommandError::Unavailable("restore failed".into()))
            }
            Ok(Err(e)) => Err(CommandError::Invalid(e.to_string())),
        };
        (result, self.take())
    }

    /// The Yjs client id the document's own changes (restores) are written under: a copy made
    /// to compute a restore elsewhere uses it, so its update continues this document's clocks.
    pub(crate) fn client_id(&self) -> u64 {
        self.doc.client_id().get()
    }

    /// Applies a restore computed elsewhere on a copy of this document taken at the current
    /// [`RoomCore::seq`] (the driver checks that the document did not move since), then logs
    /// and relays it like [`RoomCore::replace`]. `None` means the copy needed no change.
    pub(crate) fn apply_restore(
        &mut self,
        update: Option<Vec<u8>>,
        author: String,
    ) -> (Result<Option<i64>, CommandError>, Vec<Effect>) {
        let Some(bytes) = update else {
            return (Ok(None), self.take());
        };
        let result = match Self::apply_state(&self.doc, &bytes) {
            Ok(()) => Ok(self.accept_admin(author, Some(bytes))),
            // The update was made from this very state, so it cannot fail; if it does, part of
            // it may be applied with nothing logged: stop trusting the document.
            Err(_) => {
                error!("applying a computed restore failed; reloading the document");
                self.poisoned = true;
                Err(CommandError::Unavailable("restore failed".into()))
            }
        };
        (result, self.take())
    }

    /// Applies a Yjs update (v1) as a change, like a client's (import with `mode=merge`).
    pub(crate) fn merge(
        &mut self,
        update: &[u8],
        author: String,
    ) -> (Result<Option<i64>, CommandError>, Vec<Effect>) {
        let result = match protocol::decode_update(update, self.config.max_nesting_depth) {
            Ok(update) => match self.integrate(update, None) {
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
                    self.metrics.update_refused(Close::PendingTooLarge.label());
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
        (result, self.take())
    }

    /// Closes the connections of `user` (all when `None`) with 4000; returns how many.
    pub(crate) fn disconnect(&mut self, user: Option<&str>, now: Instant) -> (usize, Vec<Effect>) {
        let mut chosen: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| user.is_none() || p.user.as_deref() == user)
            .map(|(id, _)| *id)
            .collect();
        chosen.sort_unstable();
        for conn in &chosen {
            self.kick(*conn, Close::Disconnected, now);
        }
        (chosen.len(), self.take())
    }

    /// Closes every connection with 4410 (the document is being deleted); returns how many.
    /// Their awareness is not announced: nobody is left to hear it.
    pub(crate) fn delete(&mut self) -> (usize, Vec<Effect>) {
        let closed = self.peers.len();
        let mut conns: Vec<ConnId> = self.peers.drain().map(|(id, _)| id).collect();
        conns.sort_unstable();
        for conn in conns {
            self.out.push(Effect::Close(conn, Close::Deleted));
        }
        (closed, self.take())
    }

    /// The current state as one update (v1) and its state vector; `None` if yrs panicked.
    pub(crate) fn encode_state(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        catch_unwind(AssertUnwindSafe(|| {
            let txn = self.doc.transact();
            (
                txn.encode_state_as_update_v1(&StateVector::default()),
                txn.state_vector().encode_v1(),
            )
        }))
        .ok()
    }

    /// The room is retiring: yrs' pending updates are memory only and leave with it (their
    /// senders resend them on their next sync), so they leave the process-wide gauge too.
    pub(crate) fn retire(&mut self) {
        self.held = pending::Held::default();
        self.set_yrs_pending_bytes(0);
    }

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    fn is_read_only(&self, conn: ConnId) -> bool {
        self.peers.get(&conn).is_some_and(|p| p.read_only)
    }

    fn remove(&mut self, conn: ConnId, now: Instant) {
        if self.peers.remove(&conn).is_some() {
            let removed = self.presence.remove_conn(conn, now);
            self.broadcast_awareness(&removed, true);
        }
    }

    fn kick(&mut self, conn: ConnId, reason: Close, now: Instant) {
        if self.peers.contains_key(&conn) {
            self.out.push(Effect::Close(conn, reason));
        }
        self.remove(conn, now);
    }

    fn inbound(&mut self, conn: ConnId, msg: Inbound, backlog_full: bool, now: Instant) {
        match msg {
            Inbound::SyncStep1(sv) => {
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                let frame = protocol::encode_sync_step2(&update);
                if self.pending.is_empty() {
                    self.out.push(Effect::Send(conn, frame));
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
                let refused = adds_anything(&self.doc, &update);
                if refused {
                    self.metrics.readonly_updates_refused.inc();
                }
                // A reader's empty SyncStep2 counts as saved; a real write is reported not
                // applied, so its provider keeps counting it unsynced.
                self.ack(conn, !refused);
            }
            Inbound::Update(update) => {
                self.apply(conn, update, backlog_full, now);
                // A refused update closed the connection: nothing to acknowledge.
                if self.peers.contains_key(&conn) {
                    self.ack(conn, true);
                }
            }
            Inbound::Awareness(_)
                if self.is_read_only(conn)
                    && self.config.readonly_awareness == ReadOnlyAwareness::Drop => {}
            Inbound::Awareness(update) => {
                let applied = self.presence.apply(conn, &update, now);
                if applied.foreign > 0 {
                    self.metrics
                        .awareness_foreign
                        .inc_by(applied.foreign as u64);
                    debug!(
                        conn,
                        refused = applied.foreign,
                        "awareness for ids owned by another connection"
                    );
                }
                self.broadcast_awareness(&applied.changes, true);
                if applied.over_limit {
                    warn!(conn, "awareness limit reached; closing the connection");
                    self.kick(conn, Close::AwarenessLimit, now);
                }
            }
            Inbound::QueryAwareness => {
                let live = self.presence.live();
                let frame = protocol::encode_awareness(
                    live.into_iter()
                        .map(|(id, clock, state)| (id, clock, Some(state))),
                );
                self.out.push(Effect::Send(conn, frame));
            }
        }
    }

    /// Applies one update from a client; logs what it changed and relays it (once durable) to
    /// everyone, sender included.
    fn apply(&mut self, conn: ConnId, update: Update, backlog_full: bool, now: Instant) {
        if backlog_full {
            warn!(conn, "storage backlog full; refusing update");
            self.kick(conn, Close::BacklogFull, now);
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
        // Built once per update (a map over every client of the document): the held-update
        // check in `pending` needs the same one.
        let known = self.doc.transact().state_vector();
        let ids = new_clocks(&known, &update);
        if let Err(id) = self.presence.may_write(conn, &ids, now) {
            warn!(
                conn,
                client_id = id,
                "update writes a client id another connection owns; refused"
            );
            self.kick(conn, Close::ForeignClientId, now);
            return;
        }
        match self.integrate(update, Some(&known)) {
            Ok(integrated) => {
                if let Some(changed) = integrated.changed {
                    self.presence.wrote(conn, &ids, now);
                    self.metrics.updates_applied.inc();
                    let author = self.peers.get(&conn).and_then(|p| p.user.clone());
                    self.accept(author, changed);
                }
                if integrated.pending_refused {
                    warn!(
                        conn,
                        "pending updates past --max-pending-bytes; refusing sender"
                    );
                    self.metrics.update_refused(Close::PendingTooLarge.label());
                    self.kick(conn, Close::PendingTooLarge, now);
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
                self.kick(conn, Close::InvalidUpdate, now);
            }
        }
    }

    /// Applies an update to the document and returns what it changed, keeping yrs' pending
    /// set within `--max-pending-bytes` (see [`pending::integrate`]). yrs must not take the
    /// server down on a hostile update: a panic is caught and the core marked poisoned, so the
    /// room retires and the document reloads. `known` is the document's state vector if the
    /// caller built it already (it is built here otherwise).
    fn integrate(
        &mut self,
        update: Update,
        known: Option<&StateVector>,
    ) -> Result<Integrated, CommandError> {
        let started = Instant::now();
        let max_pending = self.config.max_pending_bytes;
        let pending_before = self.yrs_pending_bytes;
        let doc = &self.doc;
        let held = &mut self.held;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pending::integrate_known(doc, held, update, known, pending_before, max_pending)
        }));
        self.metrics
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
        self.metrics.pending_bytes.inc_by(delta);
        self.yrs_pending_bytes = bytes;
    }

    /// Logs and relays an administrator's change (if it changed anything); its seq.
    fn accept_admin(&mut self, author: String, changed: Option<Vec<u8>>) -> Option<i64> {
        let changed = changed?;
        self.metrics.updates_applied.inc();
        self.accept(Some(author), changed);
        Some(self.seq)
    }

    /// Gives an applied change the next sequence number, asks for it to be logged, and holds
    /// its relay until it is durable.
    fn accept(&mut self, author: Option<String>, changed: Vec<u8>) {
        let frame = protocol::encode_update(&changed);
        self.seq += 1;
        self.version += 1;
        self.out.push(Effect::Append {
            seq: self.seq,
            update: changed,
            author,
        });
        self.pending.push_back((self.seq, Release::All(frame)));
    }

    /// Acknowledges one update of `conn` if it asked for acks: at once when nothing waits for
    /// durability, else behind everything accepted so far (so acks go out in order, each after
    /// the update it answers, and whatever else the document held, is durable).
    fn ack(&mut self, conn: ConnId, applied: bool) {
        if !self.peers.get(&conn).is_some_and(|p| p.acks) {
            return;
        }
        let frame = Bytes::from(tandem_wire::hocuspocus::sync_status(applied));
        if self.pending.is_empty() {
            self.out.push(Effect::Send(conn, frame));
        } else {
            self.pending
                .push_back((self.seq, Release::One(conn, frame)));
        }
    }

    /// Relays awareness changes to this node's connections and, when they are changes of
    /// this node's own connections (`own`) in a cluster, to the other nodes. Expiries are
    /// not shared: every node expires states by its own clock.
    fn broadcast_awareness(&mut self, changes: &[Change], own: bool) {
        if changes.is_empty() {
            return;
        }
        let frame = protocol::encode_awareness(
            changes
                .iter()
                .map(|(id, clock, state)| (*id, *clock, state.as_deref())),
        );
        if own && self.config.share_awareness {
            self.out.push(Effect::Share(frame.clone()));
        }
        self.out.push(Effect::Broadcast(frame));
    }
}

#[cfg(test)]
mod tests {
    //! Table-driven tests of the room's rules: each case feeds inputs to a core and compares
    //! the effects, summarised as short strings ("all update", "send 2 step2", "append 1",
    //! "close 2 foreign_client_id").
    use super::*;
    use crate::protocol::{decode_frame, encode_awareness, encode_sync_step1, encode_update};
    use yrs::{GetString, Text};

    const USER_A: &str = "alice";

    fn config(readonly_awareness: ReadOnlyAwareness) -> CoreConfig {
        CoreConfig {
            awareness_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            max_pending_bytes: 1 << 20,
            max_nesting_depth: 64,
            readonly_awareness,
            share_awareness: false,
        }
    }

    fn core_with(readonly_awareness: ReadOnlyAwareness) -> (RoomCore, Metrics) {
        let metrics = Metrics::new();
        let core = RoomCore::new(config(readonly_awareness), CoreMetrics::new(&metrics));
        (core, metrics)
    }

    /// An update (v1) inserting `text` at the start of text "t", written as Yjs client `client`.
    fn edit(client: u64, text: &str) -> Vec<u8> {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, text);
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn inbound(frame: &[u8]) -> Inbound {
        decode_frame(frame)
            .expect("valid frame")
            .pop()
            .expect("one message")
    }

    fn update_msg(client: u64, text: &str) -> Inbound {
        inbound(&encode_update(&edit(client, text)))
    }

    fn awareness_msg(client: u64, clock: u32, state: Option<&str>) -> Inbound {
        inbound(&encode_awareness([(client, clock, state)].into_iter()))
    }

    fn step1_empty() -> Inbound {
        inbound(&encode_sync_step1(&StateVector::default()))
    }

    fn kind(frame: &[u8]) -> &'static str {
        match (frame.first(), frame.get(1)) {
            (Some(0), Some(0)) => "step1",
            (Some(0), Some(1)) => "step2",
            (Some(0), Some(2)) => "update",
            (Some(1), _) => "awareness",
            (Some(8), Some(1)) => "ack",
            (Some(8), Some(0)) => "nack",
            _ => "other",
        }
    }

    fn summary(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Send(conn, frame) => format!("send {conn} {}", kind(frame)),
                Effect::Broadcast(frame) => format!("all {}", kind(frame)),
                Effect::Append { seq, .. } => format!("append {seq}"),
                Effect::Close(conn, reason) => format!("close {conn} {}", reason.label()),
                Effect::Share(frame) => format!("share {}", kind(frame)),
            })
            .collect()
    }

    /// The awareness entries of a broadcast frame.
    fn awareness_of(effect: &Effect) -> Vec<(u64, Option<String>)> {
        let Effect::Broadcast(frame) = effect else {
            panic!("not a broadcast: {effect:?}");
        };
        let Inbound::Awareness(update) = inbound(frame) else {
            panic!("not awareness");
        };
        update
            .entries()
            .map(|e| (e.client_id, e.state.map(str::to_owned)))
            .collect()
    }

    /// One input of a case.
    enum Step {
        Join(ConnId, Option<&'static str>, bool),
        /// A connection that wants sync-status acks (Hocuspocus); read-only or not.
        JoinAcks(ConnId, bool),
        Msg(ConnId, Inbound),
        /// A message while the storage backlog is full.
        MsgBacklogFull(ConnId, Inbound),
        Leave(ConnId),
        Durable(i64),
        Merge(Vec<u8>),
        Disconnect(Option<&'static str>),
        Delete,
    }

    /// Feeds `steps` to a core and returns each step's effects. With `memory`, the test acts
    /// as the memory driver: every append is reported durable as soon as it is seen.
    fn run(core: &mut RoomCore, memory: bool, steps: Vec<Step>) -> Vec<Vec<String>> {
        let now = Instant::now();
        steps
            .into_iter()
            .map(|step| {
                let effects = match step {
                    Step::Join(conn, user, read_only) => {
                        let meta = PeerMeta {
                            user: user.map(str::to_owned),
                            read_only,
                            acks: false,
                        };
                        core.join(conn, meta, now);
                        Vec::new()
                    }
                    Step::JoinAcks(conn, read_only) => {
                        let meta = PeerMeta {
                            user: None,
                            read_only,
                            acks: true,
                        };
                        core.join(conn, meta, now);
                        Vec::new()
                    }
                    Step::Msg(conn, msg) => core.message(conn, msg, false, now),
                    Step::MsgBacklogFull(conn, msg) => core.message(conn, msg, true, now),
                    Step::Leave(conn) => core.leave(conn, now),
                    Step::Durable(seq) => core.durable_up_to(seq),
                    Step::Merge(update) => core.merge(&update, "admin".into()).1,
                    Step::Disconnect(user) => core.disconnect(user, now).1,
                    Step::Delete => core.delete().1,
                };
                let mut all = Vec::new();
                for effect in effects {
                    let seq = match &effect {
                        Effect::Append { seq, .. } if memory => Some(*seq),
                        _ => None,
                    };
                    all.push(effect);
                    if let Some(seq) = seq {
                        all.extend(core.durable_up_to(seq));
                    }
                }
                summary(&all)
            })
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// (name, memory driver, steps, expected effects per step)
    type Case = (&'static str, bool, Vec<Step>, Vec<Vec<&'static str>>);

    /// Runs each case on a fresh core and compares every step's effects.
    fn check(cases: Vec<Case>) {
        for (name, memory, steps, expected) in cases {
            let (mut core, _metrics) = core_with(ReadOnlyAwareness::Relay);
            let got = run(&mut core, memory, steps);
            let expected: Vec<Vec<String>> = expected.iter().map(|e| strs(e)).collect();
            assert_eq!(got, expected, "case: {name}");
        }
    }

    #[test]
    fn sync_status_acks_wait_for_durability_and_keep_order() {
        use Step::*;
        let cases: Vec<Case> = vec![
            (
                "an ack per update, each once its update is durable, in order",
                false,
                vec![
                    JoinAcks(1, false),
                    Join(2, None, false),
                    Msg(1, update_msg(10, "a")),
                    Msg(1, update_msg(11, "b")),
                    Durable(1),
                    Durable(2),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["append 1"],
                    vec!["append 2"],
                    vec!["all update", "send 1 ack"],
                    vec!["all update", "send 1 ack"],
                ],
            ),
            (
                "an update that changes nothing is acked behind what is still pending",
                false,
                vec![
                    JoinAcks(1, false),
                    Join(2, None, false),
                    Msg(2, update_msg(20, "x")),
                    Msg(1, update_msg(20, "x")),
                    Durable(1),
                    Msg(1, update_msg(20, "x")),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["append 1"],
                    vec![],
                    vec!["all update", "send 1 ack"],
                    vec!["send 1 ack"],
                ],
            ),
            (
                "a refused update closes and is not acked; y-websocket peers get no acks",
                true,
                vec![
                    JoinAcks(1, false),
                    Join(2, None, false),
                    Msg(2, update_msg(20, "x")),
                    MsgBacklogFull(1, update_msg(10, "y")),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["append 1", "all update"],
                    vec!["close 1 backlog_full"],
                ],
            ),
            (
                "read-only: nothing new is acked as saved, a write as not applied",
                true,
                vec![
                    JoinAcks(1, true),
                    Msg(1, inbound(&crate::protocol::encode_sync_step2(&[0, 0]))),
                    Msg(1, update_msg(10, "y")),
                ],
                vec![vec![], vec!["send 1 ack"], vec!["send 1 nack"]],
            ),
        ];
        check(cases);
    }

    #[test]
    fn persist_before_relay() {
        use Step::*;
        let cases: Vec<Case> = vec![
            (
                "relay and a later SyncStep2 wait for durability",
                false,
                vec![
                    Join(1, None, false),
                    Join(2, None, false),
                    Msg(1, update_msg(10, "hello")),
                    Msg(2, step1_empty()),
                    Durable(0),
                    Durable(1),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["append 1"],
                    vec![],
                    vec![],
                    vec!["all update", "send 2 step2"],
                ],
            ),
            (
                "nothing unacknowledged: SyncStep2 at once",
                false,
                vec![
                    Join(1, None, false),
                    Msg(1, update_msg(10, "hello")),
                    Durable(1),
                    Msg(1, step1_empty()),
                ],
                vec![
                    vec![],
                    vec!["append 1"],
                    vec!["all update"],
                    vec!["send 1 step2"],
                ],
            ),
            (
                "release in sequence order, only up to the watermark",
                false,
                vec![
                    Join(1, None, false),
                    Msg(1, update_msg(10, "a")),
                    Msg(1, update_msg(11, "b")),
                    Durable(1),
                    Durable(2),
                ],
                vec![
                    vec![],
                    vec!["append 1"],
                    vec!["append 2"],
                    vec!["all update"],
                    vec!["all update"],
                ],
            ),
            (
                "memory storage releases at once",
                true,
                vec![
                    Join(1, None, false),
                    Join(2, None, false),
                    Msg(1, update_msg(10, "hello")),
                    Msg(2, step1_empty()),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["append 1", "all update"],
                    vec!["send 2 step2"],
                ],
            ),
            (
                "an update already applied is neither logged nor relayed",
                true,
                vec![
                    Join(1, None, false),
                    Msg(1, update_msg(10, "hello")),
                    Msg(1, update_msg(10, "hello")),
                ],
                vec![vec![], vec!["append 1", "all update"], vec![]],
            ),
            (
                "storage backlog full: the sender is refused with 1013",
                false,
                vec![Join(1, None, false), MsgBacklogFull(1, update_msg(10, "x"))],
                vec![vec![], vec!["close 1 backlog_full"]],
            ),
        ];
        check(cases);
    }

    #[test]
    fn awareness_rules() {
        use Step::*;
        let (mut core, _metrics) = core_with(ReadOnlyAwareness::Relay);
        let got = run(
            &mut core,
            true,
            vec![
                Join(1, Some(USER_A), false),
                Msg(1, awareness_msg(10, 1, Some(r#"{"name":"a"}"#))),
                Msg(1, Inbound::QueryAwareness),
            ],
        );
        assert_eq!(got[1], strs(&["all awareness"]));
        assert_eq!(got[2], strs(&["send 1 awareness"]));
        // A joiner gets the document's SyncStep1, then the live states.
        let welcome = core.welcome();
        let kinds: Vec<&str> = welcome.iter().map(|f| kind(f)).collect();
        assert_eq!(kinds, ["step1", "awareness"]);
        let Inbound::Awareness(live) = inbound(&welcome[1]) else {
            panic!("not awareness");
        };
        assert_eq!(live.entries().count(), 1);
        // Another connection may not announce an id connection 1 owns.
        core.join(2, PeerMeta::default(), Instant::now());
        let effects = core.message(2, awareness_msg(10, 2, Some("{}")), false, Instant::now());
        assert!(effects.is_empty(), "foreign id relayed: {effects:?}");
        // Leaving broadcasts the removal of the leaver's states.
        let effects = core.leave(1, Instant::now());
        assert_eq!(effects.len(), 1);
        assert_eq!(awareness_of(&effects[0]), vec![(10, None)]);
        // A joiner with nothing live gets only SyncStep1.
        assert_eq!(core.welcome().len(), 1);
        // States expire when not renewed.
        core.join(3, PeerMeta::default(), Instant::now());
        core.message(3, awareness_msg(30, 1, Some("{}")), false, Instant::now());
        let effects = core.tick(Instant::now() + Duration::from_secs(31));
        assert_eq!(awareness_of(&effects[0]), vec![(30, None)]);
    }

    #[test]
    fn read_only() {
        use Step::*;
        for (policy, awareness_effects) in [
            (ReadOnlyAwareness::Relay, vec!["all awareness"]),
            (ReadOnlyAwareness::Drop, vec![]),
        ] {
            let (mut core, metrics) = core_with(policy);
            let got = run(
                &mut core,
                true,
                vec![
                    Join(1, None, true),
                    Join(2, None, false),
                    Msg(1, update_msg(10, "nope")),
                    Msg(1, awareness_msg(10, 1, Some("{}"))),
                    Msg(1, step1_empty()),
                ],
            );
            assert_eq!(got[2], Vec::<String>::new(), "update not logged or relayed");
            assert_eq!(got[3], strs(&awareness_effects), "{policy:?}");
            assert_eq!(got[4], strs(&["send 1 step2"]), "a reader still syncs");
            assert_eq!(core.seq(), 0);
            assert!(core.has_peer(1), "the reader stays connected");
            assert_eq!(metrics.readonly_updates_refused.get(), 1);
            let (state, _) = core.encode_state().expect("encodes");
            let doc = Doc::new();
            doc.transact_mut()
                .apply_update(Update::decode_v1(&state).expect("state"))
                .expect("applies");
            let text = doc.get_or_insert_text("t");
            assert_eq!(text.get_string(&doc.transact()), "", "update not applied");
        }
    }

    #[test]
    fn client_id_ownership() {
        use Step::*;
        let cases: Vec<Case> = vec![
            (
                "writing new clocks under another live connection's id is refused",
                true,
                vec![
                    Join(1, Some("a"), false),
                    Join(2, Some("b"), false),
                    Msg(1, update_msg(10, "hello")),
                    Msg(2, update_msg(10, "longer text")),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["append 1", "all update"],
                    vec!["close 2 foreign_client_id"],
                ],
            ),
            (
                "the owner's user takes its id back after reconnecting",
                true,
                vec![
                    Join(1, Some("a"), false),
                    Msg(1, update_msg(10, "hello")),
                    Leave(1),
                    Join(3, Some("a"), false),
                    Msg(3, update_msg(10, "longer text")),
                ],
                vec![
                    vec![],
                    vec!["append 1", "all update"],
                    vec![],
                    vec![],
                    vec!["append 2", "all update"],
                ],
            ),
            (
                "awareness ownership binds writes too",
                true,
                vec![
                    Join(1, None, false),
                    Join(2, None, false),
                    Msg(1, awareness_msg(10, 1, Some("{}"))),
                    Msg(2, update_msg(10, "x")),
                ],
                vec![
                    vec![],
                    vec![],
                    vec!["all awareness"],
                    vec!["close 2 foreign_client_id"],
                ],
            ),
        ];
        check(cases);
    }

    #[test]
    fn admin_commands() {
        use Step::*;
        let cases: Vec<Case> = vec![
            (
                "merge logs and relays once durable",
                false,
                vec![
                    Join(1, None, false),
                    Merge(edit(10, "imported")),
                    Durable(1),
                    Merge(edit(10, "imported")),
                ],
                vec![vec![], vec!["append 1"], vec!["all update"], vec![]],
            ),
            (
                "merge of bytes that are not an update changes nothing",
                true,
                vec![Join(1, None, false), Merge(vec![0xff, 0xff, 0xff])],
                vec![vec![], vec![]],
            ),
            (
                "disconnect closes only that user's connections, announcing their states",
                true,
                vec![
                    Join(1, Some("a"), false),
                    Join(2, Some("b"), false),
                    Join(3, Some("a"), false),
                    Msg(1, awareness_msg(10, 1, Some("{}"))),
                    Disconnect(Some("a")),
                    Disconnect(None),
                ],
                vec![
                    vec![],
                    vec![],
                    vec![],
                    vec!["all awareness"],
                    vec![
                        "close 1 admin_disconnect",
                        "all awareness",
                        "close 3 admin_disconnect",
                    ],
                    vec!["close 2 admin_disconnect"],
                ],
            ),
            (
                "delete closes everyone with 4410",
                true,
                vec![Join(1, None, false), Join(2, None, false), Delete],
                vec![
                    vec![],
                    vec![],
                    vec!["close 1 document_deleted", "close 2 document_deleted"],
                ],
            ),
        ];
        check(cases);
    }

    #[test]
    fn admin_merge_results() {
        let (mut core, _metrics) = core_with(ReadOnlyAwareness::Relay);
        let (first, _) = core.merge(&edit(10, "x"), "admin".into());
        assert_eq!(first.expect("merged"), Some(1));
        let (again, effects) = core.merge(&edit(10, "x"), "admin".into());
        assert_eq!(again.expect("merged"), None, "nothing new: no change");
        assert!(effects.is_empty());
        let (bad, _) = core.merge(&[0xff, 0xff], "admin".into());
        assert!(matches!(bad, Err(CommandError::Invalid(_))));
        let (_, effects) = core.merge(&edit(11, "y"), "admin".into());
        let Some(Effect::Append { author, seq, .. }) = effects.first() else {
            panic!("no append: {effects:?}");
        };
        assert_eq!((author.as_deref(), *seq), (Some("admin"), 2));
        assert_eq!(core.seq(), 2);
    }

    /// The text of root "t" in the core's document.
    fn text_of(core: &RoomCore) -> String {
        let (state, _) = core.encode_state().expect("encodes");
        let doc = Doc::new();
        RoomCore::apply_state(&doc, &state).expect("applies");
        let text = doc.get_or_insert_text("t");
        text.get_string(&doc.transact())
    }

    #[test]
    fn restore_computed_on_a_copy_applies_in_one_step() {
        let (mut core, _metrics) = core_with(ReadOnlyAwareness::Relay);
        let now = Instant::now();
        core.join(1, PeerMeta::default(), now);
        let effects = core.message(1, update_msg(10, "old text"), false, now);
        assert_eq!(summary(&effects), strs(&["append 1"]));
        // What the driver does off the room: a copy from the encoded state, under the
        // document's client id, restored to the target.
        let (state, _) = core.encode_state().expect("encodes");
        let copy = Doc::with_client_id(core.client_id());
        RoomCore::apply_state(&copy, &state).expect("copies");
        let target = Doc::new();
        target
            .get_or_insert_text("t")
            .insert(&mut target.transact_mut(), 0, "new text");
        let changed = crate::history::restore::restore_into(&copy, &target).expect("restores");
        let (seq, effects) = core.apply_restore(changed, "admin".into());
        assert_eq!(seq.expect("applied"), Some(2));
        assert_eq!(summary(&effects), strs(&["append 2"]));
        assert_eq!(text_of(&core), "new text");
        // Its relay waits behind the client's update, like any change.
        assert_eq!(
            summary(&core.durable_up_to(2)),
            strs(&["all update", "all update"])
        );
        // Nothing to change: no seq, no effects.
        let (seq, effects) = core.apply_restore(None, "admin".into());
        assert_eq!(seq.expect("nothing to do"), None);
        assert!(effects.is_empty());
    }

    #[test]
    fn cluster_inputs() {
        let metrics = Metrics::new();
        let mut config = config(ReadOnlyAwareness::Relay);
        config.share_awareness = true;
        let mut core = RoomCore::new(config, CoreMetrics::new(&metrics));
        let now = Instant::now();
        core.join(1, PeerMeta::default(), now);
        // A local client's awareness is shared with the other nodes and relayed here.
        let effects = core.message(1, awareness_msg(11, 1, Some("{}")), false, now);
        assert_eq!(
            summary(&effects),
            strs(&["share awareness", "all awareness"])
        );
        // Another node's (under its stand-in) is relayed here only, and never refused as
        // foreign: the other node checked it.
        let node = crate::cluster::stand_in(42);
        let Inbound::Awareness(remote) = awareness_msg(22, 1, Some("{}")) else {
            unreachable!()
        };
        assert_eq!(
            summary(&core.remote_awareness(node, &remote, now)),
            strs(&["all awareness"])
        );
        // Only this node's states are re-announced after an outage.
        let own = core.own_awareness().expect("own states");
        assert_eq!(
            awareness_of(&Effect::Broadcast(own)),
            vec![(11, Some("{}".into()))]
        );
        // The other node dies: its client's state is removed here, not shared.
        let gone = core.node_gone(node, now);
        assert_eq!(summary(&gone), strs(&["all awareness"]));
        assert_eq!(awareness_of(&gone[0]), vec![(22, None)]);
        // A logged change from another node is relayed at once (it is durable), not logged
        // again; the same change a second time (Redis and a read-back) sends nothing.
        let version = core.version();
        let update = edit(7, "elsewhere");
        assert_eq!(summary(&core.remote_update(&update)), strs(&["all update"]));
        assert_eq!(core.version(), version + 1);
        assert!(core.remote_update(&update).is_empty());
        assert!(core.remote_update(b"garbage").is_empty());
        assert_eq!(text_of(&core), "elsewhere");
        // A local client writing under an id another node's client announced is not refused.
        let effects = core.message(1, update_msg(22, "mine"), false, now);
        assert_eq!(summary(&effects), strs(&["append 1"]));
    }
}
