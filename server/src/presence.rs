//! Awareness (presence) state of one room: who is here, their cursors and names.
//!
//! Follows the y-protocols rules (a higher clock wins; `null` at the same clock removes) and
//! adds what a multi-tenant server needs and the reference server lacks:
//! - **ownership**: the connection that introduces a client id owns it until it leaves; other
//!   connections cannot change or remove it;
//! - **removal on disconnect**: a closing connection's ids are removed at once;
//! - **expiry**: a state not renewed within the timeout is removed;
//! - **re-announcement**: a client that reconnects re-sends its state at the clock it had when
//!   the server removed it; y-protocols peers would ignore that (same clock, not newer), so the
//!   server accepts it and relays it one clock higher, and the client is visible again at once
//!   instead of after its next 15 s renewal.
//!
//! Pure logic over `Instant`s: the room owns the clock and the broadcast.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::AwarenessEntry;

/// Identifies one connection within the server (unique for the process lifetime).
pub type ConnId = u64;

/// A change to announce to the room: `state == None` means "removed".
pub type Change = (u64, u32, Option<Arc<str>>);

#[derive(Debug)]
struct Entry {
    clock: u32,
    /// `None` is a tombstone: remembered so stale updates cannot resurrect the state.
    state: Option<Arc<str>>,
    owner: Option<ConnId>,
    renewed: Instant,
}

/// Result of applying one awareness message from a connection.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Entries to broadcast, as accepted (possibly with a bumped clock).
    pub changes: Vec<Change>,
    /// Entries refused because another connection owns the id.
    pub foreign: usize,
}

/// The awareness table of one room.
#[derive(Debug)]
pub struct Presence {
    entries: HashMap<u64, Entry>,
    timeout: Duration,
}

impl Presence {
    /// An empty table whose states expire `timeout` after their last renewal.
    pub fn new(timeout: Duration) -> Self {
        Presence {
            entries: HashMap::new(),
            timeout,
        }
    }

    /// Applies entries sent by `conn`, returning what changed.
    pub fn apply(&mut self, conn: ConnId, incoming: Vec<AwarenessEntry>, now: Instant) -> Applied {
        let mut applied = Applied::default();
        for AwarenessEntry {
            client_id,
            clock,
            state,
        } in incoming
        {
            let Some(entry) = self.entries.get_mut(&client_id) else {
                if state.is_some() {
                    self.entries.insert(
                        client_id,
                        Entry {
                            clock,
                            state: state.clone(),
                            owner: Some(conn),
                            renewed: now,
                        },
                    );
                    applied.changes.push((client_id, clock, state));
                }
                continue;
            };
            match entry.owner {
                Some(owner) if owner != conn => {
                    applied.foreign += 1;
                    continue;
                }
                _ => {}
            }
            let live = entry.state.is_some();
            let accepted_clock =
                if clock > entry.clock || (clock == entry.clock && state.is_none() && live) {
                    clock
                } else if clock == entry.clock && !live && state.is_some() {
                    // Re-announcement after the server removed this id: peers only take it newer.
                    clock.saturating_add(1)
                } else {
                    continue;
                };
            entry.clock = accepted_clock;
            entry.renewed = now;
            entry.owner = state.as_ref().map(|_| conn);
            entry.state = state.clone();
            applied.changes.push((client_id, accepted_clock, state));
        }
        applied
    }

    /// Removes every live state `conn` owns (it disconnected); returns the removals to broadcast.
    pub fn remove_conn(&mut self, conn: ConnId, now: Instant) -> Vec<Change> {
        let mut removed = Vec::new();
        for (&client_id, entry) in &mut self.entries {
            if entry.owner == Some(conn) {
                entry.owner = None;
                entry.renewed = now;
                if entry.state.take().is_some() {
                    removed.push((client_id, entry.clock, None));
                }
            }
        }
        removed
    }

