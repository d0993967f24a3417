//! The bound on yrs' pending updates: blocks that arrived before the blocks they depend on.
//!
//! yrs keeps such blocks (and deletions of items it does not know yet) in its store, in
//! memory only, until the gap is filled: they are not logged, not relayed and not in the
//! storage backlog. With one durable server an honest client rarely causes any (everything it
//! received was durable before it was relayed, and its own edits arrive in order over one
//! socket); a small amount appears when an edit overtakes its predecessor across a reconnect.
//! An attacker, though, can send endless updates that depend on nothing that exists, so the
//! pending set of each document is bounded.

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, TransactionMut, Update, WriteTxn};

/// What applying one update did.
#[derive(Debug)]
pub(crate) struct Integrated {
    /// The change it made, encoded as one update; `None`: nothing new.
    pub changed: Option<Vec<u8>>,
    /// Its missing-dependency part would have taken the document past the bound; that part
    /// was dropped (anything it made integrable is in `changed`) and the sender must be
    /// refused.
    pub pending_refused: bool,
    /// Encoded size of what the document holds pending afterwards.
    pub pending_bytes: u64,
}

/// The updates yrs holds as pending in `txn`'s document, encoded (v1): the blocks still
/// missing dependencies, and the deletions of items not yet known. Empty when none.
pub(crate) fn encode_pending<T: ReadTxn>(txn: &T) -> Vec<Vec<u8>> {
    let store = txn.store();
    let mut parts = Vec::new();
    if let Some(pending) = store.pending_update() {
        parts.push(pending.update.encode_v1());
    }
    if let Some(ds) = store.pending_ds() {
        // An update with no structs (a zero count) and this delete set.
        let mut bytes = vec![0];
        bytes.extend_from_slice(&ds.encode_v1());
        parts.push(bytes);
    }
    parts
}

