//! A room's part in a cluster: which log rows its document holds, the numbers the database
//! gave this node's updates, and when to catch up from the log.
//!
//! The document of a clustered room holds log rows from three sources: this node's accepted
//! updates (numbered by the database when they commit), rows other nodes relayed through
//! Redis, and rows read back from the log when Redis lost some. [`Replica`] tracks them as
//! "every row up to `contiguous`, plus `above`", so the room knows when it is missing rows
//! (a gap, or the log reaching further than it has) and when its document is exactly a prefix
//! of the log (then, and only then, it may be stored as a snapshot).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crdt_store::AssignedSeqs;
use tokio::sync::oneshot;

use crate::cluster::{Cluster, Control};

/// How long a gap in the relayed sequence numbers may stay open (Redis delivers two nodes'
/// messages in either order) before the missing rows are read from the log.
pub(super) const GAP_GRACE: Duration = Duration::from_millis(100);

/// See the module documentation.
pub(super) struct Replica {
    pub(super) cluster: Arc<Cluster>,
    /// Filled by the store's writer: `(ticket, seq)` of this node's committed updates.
    pub(super) assigned: AssignedSeqs,
    /// This node's accepted updates not yet numbered, by ticket (the core's seq).
    unnumbered: VecDeque<(i64, Bytes)>,
    /// Administrators waiting for the log's number of their change, by ticket.
    waiters: HashMap<i64, oneshot::Sender<i64>>,
    /// Every log row up to here is in the document.
    contiguous: i64,
    /// Rows above `contiguous` that are in the document.
    above: BTreeSet<i64>,
    /// The newest row known to be in the log.
    known: i64,
    /// Since when rows are missing below the newest one held or known.
    gap_since: Option<Instant>,
    /// A read of missing rows is in flight.
    pub(super) catching_up: bool,
}

impl Replica {
    /// The replica of a document loaded up to log row `loaded`.
    pub(super) fn new(cluster: Arc<Cluster>, loaded: i64) -> Replica {
        Replica {
            cluster,
            assigned: AssignedSeqs::default(),
            unnumbered: VecDeque::new(),
            waiters: HashMap::new(),
            contiguous: loaded,
            above: BTreeSet::new(),
            known: loaded,
            gap_since: None,
            catching_up: false,
        }
    }

    /// Every log row up to this one is in the document.
    pub(super) fn contiguous(&self) -> i64 {
        self.contiguous
    }

    /// The newest log row known to exist.
    pub(super) fn known(&self) -> i64 {
        self.known.max(self.contiguous)
    }

    /// The document is exactly log rows `..= contiguous`: nothing above, nothing of this
    /// node's waiting for a number. Only such a state may be stored as a snapshot.
    pub(super) fn is_prefix(&self) -> bool {
        self.above.is_empty() && self.unnumbered.is_empty()
    }

    /// This node accepted an update under `ticket` (it is in the document, not yet logged).
    pub(super) fn accepted(&mut self, ticket: i64, update: Bytes) {
        self.unnumbered.push_back((ticket, update));
    }

    /// An administrator wants to know the log's number of the change with `ticket`.
    pub(super) fn wait_for_number(&mut self, ticket: i64) -> oneshot::Receiver<i64> {
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(ticket, tx);
        rx
    }

    /// Takes the numbers the writer reported: each of this node's rows is marked held,
    /// published to the other nodes, and its waiting administrator answered.
    pub(super) fn take_numbers(&mut self, name: &str) {
        let pairs = std::mem::take(&mut *self.assigned.lock().unwrap_or_else(|e| e.into_inner()));
        for (ticket, seq) in pairs {
            while let Some((t, _)) = self.unnumbered.front() {
                if *t >= ticket {
                    break;
                }
                self.unnumbered.pop_front();
            }
            let update = match self.unnumbered.front() {
                Some((t, _)) if *t == ticket => self.unnumbered.pop_front().map(|(_, u)| u),
                _ => None,
            };
            if let Some(waiter) = self.waiters.remove(&ticket) {
                let _ = waiter.send(seq);
            }
            // 0: the document was deleted under the write; nothing was logged.
            if seq <= 0 {
                continue;
            }
            self.mark(seq);
            if let Some(update) = update {
                self.cluster.publish_update(name, seq, update);
            }
        }
    }

    /// Records that log row `seq` is in the document.
    fn mark(&mut self, seq: i64) {
        if seq <= self.contiguous {
            return;
        }
        self.above.insert(seq);
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        self.known = self.known.max(seq);
        self.note_gap();
    }