    /// Removes states not renewed within the timeout, and forgets tombstones twice as old.
    /// Returns the removals to broadcast.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut removed = Vec::new();
        let timeout = self.timeout;
        self.entries.retain(|&client_id, entry| {
            let age = now.saturating_duration_since(entry.renewed);
            if entry.state.is_some() {
                if age >= timeout {
                    entry.state = None;
                    entry.owner = None;
                    entry.renewed = now;
                    removed.push((client_id, entry.clock, None));
                }
                true
            } else {
                age < timeout * 2
            }
        });
        removed
    }

    /// Every live state, for a joining connection or a query-awareness request.
    pub fn live(&self) -> Vec<(u64, u32, &str)> {
        self.entries
            .iter()
            .filter_map(|(&id, e)| e.state.as_deref().map(|s| (id, e.clock, s)))
            .collect()
    }

    /// Whether there is anything to sweep (live states or tombstones).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of live states (for metrics and admin views).
    pub fn live_count(&self) -> usize {
        self.entries.values().filter(|e| e.state.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client_id: u64, clock: u32, state: Option<&str>) -> AwarenessEntry {
        AwarenessEntry {
            client_id,
            clock,
            state: state.map(Arc::from),
        }
    }

    fn table() -> (Presence, Instant) {
        (Presence::new(Duration::from_secs(30)), Instant::now())
    }

    #[test]
    fn newer_clock_wins_older_is_ignored() {
        let (mut p, now) = table();
        assert_eq!(
            p.apply(1, vec![entry(10, 1, Some("{}"))], now)
                .changes
                .len(),
            1
        );
        assert_eq!(
            p.apply(1, vec![entry(10, 1, Some("{\"x\":1}"))], now)
                .changes
                .len(),
            0
        );
        assert_eq!(
            p.apply(1, vec![entry(10, 2, Some("{\"x\":1}"))], now)
                .changes
                .len(),
            1
        );
        assert_eq!(p.live(), vec![(10, 2, "{\"x\":1}")]);
    }

    #[test]
    fn owner_can_remove_with_null_at_same_clock() {
        let (mut p, now) = table();
        p.apply(1, vec![entry(10, 3, Some("{}"))], now);
        let applied = p.apply(1, vec![entry(10, 3, None)], now);
        assert_eq!(applied.changes, vec![(10, 3, None)]);
        assert!(p.live().is_empty());
    }

    #[test]
    fn other_connections_cannot_touch_an_owned_id() {
        let (mut p, now) = table();
        p.apply(1, vec![entry(10, 1, Some("{}"))], now);
        let applied = p.apply(
            2,
            vec![entry(10, 9, None), entry(10, 9, Some("{\"evil\":1}"))],
            now,
        );
        assert_eq!(applied.foreign, 2);
        assert!(applied.changes.is_empty());
        assert_eq!(p.live(), vec![(10, 1, "{}")]);
    }

    #[test]
    fn disconnect_removes_only_that_connections_ids() {
        let (mut p, now) = table();
        p.apply(
            1,
            vec![entry(10, 1, Some("{}")), entry(11, 1, Some("{}"))],
            now,
        );
        p.apply(2, vec![entry(20, 1, Some("{}"))], now);
        let mut removed = p.remove_conn(1, now);
        removed.sort();
        assert_eq!(removed, vec![(10, 1, None), (11, 1, None)]);
        assert_eq!(p.live(), vec![(20, 1, "{}")]);
    }

    #[test]
    fn reconnect_at_same_clock_is_relayed_one_higher() {
        let (mut p, now) = table();
        p.apply(1, vec![entry(10, 5, Some("{}"))], now);
        p.remove_conn(1, now);
        let applied = p.apply(2, vec![entry(10, 5, Some("{}"))], now);
        assert_eq!(applied.changes, vec![(10, 6, Some(Arc::from("{}")))]);
        // and the new connection owns it now
        assert_eq!(p.apply(1, vec![entry(10, 9, None)], now).foreign, 1);
    }

    #[test]
    fn stale_states_expire_and_tombstones_are_forgotten() {
        let (mut p, now) = table();
        p.apply(1, vec![entry(10, 1, Some("{}"))], now);
        p.apply(
            1,
            vec![entry(11, 1, Some("{}"))],
            now + Duration::from_secs(20),
        );
        let removed = p.expire(now + Duration::from_secs(31));
        assert_eq!(removed, vec![(10, 1, None)]);
        assert_eq!(p.live_count(), 1);
        // a tombstone blocks stale resurrection...
        assert!(
            p.apply(1, vec![entry(10, 0, Some("{}"))], now)
                .changes
                .is_empty()
        );
        // ...until it is forgotten
        p.expire(now + Duration::from_secs(200));
        assert_eq!(p.live_count(), 0);
        p.expire(now + Duration::from_secs(400));
        assert!(p.is_empty());
    }
}
