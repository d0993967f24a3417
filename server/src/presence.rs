//! Awareness (presence) state of one room, and who owns which Yjs client id.
//!
//! Follows the y-protocols rules (a higher clock wins; `null` at the same clock removes) and
//! adds what a multi-tenant server needs and the reference server lacks:
//! - **ownership (claims)**: a Yjs client id belongs to the connection that announces it in
//!   awareness or, if nobody did, to the first connection that writes new clocks for it. Other
//!   connections cannot change or remove its awareness state (their entries are ignored and
//!   counted) nor write new clocks for it (the room refuses the whole update). When the owner
//!   leaves, the claim stays reserved for a while: with tokens, only the same user (`sub`) can
//!   take it back; in open mode nobody's identity is known, so anyone can;
//! - **limits**: one connection owns at most `ids_per_conn` announced ids and
//!   `bytes_per_conn` bytes of live states; past either it is closed;
//! - **removal on disconnect**: a closing connection's states are removed at once;
//! - **expiry**: a state not renewed within the timeout is removed;
//! - **re-announcement**: a client that reconnects re-sends its state at the clock it had when
//!   the server removed it; y-protocols peers would ignore that (same clock, not newer), so the
//!   server accepts it and relays it one clock higher, and the client is visible again at once
//!   instead of after its next 15 s renewal. Only the connection whose state it was (after an
//!   expiry) or one that joined after the removal (the owner reconnecting) may do this: every
//!   y-websocket client echoes the awareness changes it receives, and an echo of a departed
//!   user's last state that arrives just after the removal is exactly such a message: accepting
//!   it from a connection that was already in the room brought the user back as a ghost.
//!
//! Pure logic over `Instant`s: the room owns the clock and the broadcast.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{AwarenessEntry, AwarenessUpdate};

/// Identifies one connection within the server (unique for the process lifetime).
pub(crate) type ConnId = u64;

/// Client ids one connection may hold by writing alone. A client writes under one id of its
/// own; a relayer's sync may carry many ids, which need no protection from it. The bound keeps
/// an update listing a million client ids from also costing a million claims.
const MAX_WRITE_CLAIMS_PER_CONN: usize = 64;

/// A change to announce to the room: `state == None` means "removed".
pub(crate) type Change = (u64, u32, Option<Arc<str>>);

/// What one connection may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Client ids one connection may announce in awareness.
    pub ids_per_conn: usize,
    /// Bytes of live awareness states (JSON) one connection may own at once.
    pub bytes_per_conn: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ids_per_conn: 8,
            bytes_per_conn: 64 << 10,
        }
    }
}

/// A connection of the room as the table knows it.
#[derive(Debug)]
struct Member {
    /// When it joined: a tombstone may be revived only by a connection that joined after it.
    joined: Instant,
    /// Token subject; `None` in open mode.
    user: Option<Arc<str>>,
    /// Client ids it claimed through awareness (never decreases while it is connected, so
    /// announcing and removing ids in turn cannot grow the table).
    announced: usize,
    /// Bytes of the live states it owns.
    bytes: usize,
    /// Client ids it claimed by writing (bounded by [`MAX_WRITE_CLAIMS_PER_CONN`]).
    written: usize,
    /// Another cluster node, standing for all its clients: the states it relays were checked
    /// there, so here they claim nothing and meet no per-connection limit (see
    /// [`Presence::apply_remote`]).
    remote: bool,
}

#[derive(Debug)]
struct Entry {
    clock: u32,
    /// `None` is a tombstone: remembered so stale updates cannot resurrect the state.
    state: Option<Arc<str>>,
    /// The connection whose state this is (or was, for a tombstone).
    owner: ConnId,
    renewed: Instant,
    /// When the state was removed (tombstones only).
    removed: Option<Instant>,
}