    fn note_gap(&mut self) {
        if self.known() > self.contiguous {
            self.gap_since.get_or_insert_with(Instant::now);
        } else {
            self.gap_since = None;
        }
    }

    /// Another node relayed log row `seq`: whether the document lacks it (then the caller
    /// applies it; it is marked held).
    pub(super) fn relayed(&mut self, seq: i64) -> bool {
        if seq <= self.contiguous || self.above.contains(&seq) {
            return false;
        }
        self.mark(seq);
        true
    }

    /// A row read back from the log: marked held (the caller applies it; applying a row the
    /// document has changes nothing).
    pub(super) fn read_back(&mut self, seq: i64) {
        self.mark(seq);
    }

    /// The log is known to reach `seq`.
    pub(super) fn log_at(&mut self, seq: i64) {
        self.known = self.known.max(seq);
        self.note_gap();
    }

    /// Whether rows should be read from the log now: some are missing, for longer than
    /// [`GAP_GRACE`] (or at once when `now_anyway`), and no read is in flight. Returns the
    /// range `(after, upto]` to read.
    pub(super) fn due(&self, now: Instant, now_anyway: bool) -> Option<(i64, i64)> {
        let since = self.gap_since?;
        let ripe = now_anyway || now.duration_since(since) >= GAP_GRACE;
        (ripe && !self.catching_up).then_some((self.contiguous, self.known()))
    }

    /// When the open gap (if any) is due to be read.
    pub(super) fn gap_deadline(&self) -> Option<Instant> {
        self.gap_since
            .filter(|_| !self.catching_up)
            .map(|t| t + GAP_GRACE)
    }

    /// A read of missing rows ended; rows up to `upto` were all in the log then (those
    /// not returned were pruned or belong to a deleted document): they count as held.
    pub(super) fn read_done(&mut self, upto: i64) {
        self.catching_up = false;
        if upto > self.contiguous {
            self.above.retain(|s| *s > upto);
            self.contiguous = upto;
            while self.above.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        }
        self.note_gap();
    }

    /// Tells the other nodes' change feeds that rows `after + 1 ..= upto` are durable.
    pub(super) fn announce(&self, name: &str, after: i64, upto: i64) {
        self.cluster.publish_control(Control::Durable {
            doc: name.to_string(),
            after,
            upto,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(loaded: i64) -> Replica {
        let cluster = Cluster::new("redis://127.0.0.1:1", "test").expect("valid url");
        Replica::new(Arc::new(cluster), loaded)
    }

    #[test]
    fn rows_in_any_order_close_the_gap() {
        let mut r = replica(10);
        assert!(r.relayed(12));
        assert_eq!((r.contiguous(), r.known()), (10, 12));
        assert!(!r.is_prefix());
        assert!(r.gap_deadline().is_some());
        assert!(!r.relayed(12), "a duplicate is not applied twice");
        assert!(r.relayed(11));
        assert_eq!(r.contiguous(), 12);
        assert!(r.is_prefix() && r.gap_deadline().is_none());
        assert!(!r.relayed(5), "old rows are ignored");
    }

    #[test]
    fn own_rows_are_numbered_in_order_and_answered() {
        let mut r = replica(0);
        r.accepted(1, Bytes::from_static(b"a"));
        r.accepted(2, Bytes::from_static(b"b"));
        let answer = r.wait_for_number(2);
        assert!(!r.is_prefix());
        r.assigned.lock().unwrap().extend([(1, 3), (2, 4)]);
        r.take_numbers("d");
        // Rows 1 and 2 came from other nodes and are still missing.
        assert_eq!((r.contiguous(), r.known()), (0, 4));
        let now = Instant::now();
        assert_eq!(r.due(now, true), Some((0, 4)));
        r.catching_up = true;
        assert_eq!(r.due(now, true), None);
        r.read_back(1);
        r.read_back(2);
        r.read_done(4);
        assert_eq!(r.contiguous(), 4);
        assert!(r.is_prefix());
        assert_eq!(answer.blocking_recv(), Ok(4));
    }

    #[test]
    fn the_log_reaching_further_is_a_gap_due_at_once_when_asked() {
        let mut r = replica(3);
        r.log_at(3);
        assert_eq!(r.due(Instant::now(), true), None);
        r.log_at(7);
        assert_eq!(r.due(Instant::now(), true), Some((3, 7)));
        assert_eq!(
            r.due(Instant::now(), false),
            None,
            "within the grace period"
        );
        r.read_done(7);
        assert_eq!((r.contiguous(), r.due(Instant::now(), true)), (7, None));
    }
}
