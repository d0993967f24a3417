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
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::CommandError;
use crate::close;
use crate::config::ReadOnlyAwareness;
use crate::metrics::Metrics;
use crate::peer::CloseReason;
use crate::pending::{self, Integrated};
use crate::presence::{Change, ConnId, Limits, Presence};
use crate::protocol::{self, Inbound};

pub(crate) const INVALID_UPDATE: CloseReason = CloseReason {
    code: close::INVALID_PAYLOAD,
    reason: "invalid update",
    label: "invalid_update",
};
pub(crate) const BACKLOG_FULL: CloseReason = CloseReason {
    code: close::TRY_AGAIN_LATER,
    reason: "storage backlog full, retry later",
    label: "backlog_full",
};
/// The connection announced more awareness client ids, or more bytes of awareness state, than
/// one connection may own.
pub(crate) const AWARENESS_LIMIT: CloseReason = CloseReason {
    code: close::POLICY_VIOLATION,
    reason: "awareness limit: too many client ids or state bytes for one connection",
    label: "awareness_limit",
};
/// The update adds new clocks for a Yjs client id another live connection owns (or one
/// reserved for its user after it left).
pub(crate) const FOREIGN_CLIENT_ID: CloseReason = CloseReason {
    code: close::POLICY_VIOLATION,
    reason: "update writes a client id owned by another connection; reconnect to resync",
    label: "foreign_client_id",
};
pub(crate) const PENDING_TOO_LARGE: CloseReason = CloseReason {
    code: close::POLICY_VIOLATION,
    reason: "too many updates with missing dependencies (--max-pending-bytes); reconnect to resync",
    label: "pending_too_large",
};
pub(crate) const DISCONNECTED: CloseReason = CloseReason {
    code: close::DISCONNECTED,
    reason: "disconnected by an administrator",
    label: "admin_disconnect",
};

/// The options the core's rules depend on (a subset of the server's `Config`).
#[derive(Debug, Clone)]
pub struct CoreConfig {
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
}

impl CoreConfig {
    /// The core's options taken from the server's configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        CoreConfig {
            awareness_timeout: config.awareness_timeout,
            limits: Limits {
                ids_per_conn: config.max_awareness_ids_per_conn,
                bytes_per_conn: config.max_awareness_bytes_per_conn,
            },
            max_pending_bytes: config.max_pending_bytes as u64,
            max_nesting_depth: config.max_nesting_depth,
            readonly_awareness: config.readonly_awareness,
        }
    }
}