/// Who owns a client id.
#[derive(Debug)]
struct Claim {
    /// The live connection holding it; `None` once it left (then reserved until `released`
    /// plus the reservation period).
    holder: Option<ConnId>,
    /// Claimed by announcing it in awareness (strong) rather than only by writing it. A claim
    /// made by writing yields to an announcement: the writer may have been relaying structs
    /// it received elsewhere, and the announcer is the client itself.
    announced: bool,
    /// The holder's user, so that only that user can take the id back while it is reserved.
    user: Option<Arc<str>>,
    /// When the holder left.
    released: Instant,
}

/// Result of applying one awareness message from a connection.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Applied {
    /// Entries to broadcast, as accepted (possibly with a bumped clock).
    pub changes: Vec<Change>,
    /// Entries ignored because another connection owns the id (or, for a removed id, because
    /// this connection may not bring it back: an echo).
    pub foreign: usize,
    /// The connection went over its [`Limits`]; entries after the one that crossed them were
    /// not looked at. The room closes the connection.
    pub over_limit: bool,
}

/// Whether two users are known and equal (in open mode nobody is known).
fn same_user(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a == b)
}

/// The awareness table and client-id claims of one room.
#[derive(Debug)]
pub(crate) struct Presence {
    entries: HashMap<u64, Entry>,
    claims: HashMap<u64, Claim>,
    members: HashMap<ConnId, Member>,
    timeout: Duration,
    limits: Limits,
}

impl Presence {
    /// An empty table whose states expire `timeout` after their last renewal. Tombstones and
    /// released claims are kept twice as long.
    pub(crate) fn new(timeout: Duration, limits: Limits) -> Self {
        Presence {
            entries: HashMap::new(),
            claims: HashMap::new(),
            members: HashMap::new(),
            timeout,
            limits,
        }
    }

    fn keep(&self) -> Duration {
        self.timeout * 2
    }

    /// Registers a connection that joined the room at `now`, with its token subject.
    pub(crate) fn join(&mut self, conn: ConnId, user: Option<&str>, now: Instant) {
        self.members.insert(
            conn,
            Member {
                joined: now,
                user: user.map(Arc::from),
                announced: 0,
                bytes: 0,
                written: 0,
                remote: false,
            },
        );
    }

    /// Applies awareness relayed by another cluster node, represented by `node` (a
    /// connection id no local connection uses). Ownership and limits were enforced where its
    /// clients are connected; here only the clock rules apply, and its states claim no client
    /// id, so a client that moves to this node takes its id over at once.
    /// [`Presence::remove_conn`] of `node` removes all its states (the node died).
    pub(crate) fn apply_remote(
        &mut self,
        node: ConnId,
        update: &AwarenessUpdate,
        now: Instant,
    ) -> Applied {
        self.members.entry(node).or_insert(Member {
            joined: now,
            user: None,
            announced: 0,
            bytes: 0,
            written: 0,
            remote: true,
        });
        self.apply(node, update, now)
    }

    /// Whether `conn` may act on client id `id`: nobody else holds it (a claim made only by
    /// writing does not stop an announcement when `announcing`), and it is not reserved for
    /// another user.
    fn may_claim(&self, conn: ConnId, id: u64, announcing: bool, now: Instant) -> bool {
        let Some(claim) = self.claims.get(&id) else {
            return true;
        };
        let Some(member) = self.members.get(&conn) else {
            return false;
        };
        match claim.holder {
            Some(holder) if holder == conn => true,
            Some(_) if announcing => !claim.announced,
            // A write by the same user as the holder is allowed (two tabs of one user share
            // their edits through IndexedDB, and squatting one's own id harms nobody else),
            // but it does not move the claim.
            Some(_) => same_user(&claim.user, &member.user),
            None => {
                let reserved = now.saturating_duration_since(claim.released) < self.keep();
                !reserved || claim.user.is_none() || same_user(&claim.user, &member.user)
            }
        }
    }

    /// Applies the entries of one awareness message from `conn`, returning what changed.
    /// Nothing is allocated for ignored entries.
    pub(crate) fn apply(
        &mut self,
        conn: ConnId,
        update: &AwarenessUpdate,
        now: Instant,
    ) -> Applied {
        let mut applied = Applied::default();
        for entry in update.entries() {
            if !self.apply_one(conn, entry, now, &mut applied) {
                applied.over_limit = true;
                break;
            }
        }
        applied
    }