fn total(parts: &[Vec<u8>]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

/// Applies `update` to `doc` in one transaction, keeping the pending set within
/// `max_pending` encoded bytes. `pending_before` is what the previous call reported (0 means
/// nothing is pending, which skips encoding the set).
///
/// An update that would take the set past the bound has its pending part dropped: the set
/// is put back as it was before (earlier blocks it made integrable stay integrated, and are in
/// `changed`). Nothing is lost: the server's state vector never covered the dropped blocks,
/// so their author resends them when it reconnects and resyncs.
///
/// The caller guards against panics (yrs has assertions on decoded data).
pub(crate) fn integrate(
    doc: &Doc,
    held: &mut Held,
    update: Update,
    pending_before: u64,
    max_pending: u64,
) -> Result<Integrated, yrs::error::UpdateError> {
    integrate_known(doc, held, update, None, pending_before, max_pending)
}

/// [`integrate`] given the document's current state vector when the caller has it (`known`):
/// building one walks every client of the document, and the room builds it for each update
/// already (the client-id ownership check).
pub(crate) fn integrate_known(
    doc: &Doc,
    held: &mut Held,
    update: Update,
    known: Option<&StateVector>,
    pending_before: u64,
    max_pending: u64,
) -> Result<Integrated, yrs::error::UpdateError> {
    let mut txn = doc.transact_mut();
    let past = match known {
        Some(known) => starts_past(known, &update),
        None => starts_past(&txn.state_vector(), &update),
    };
    if past {
        let bytes = update.encode_v1();
        if pending_before + bytes.len() as u64 > max_pending {
            return Ok(Integrated {
                changed: None,
                pending_refused: true,
                pending_bytes: pending_before,
            });
        }
        held.bytes += bytes.len() as u64;
        held.updates.push(bytes);
        return Ok(Integrated {
            changed: None,
            pending_refused: false,
            pending_bytes: pending_before + held.updates.last().map_or(0, |b| b.len() as u64),
        });
    }
    // Only encoded when something is pending already (rare), to be put back on refusal.
    let before = if pending_before > 0 {
        encode_pending(&txn)
    } else {
        Vec::new()
    };
    apply(&mut txn, update)?;
    held.release(&mut txn)?;
    let mut pending = encode_pending(&txn);
    let pending_refused = total(&pending) + held.bytes > max_pending;
    if pending_refused {
        txn.prune_pending();
        for bytes in &before {
            // Our own encoding of blocks that were accepted once: it decodes.
            if let Ok(earlier) = Update::decode_v1(bytes) {
                txn.apply_update(earlier)?;
            }
        }
        pending = encode_pending(&txn);
    }
    Ok(Integrated {
        changed: txn.has_changes().then(|| txn.encode_update_v1()),
        pending_refused,
        pending_bytes: total(&pending) + held.bytes,
    })
}

/// Updates held back because they start past the document's clock for one of their
/// clients (an edit that overtook its predecessor, typically across a reconnect).
///
/// yrs would integrate such structs at once when their origins exist, leaving a hole in the
/// client's clocks; an update that later spans the hole's end makes yrs 0.28 free a struct it
/// still points to (a heap-use-after-free the update_admission fuzz target found). So they
/// wait here, counted in the pending bound, until the clocks before them arrived.
#[derive(Debug, Default)]
pub(crate) struct Held {
    updates: Vec<Vec<u8>>,
    bytes: u64,
}

impl Held {
    /// Applies every held update whose clocks now follow the document's, until none does.
    fn release(&mut self, txn: &mut TransactionMut) -> Result<(), yrs::error::UpdateError> {
        while !self.updates.is_empty() {
            let known = txn.state_vector();
            let ready = self
                .updates
                .iter()
                .position(|bytes| Update::decode_v1(bytes).is_ok_and(|u| !starts_past(&known, &u)));
            let Some(at) = ready else {
                return Ok(());
            };
            let bytes = self.updates.remove(at);
            self.bytes -= bytes.len() as u64;
            // Our own encoding of an update that decoded once.
            if let Ok(update) = Update::decode_v1(&bytes) {
                apply(txn, update)?;
            }
        }
        Ok(())
    }
}

/// Whether some client's structs in `update` start past the document's clock for it (`known`:
/// the document's state vector).
fn starts_past(known: &StateVector, update: &Update) -> bool {
    update
        .state_vector_lower()
        .iter()
        .any(|(client, &start)| start > known.get(client))
}

/// Applies one update.
///
/// yrs merges a new pending part into the old one; when both hold structs of one client over
/// the same clocks (the same ids with different content: no honest client sends that, a
/// resend carries the same structs), the merged set is inconsistent, so the old pending part
/// is dropped first: it was never acknowledged, and its author resends it on its next sync.
fn apply(txn: &mut TransactionMut, update: Update) -> Result<(), yrs::error::UpdateError> {
    let overlapping = txn
        .store()
        .pending_update()
        .is_some_and(|p| clocks_overlap(&p.update, &update));
    if overlapping {
        txn.prune_pending();
    }
    txn.apply_update(update)
}

/// Whether `a` and `b` hold structs of one client at the same clocks (GC ranges included).
fn clocks_overlap(a: &Update, b: &Update) -> bool {
    !a.insertions(true).intersect(&b.insertions(true)).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edits(n: usize, chunk: usize) -> Vec<Vec<u8>> {
        let doc = Doc::with_client_id(77);
        let text = doc.get_or_insert_text("t");
        (0..n)
            .map(|_| {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, &"x".repeat(chunk));
                txn.encode_update_v1()
            })
            .collect()
    }

    fn apply(doc: &Doc, bytes: &[u8], before: u64, max: u64) -> Integrated {
        thread_local!(static HELD: std::cell::RefCell<Held> = Default::default());
        HELD.with(|held| {
            integrate(
                doc,
                &mut held.borrow_mut(),
                Update::decode_v1(bytes).unwrap(),
                before,
                max,
            )
            .unwrap()
        })
    }

    #[test]
    fn pending_is_measured_and_drains() {
        let doc = Doc::new();
        let e = edits(3, 10);
        let r = apply(&doc, &e[2], 0, 1 << 20);
        assert!(r.changed.is_none() && !r.pending_refused && r.pending_bytes > 0);
        let r = apply(&doc, &e[1], r.pending_bytes, 1 << 20);
        assert!(r.changed.is_none() && r.pending_bytes > 0);
        let r = apply(&doc, &e[0], r.pending_bytes, 1 << 20);
        assert!(r.changed.is_some());
        assert_eq!(r.pending_bytes, 0);
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()).len(), 30);
    }

    /// Updates of a client whose pending structs claim the same clocks with other content
    /// (what the update_admission fuzz target found: freed memory read by yrs while
    /// integrating the merged pending set).
    #[test]
    fn pending_structs_claimed_twice_are_dropped_not_merged() {
        let frames: [&[u8]; 3] = [
            b"\x01\x01\x0e\x0b\x84\x01\x01\x07edit 2d\x00",
            b"\x01\x01\x0e\x07\x84\x0e\x06\x07edmt 1 \x00",
            b"\x01\x01\x0e\x00\x04\x01\x01t\x07edit 0 \x00",
        ];
        let doc = Doc::new();
        let first = apply(&doc, frames[0], 0, 1 << 20);
        assert!(first.changed.is_none() && first.pending_bytes > 0);
        let second = apply(&doc, frames[1], first.pending_bytes, 1 << 20);
        assert!(second.changed.is_none() && second.pending_bytes > 0);
        let third = apply(&doc, frames[2], second.pending_bytes, 1 << 20);
        assert!(third.changed.is_some());
        assert_eq!(third.pending_bytes, 0);
        // Clocks 11..14 were claimed twice: the first struct to integrate keeps them, the
        // rest of the other continues after it (yrs' rule for duplicate ids).
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()), "edit 0 edmt 1 t 2d");
    }

    /// The honest overlap: an edit overtook its predecessor across a reconnect (pending),
    /// then the client resends everything. Dropping the pending part loses nothing.
    #[test]
    fn a_resend_over_pending_structs_loses_nothing() {
        let source = Doc::with_client_id(77);
        let e = {
            let text = source.get_or_insert_text("t");
            let mut out = Vec::new();
            for chunk in ["abc", "def", "ghi"] {
                let mut txn = source.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, chunk);
                out.push(txn.encode_update_v1());
            }
            out
        };
        let doc = Doc::new();
        let r = apply(&doc, &e[2], 0, 1 << 20);
        assert!(r.pending_bytes > 0);
        let all = source
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let r = apply(&doc, &all, r.pending_bytes, 1 << 20);
        assert_eq!(r.pending_bytes, 0);
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()), "abcdefghi");
    }

    #[test]
    fn past_the_bound_the_new_part_is_dropped_and_the_old_kept() {
        let doc = Doc::new();
        let e = edits(4, 1000);
        let first = apply(&doc, &e[2], 0, 1500);
        assert!(!first.pending_refused);
        let r = apply(&doc, &e[3], first.pending_bytes, 1500);
        assert!(r.pending_refused);
        assert_eq!(r.pending_bytes, first.pending_bytes);
        // The gap filled: what was kept integrates, what was dropped is simply missing.
        apply(&doc, &e[0], r.pending_bytes, 1500);
        let r = apply(&doc, &e[1], r.pending_bytes, 1500);
        assert_eq!(r.pending_bytes, 0);
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()).len(), 3000);
    }
}