/// The process-wide metrics the core counts into (prometheus handles share their values, so
/// these clones count into the server's registry).
#[derive(Debug, Clone)]
pub struct CoreMetrics {
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
    pub fn new(metrics: &Metrics) -> Self {
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
pub enum Effect {
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
    Close(ConnId, CloseReason),
}

/// What the core knows about a joined connection.
#[derive(Debug, Clone, Default)]
pub struct PeerMeta {
    /// Token subject.
    pub user: Option<String>,
    /// Updates from it are not applied; its awareness follows `readonly_awareness`.
    pub read_only: bool,
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
pub struct RoomCore {
    config: CoreConfig,
    metrics: CoreMetrics,
    doc: Doc,
    presence: Presence,
    peers: HashMap<ConnId, PeerMeta>,
    /// Sequence number of the last accepted update.
    seq: i64,
    /// Frames waiting for durability, in sequence order.
    pending: VecDeque<(i64, Release)>,
    /// Set when yrs panicked: the document can no longer be trusted and the room retires.
    poisoned: bool,
    /// Encoded size of the updates yrs holds as pending (they arrived before updates they
    /// depend on), as measured after the last apply; bounded by `--max-pending-bytes`.
    yrs_pending_bytes: u64,
    /// Effects of the input being handled.
    out: Vec<Effect>,
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

impl RoomCore {
    /// An empty document with no peers.
    pub fn new(config: CoreConfig, metrics: CoreMetrics) -> Self {
        RoomCore {
            presence: Presence::new(config.awareness_timeout, config.limits),
            config,
            metrics,
            doc: Doc::new(),
            peers: HashMap::new(),
            seq: 0,
            pending: VecDeque::new(),
            poisoned: false,
            yrs_pending_bytes: 0,
            out: Vec::new(),
        }
    }

    /// Applies stored updates (snapshot, then log rows) in one transaction; `last_seq` is the
    /// sequence number they end at. Errors and panics become an error.
    pub fn load<'a>(
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
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// Whether the document can no longer be trusted (yrs panicked on it).
    pub fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether frames are waiting for durability.
    pub fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether some awareness state is live (so [`RoomCore::tick`] has work).
    pub fn has_presence(&self) -> bool {
        !self.presence.is_empty()
    }

    /// Whether `conn` is joined.
    pub fn has_peer(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    /// How many connections are joined.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The frames a joining connection gets first: the document's SyncStep1, then the live
    /// awareness states if any.
    pub fn welcome(&self) -> Vec<Bytes> {
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
    pub fn join(&mut self, conn: ConnId, meta: PeerMeta, now: Instant) {
        self.presence.join(conn, meta.user.as_deref(), now);
        self.peers.insert(conn, meta);
    }

    /// A connection left (closed, errored, or its queue overflowed): its awareness states are
    /// removed and the removal broadcast.
    pub fn leave(&mut self, conn: ConnId, now: Instant) -> Vec<Effect> {
        self.remove(conn, now);
        self.take()
    }

    /// One decoded message from joined connection `conn`. `backlog_full` says whether the
    /// storage backlog is past `--max-backlog-bytes` (updates are then refused with 1013).
    pub fn message(
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
    pub fn durable_up_to(&mut self, seq: i64) -> Vec<Effect> {
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
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let expired = self.presence.expire(now);
        if !expired.is_empty() {
            self.metrics
                .awareness_expired
                .inc_by(expired.len() as u64);
            self.broadcast_awareness(&expired);
        }
        self.take()
    }

    /// Makes the content equal to `target`'s as one new change (restore, or import with
    /// `mode=replace`). Returns its sequence number (`None` when nothing changed).
    pub fn replace(
        &mut self,
        target: &Doc,
        author: String,
    ) -> (Result<Option<i64>, CommandError>, Vec<Effect>) {
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            crate::history::restore::restore_into(doc, target)
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

    /// Applies a Yjs update (v1) as a change, like a client's (import with `mode=merge`).
    pub fn merge(
        &mut self,
        update: &[u8],
        author: String,
    ) -> (Result<Option<i64>, CommandError>, Vec<Effect>) {
        let result = match protocol::decode_update(update, self.config.max_nesting_depth) {
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
                    self.metrics.update_refused(PENDING_TOO_LARGE.label);
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
    pub fn disconnect(&mut self, user: Option<&str>, now: Instant) -> (usize, Vec<Effect>) {
        let mut chosen: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| user.is_none() || p.user.as_deref() == user)
            .map(|(id, _)| *id)
            .collect();
        chosen.sort_unstable();
        for conn in &chosen {
            self.kick(*conn, DISCONNECTED, now);
        }
        (chosen.len(), self.take())
    }

    /// Closes every connection with 4410 (the document is being deleted); returns how many.
    /// Their awareness is not announced: nobody is left to hear it.
    pub fn delete(&mut self) -> (usize, Vec<Effect>) {
        let closed = self.peers.len();
        let mut conns: Vec<ConnId> = self.peers.drain().map(|(id, _)| id).collect();
        conns.sort_unstable();
        for conn in conns {
            self.out.push(Effect::Close(conn, CloseReason::DELETED));
        }
        (closed, self.take())
    }

    /// The current state as one update (v1) and its state vector; `None` if yrs panicked.
    pub fn encode_state(&self) -> Option<(Vec<u8>, Vec<u8>)> {
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
    pub fn retire(&mut self) {
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
            self.broadcast_awareness(&removed);
        }
    }

    fn kick(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
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
                if adds_anything(&self.doc, &update) {
                    self.metrics.readonly_updates_refused.inc();
                }
            }
            Inbound::Update(update) => self.apply(conn, update, backlog_full, now),
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
                self.broadcast_awareness(&applied.changes);
                if applied.over_limit {
                    warn!(conn, "awareness limit reached; closing the connection");
                    self.kick(conn, AWARENESS_LIMIT, now);
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
            self.kick(conn, BACKLOG_FULL, now);
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
        if let Err(id) = self.presence.may_write(conn, &ids, now) {
            warn!(
                conn,
                client_id = id,
                "update writes a client id another connection owns; refused"
            );
            self.kick(conn, FOREIGN_CLIENT_ID, now);
            return;
        }
        match self.integrate(update) {
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
                    self.metrics.update_refused(PENDING_TOO_LARGE.label);
                    self.kick(conn, PENDING_TOO_LARGE, now);
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
                self.kick(conn, INVALID_UPDATE, now);
            }
        }
    }

    /// Applies an update to the document and returns what it changed, keeping yrs' pending
    /// set within `--max-pending-bytes` (see [`pending::integrate`]). yrs must not take the
    /// server down on a hostile update: a panic is caught and the core marked poisoned, so the
    /// room retires and the document reloads.
    fn integrate(&mut self, update: Update) -> Result<Integrated, CommandError> {
        let started = Instant::now();
        let max_pending = self.config.max_pending_bytes;
        let pending_before = self.yrs_pending_bytes;
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pending::integrate(doc, update, pending_before, max_pending)
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
        self.out.push(Effect::Append {
            seq: self.seq,
            update: changed,
            author,
        });
        self.pending.push_back((self.seq, Release::All(frame)));
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
        self.out.push(Effect::Broadcast(frame));
    }
}