    /// Applies one entry; false when it would take `conn` over its limits.
    fn apply_one(
        &mut self,
        conn: ConnId,
        AwarenessEntry {
            client_id,
            clock,
            state,
        }: AwarenessEntry<'_>,
        now: Instant,
        applied: &mut Applied,
    ) -> bool {
        let remote = self.members.get(&conn).is_some_and(|m| m.remote);
        if !remote && !self.may_claim(conn, client_id, true, now) {
            applied.foreign += 1;
            return true;
        }
        let Some(member) = self.members.get(&conn) else {
            return true;
        };
        let accepted_clock = match self.entries.get(&client_id) {
            None if state.is_some() => clock,
            None => return true,
            Some(e) => {
                let live = e.state.is_some();
                if clock > e.clock || (clock == e.clock && state.is_none() && live) {
                    clock
                } else if clock == e.clock && !live && state.is_some() {
                    // Re-announcement: by the connection whose state expired, or by one that
                    // joined after the removal (the owner reconnecting). A connection that was
                    // already here and sends the removed state at its old clock is echoing it.
                    let revives =
                        e.owner == conn || e.removed.is_some_and(|removed| member.joined > removed);
                    if !revives {
                        applied.foreign += 1;
                        return true;
                    }
                    clock.saturating_add(1)
                } else {
                    return true;
                }
            }
        };
        // Limits: ids newly claimed through awareness and the bytes of live states owned.
        let holds = self
            .claims
            .get(&client_id)
            .is_some_and(|c| c.holder == Some(conn) && c.announced);
        let old_bytes = self
            .entries
            .get(&client_id)
            .and_then(|e| e.state.as_ref().filter(|_| e.owner == conn))
            .map_or(0, |s| s.len());
        let new_bytes = state.map_or(0, str::len);
        if state.is_some() && !remote {
            let ids = member.announced + usize::from(!holds);
            let bytes = member.bytes.saturating_sub(old_bytes) + new_bytes;
            if ids > self.limits.ids_per_conn || bytes > self.limits.bytes_per_conn {
                return false;
            }
        }
        let user = member.user.clone();
        if let Some(member) = self.members.get_mut(&conn) {
            member.bytes = member.bytes.saturating_sub(old_bytes) + new_bytes;
            if state.is_some() && !holds {
                member.announced += 1;
            }
        }
        if state.is_some() && !holds && !remote {
            self.claims.insert(
                client_id,
                Claim {
                    holder: Some(conn),
                    announced: true,
                    user,
                    released: now,
                },
            );
        }
        let state: Option<Arc<str>> = state.map(Arc::from);
        self.entries.insert(
            client_id,
            Entry {
                clock: accepted_clock,
                state: state.clone(),
                owner: conn,
                renewed: now,
                removed: state.is_none().then_some(now),
            },
        );
        applied.changes.push((client_id, accepted_clock, state));
        true
    }

    /// Checks that `conn` may write new clocks for every id in `ids`; `Err(id)` names the
    /// first one held by another live connection (of another user) or reserved for another
    /// user.
    pub(crate) fn may_write(&self, conn: ConnId, ids: &[u64], now: Instant) -> Result<(), u64> {
        match ids
            .iter()
            .find(|&&id| !self.may_claim(conn, id, false, now))
        {
            Some(&id) => Err(id),
            None => Ok(()),
        }
    }

    /// Records that `conn` wrote new clocks for `ids`: the ids nobody holds become its own
    /// (a weak claim, which an announcement by their client takes over).
    pub(crate) fn wrote(&mut self, conn: ConnId, ids: &[u64], now: Instant) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        let user = member.user.clone();
        for &id in ids {
            if member.written >= MAX_WRITE_CLAIMS_PER_CONN {
                break;
            }
            if self.claims.get(&id).is_none_or(|c| c.holder.is_none()) {
                member.written += 1;
                self.claims.insert(
                    id,
                    Claim {
                        holder: Some(conn),
                        announced: false,
                        user: user.clone(),
                        released: now,
                    },
                );
            }
        }
    }

    /// Removes every live state `conn` owns and releases its claims (it disconnected); returns
    /// the removals to broadcast.
    pub(crate) fn remove_conn(&mut self, conn: ConnId, now: Instant) -> Vec<Change> {
        self.members.remove(&conn);
        for claim in self.claims.values_mut() {
            if claim.holder == Some(conn) {
                claim.holder = None;
                claim.released = now;
            }
        }
        let mut removed = Vec::new();
        for (&client_id, entry) in &mut self.entries {
            if entry.owner == conn && entry.state.take().is_some() {
                entry.renewed = now;
                entry.removed = Some(now);
                removed.push((client_id, entry.clock, None));
            }
        }
        removed
    }

    /// Removes states not renewed within the timeout, and forgets tombstones and released
    /// claims twice as old. Returns the removals to broadcast.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut removed = Vec::new();
        let (timeout, keep) = (self.timeout, self.keep());
        let members = &mut self.members;
        self.entries.retain(|&client_id, entry| {
            let age = now.saturating_duration_since(entry.renewed);
            match &entry.state {
                Some(state) if age >= timeout => {
                    if let Some(m) = members.get_mut(&entry.owner) {
                        m.bytes = m.bytes.saturating_sub(state.len());
                    }
                    entry.state = None;
                    entry.renewed = now;
                    entry.removed = Some(now);
                    removed.push((client_id, entry.clock, None));
                    true
                }
                Some(_) => true,
                None => age < keep,
            }
        });
        self.claims.retain(|_, claim| {
            claim.holder.is_some() || now.saturating_duration_since(claim.released) < keep
        });
        removed
    }

    /// Every live state, for a joining connection or a query-awareness request.
    pub(crate) fn live(&self) -> Vec<(u64, u32, &str)> {
        self.entries
            .iter()
            .filter_map(|(&id, e)| e.state.as_deref().map(|s| (id, e.clock, s)))
            .collect()
    }

    /// The live states owned by connections `owned_by` accepts.
    pub(crate) fn live_of(&self, owned_by: impl Fn(ConnId) -> bool) -> Vec<(u64, u32, &str)> {
        self.entries
            .iter()
            .filter(|(_, e)| owned_by(e.owner))
            .filter_map(|(&id, e)| e.state.as_deref().map(|s| (id, e.clock, s)))
            .collect()
    }

    /// Whether there is anything to sweep (states, tombstones or released claims).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.claims.values().all(|c| c.holder.is_some())
    }

    /// Number of live states (for metrics and admin views).
    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.entries.values().filter(|e| e.state.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Inbound, decode_frame, encode_awareness};

    const S: Duration = Duration::from_secs(1);

    fn msg(entries: &[(u64, u32, Option<&str>)]) -> AwarenessUpdate {
        let frame = encode_awareness(entries.iter().copied());
        match decode_frame(&frame).expect("valid").pop() {
            Some(Inbound::Awareness(update)) => update,
            other => panic!("not awareness: {other:?}"),
        }
    }

    /// A table with connections 1 (user "u1"), 2 ("u2") and 3 (no user) joined at `t0`.
    fn table() -> (Presence, Instant) {
        let t0 = Instant::now();
        let mut p = Presence::new(30 * S, Limits::default());
        p.join(1, Some("u1"), t0);
        p.join(2, Some("u2"), t0);
        p.join(3, None, t0);
        (p, t0)
    }

    fn changes(
        p: &mut Presence,
        conn: ConnId,
        entries: &[(u64, u32, Option<&str>)],
        at: Instant,
    ) -> Vec<Change> {
        p.apply(conn, &msg(entries), at).changes
    }

    fn change(id: u64, clock: u32, state: Option<&str>) -> Change {
        (id, clock, state.map(Arc::from))
    }

    #[test]
    fn newer_clock_wins_older_is_ignored() {
        let (mut p, now) = table();
        assert_eq!(changes(&mut p, 1, &[(10, 1, Some("{}"))], now).len(), 1);
        assert_eq!(
            changes(&mut p, 1, &[(10, 1, Some("{\"x\":1}"))], now).len(),
            0
        );
        assert_eq!(
            changes(&mut p, 1, &[(10, 2, Some("{\"x\":1}"))], now).len(),
            1
        );
        assert_eq!(p.live(), vec![(10, 2, "{\"x\":1}")]);
    }

    #[test]
    fn owner_can_remove_with_null_at_same_clock() {
        let (mut p, now) = table();
        changes(&mut p, 1, &[(10, 3, Some("{}"))], now);
        assert_eq!(
            changes(&mut p, 1, &[(10, 3, None)], now),
            vec![change(10, 3, None)]
        );
        assert!(p.live().is_empty());
    }

    #[test]
    fn other_connections_cannot_touch_an_owned_id() {
        let (mut p, now) = table();
        changes(&mut p, 1, &[(10, 1, Some("{}"))], now);
        let applied = p.apply(
            2,
            &msg(&[(10, 9, None), (10, 9, Some("{\"evil\":1}"))]),
            now,
        );
        assert_eq!(applied.foreign, 2);
        assert!(applied.changes.is_empty());
        assert_eq!(p.live(), vec![(10, 1, "{}")]);
    }

    #[test]
    fn disconnect_removes_only_that_connections_ids() {
        let (mut p, now) = table();
        changes(&mut p, 1, &[(10, 1, Some("{}")), (11, 1, Some("{}"))], now);
        changes(&mut p, 2, &[(20, 1, Some("{}"))], now);
        let mut removed = p.remove_conn(1, now);
        removed.sort();
        assert_eq!(removed, vec![change(10, 1, None), change(11, 1, None)]);
        assert_eq!(p.live(), vec![(20, 1, "{}")]);
    }

    /// The re-announcement rule, as a table: who sends the removed state back at its old
    /// clock, and whether it is relayed one clock higher.
    #[test]
    fn who_may_bring_a_removed_state_back() {
        struct Case {
            what: &'static str,
            /// The owner leaves (true) or its state expires while it stays (false).
            leaves: bool,
            /// Sender: an existing connection, or `None` for a connection joining after.
            sender: Option<ConnId>,
            /// The new connection's user, when `sender` is `None`.
            user: Option<&'static str>,
            revived: bool,
        }
        let cases = [
            Case {
                what: "owner reconnects",
                leaves: true,
                sender: None,
                user: Some("u1"),
                revived: true,
            },
            Case {
                what: "peer that was in the room echoes",
                leaves: true,
                sender: Some(2),
                user: None,
                revived: false,
            },
            Case {
                what: "anonymous peer that was in the room echoes",
                leaves: true,
                sender: Some(3),
                user: None,
                revived: false,
            },
            Case {
                what: "another user joins after",
                leaves: true,
                sender: None,
                user: Some("u2"),
                revived: false,
            },
            Case {
                what: "owner speaks again after expiry",
                leaves: false,
                sender: Some(1),
                user: None,
                revived: true,
            },
            Case {
                what: "peer echoes after expiry",
                leaves: false,
                sender: Some(2),
                user: None,
                revived: false,
            },
        ];
        for case in cases {
            let (mut p, t0) = table();
            changes(&mut p, 1, &[(10, 5, Some("{}"))], t0);
            let removed_at = t0 + 31 * S;
            let removed = if case.leaves {
                p.remove_conn(1, removed_at)
            } else {
                p.expire(removed_at)
            };
            assert_eq!(removed, vec![change(10, 5, None)], "{}", case.what);
            let sender = case.sender.unwrap_or_else(|| {
                p.join(9, case.user, removed_at + S);
                9
            });
            let applied = p.apply(sender, &msg(&[(10, 5, Some("{}"))]), removed_at + 2 * S);
            if case.revived {
                assert_eq!(
                    applied.changes,
                    vec![change(10, 6, Some("{}"))],
                    "{}",
                    case.what
                );
            } else {
                assert_eq!(
                    (applied.changes, applied.foreign),
                    (vec![], 1),
                    "{}",
                    case.what
                );
            }
        }
    }

    #[test]
    fn a_newer_clock_revives_even_from_a_connection_that_was_here() {
        // The owner's new connection joined before the server noticed the old one was dead:
        // its state was refused while the old connection held the id, and its next renewal
        // (a newer clock, which no echo can carry) makes it visible again.
        let (mut p, t0) = table();
        p.join(4, Some("u1"), t0);
        changes(&mut p, 1, &[(10, 5, Some("{}"))], t0);
        assert_eq!(p.apply(4, &msg(&[(10, 5, Some("{}"))]), t0).foreign, 1);
        p.remove_conn(1, t0 + S);
        assert_eq!(
            p.apply(4, &msg(&[(10, 5, Some("{}"))]), t0 + 2 * S).foreign,
            1
        );
        assert_eq!(
            changes(&mut p, 4, &[(10, 6, Some("{}"))], t0 + 3 * S),
            vec![change(10, 6, Some("{}"))]
        );
    }

    #[test]
    fn limits_on_ids_and_bytes_per_connection() {
        let t0 = Instant::now();
        let mut p = Presence::new(
            30 * S,
            Limits {
                ids_per_conn: 2,
                bytes_per_conn: 10,
            },
        );
        p.join(1, None, t0);
        let applied = p.apply(
            1,
            &msg(&[(1, 1, Some("{}")), (2, 1, Some("{}")), (3, 1, Some("{}"))]),
            t0,
        );
        assert!(applied.over_limit);
        assert_eq!(applied.changes.len(), 2);
        // Removing an id does not free its place: ids cannot be cycled.
        let mut p = Presence::new(
            30 * S,
            Limits {
                ids_per_conn: 2,
                bytes_per_conn: 10,
            },
        );
        p.join(1, None, t0);
        let applied = p.apply(
            1,
            &msg(&[
                (1, 1, Some("{}")),
                (1, 1, None),
                (2, 1, Some("{}")),
                (2, 1, None),
                (3, 1, Some("{}")),
            ]),
            t0,
        );
        assert!(applied.over_limit);
        // Bytes: replacing a state counts only the new one.
        let mut p = Presence::new(
            30 * S,
            Limits {
                ids_per_conn: 2,
                bytes_per_conn: 10,
            },
        );
        p.join(1, None, t0);
        assert!(
            !p.apply(
                1,
                &msg(&[(1, 1, Some("[1,2,3,4]")), (1, 2, Some("[1,2,3,5]"))]),
                t0
            )
            .over_limit
        );
        assert!(p.apply(1, &msg(&[(2, 1, Some("[1,2]"))]), t0).over_limit);
        // Foreign entries cost nothing, however many.
        let many: Vec<_> = (100..2100).map(|id| (id, 1, Some("{}"))).collect();
        let mut p = Presence::new(
            30 * S,
            Limits {
                ids_per_conn: 2,
                bytes_per_conn: 10,
            },
        );
        p.join(1, None, t0);
        p.join(2, None, t0);
        for chunk in many.chunks(2) {
            p.join(chunk[0].0, None, t0);
            changes(&mut p, chunk[0].0, chunk, t0);
        }
        let applied = p.apply(2, &msg(&many), t0);
        assert_eq!((applied.foreign, applied.over_limit), (2000, false));
    }

    /// Write claims, as a table: who holds the id, who writes new clocks for it.
    #[test]
    fn who_may_write_new_clocks_for_an_id() {
        struct Case {
            what: &'static str,
            /// Set up the table (at t0); returns the writer.
            setup: fn(&mut Presence, Instant) -> ConnId,
            allowed: bool,
        }
        let cases = [
            Case {
                what: "nobody holds it",
                setup: |_, _| 2,
                allowed: true,
            },
            Case {
                what: "the announcer writes",
                setup: |p, t| {
                    changes(p, 1, &[(10, 1, Some("{}"))], t);
                    1
                },
                allowed: true,
            },
            Case {
                what: "another user, owner live",
                setup: |p, t| {
                    changes(p, 1, &[(10, 1, Some("{}"))], t);
                    2
                },
                allowed: false,
            },
            Case {
                what: "anonymous, owner live",
                setup: |p, t| {
                    changes(p, 1, &[(10, 1, Some("{}"))], t);
                    3
                },
                allowed: false,
            },
            Case {
                what: "first writer holds it",
                setup: |p, t| {
                    p.wrote(1, &[10], t);
                    2
                },
                allowed: false,
            },
            Case {
                what: "same user, other connection",
                setup: |p, t| {
                    changes(p, 1, &[(10, 1, Some("{}"))], t);
                    p.join(4, Some("u1"), t);
                    4
                },
                allowed: true,
            },
            Case {
                what: "another user, owner just left",
                setup: |p, t| {
                    changes(p, 1, &[(10, 1, Some("{}"))], t);
                    p.remove_conn(1, t);
                    2
                },
                allowed: false,
            },
            Case {
                what: "owner reconnects",
                setup: |p, t| {
                    changes(p, 1, &[(10, 1, Some("{}"))], t);
                    p.remove_conn(1, t);
                    p.join(4, Some("u1"), t);
                    4
                },
                allowed: true,
            },
            Case {
                what: "open mode, owner just left",
                setup: |p, t| {
                    p.join(5, None, t);
                    changes(p, 5, &[(10, 1, Some("{}"))], t);
                    p.remove_conn(5, t);
                    3
                },
                allowed: true,
            },
        ];
        for case in cases {
            let (mut p, t0) = table();
            let writer = (case.setup)(&mut p, t0);
            assert_eq!(
                p.may_write(writer, &[10], t0 + S).is_ok(),
                case.allowed,
                "{}",
                case.what
            );
        }
        // The reservation ends.
        let (mut p, t0) = table();
        changes(&mut p, 1, &[(10, 1, Some("{}"))], t0);
        p.remove_conn(1, t0);
        p.expire(t0 + 61 * S);
        assert!(p.may_write(2, &[10], t0 + 61 * S).is_ok());
    }

    #[test]
    fn claims_made_by_writing_are_bounded_per_connection() {
        let (mut p, t0) = table();
        let ids: Vec<u64> = (1000..1100).collect();
        p.wrote(2, &ids, t0);
        assert_eq!(p.may_write(1, &[1000], t0), Err(1000));
        assert_eq!(
            p.may_write(1, &[1000 + MAX_WRITE_CLAIMS_PER_CONN as u64], t0),
            Ok(())
        );
        assert_eq!(p.claims.len(), MAX_WRITE_CLAIMS_PER_CONN);
    }

    #[test]
    fn an_announcement_takes_over_a_claim_made_by_writing() {
        // A relayer wrote id 10's structs first; then client 10 itself shows up.
        let (mut p, t0) = table();
        p.wrote(2, &[10], t0);
        assert_eq!(changes(&mut p, 1, &[(10, 1, Some("{}"))], t0).len(), 1);
        assert!(p.may_write(1, &[10], t0).is_ok());
        assert_eq!(p.may_write(2, &[10], t0), Err(10));
    }

    #[test]
    fn stale_states_expire_and_tombstones_are_forgotten() {
        let (mut p, now) = table();
        changes(&mut p, 1, &[(10, 1, Some("{}"))], now);
        changes(&mut p, 1, &[(11, 1, Some("{}"))], now + 20 * S);
        let removed = p.expire(now + 31 * S);
        assert_eq!(removed, vec![change(10, 1, None)]);
        assert_eq!(p.live_count(), 1);
        // a tombstone blocks stale resurrection...
        assert!(changes(&mut p, 1, &[(10, 0, Some("{}"))], now + 32 * S).is_empty());
        // ...until it is forgotten
        p.expire(now + 200 * S);
        assert_eq!(p.live_count(), 0);
        p.remove_conn(1, now + 200 * S);
        p.expire(now + 400 * S);
        assert!(p.is_empty());
    }
}
