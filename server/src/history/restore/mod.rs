//! Restoring a document to another state (a version, or an imported update with
//! `mode=replace`) by ONE new forward change.
//!
//! Clients connected to the live document must converge without reloading, offline clients must
//! merge with the restore when they come back, and the restore must itself be a change in the
//! history (restoring to the point before it undoes it). So nothing is rewritten: the live
//! document gets one ordinary transaction that edits its content into the target's, and the
//! room logs and relays that transaction's update like any client's.
//!
//! The edit is minimal and keeps identities, because collaborators' cursors, comments anchored to
//! ranges (sticky indexes) and concurrent typing hang on CRDT items: an unchanged character,
//! paragraph, map entry or nested type stays the same item, and only the differences are deleted
//! and inserted.
//!
//! - Text (`Y.Text`, `Y.XmlText`): a character diff (Myers, with a line pass first on long texts)
//!   applied as one delta: deletes, inserts carrying the target's formatting, and re-formatting
//!   of kept ranges whose attributes differ.
//! - Lists (`Y.Array`, the children of `Y.XmlFragment` / `Y.XmlElement`): items are compared by
//!   a structural fingerprint; equal items are kept (LCS), and within each changed stretch items
//!   of the same kind (same element tag, both texts, both maps...) are paired by similarity and
//!   edited in place recursively; the rest are deleted or inserted as deep copies.
//! - Keyed (`Y.Map`, XML attributes): changed keys are set (nested types of the same kind are
//!   edited in place), absent keys removed.
//!
//! Afterwards every root is compared with the target by fingerprint; one that still differs (a
//! bug here, or content the diff does not model) is emptied and filled again from scratch, so
//! the result holds the target's content or the restore fails.
//!
//! The parts: [`restorer`] walks both documents and edits the live one (text, keyed and list
//! edits in its submodules), [`fingerprint`] says whether two values hold the same content,
//! [`roots`] reads and empties roots and lists safely, and [`seq_diff`] finds the common runs
//! of two sequences (characters, words, lines or list items).

mod fingerprint;
mod restorer;
mod roots;
mod seq_diff;

use yrs::{Doc, Transact};

use super::kinds::root_kinds_in;
use super::{HistoryError, guard};
use restorer::Restorer;

/// Makes `current`'s content equal to `target`'s, as ONE new forward transaction on `current`,
/// and returns that transaction's update (v1), or `None` when the content already matched.
///
/// `current` is the live document (the room's); `target` is the state to go back to (a
/// reconstructed version, or an imported document). Every root of either document is
/// covered: roots only in `current` are emptied, the others get `target`'s content, edited in
/// place with minimal changes (see the module documentation). `target` is only read.
///
/// The update must be logged and relayed like any client update: the transaction is already
/// applied to `current` when this returns.
///
/// Errors, and what they mean for `current`:
/// - [`HistoryError::Apply`]: nothing was done — `current` or `target` has a transaction open
///   (or they are the same document), or `target` holds content yrs cannot read safely (see
///   [`roots::items`]). Every such check runs before the first change.
/// - [`HistoryError::Panicked`]: yrs panicked part-way. A transaction interrupted by a panic
///   still commits what it did, so `current` may hold part of the restore that no update
///   describes: the caller must stop trusting its in-memory document (poison the room, reload
///   it from storage).
pub(crate) fn restore_into(current: &Doc, target: &Doc) -> Result<Option<Vec<u8>>, HistoryError> {
    restore_roots_into(current, target, None)
}

/// [`restore_into`] limited to the roots named in `only` (all roots when `None`): the other
/// roots of `current` are left as they are, whatever `target` holds for them. Setting a few
/// fields of a document (the HTTP content API) must not revert what others wrote elsewhere.
pub(crate) fn restore_roots_into(
    current: &Doc,
    target: &Doc,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<Option<Vec<u8>>, HistoryError> {
    guard("restoring a document", || {
        // Both transactions are taken with `try_`: restoring a document into itself (or while
        // someone holds a transaction) must fail, not deadlock.
        let target_txn = target
            .try_transact()
            .map_err(|_| refuse("the target document has a transaction open"))?;
        let mut restorer = Restorer::new(&target_txn, current.offset_kind());
        let mut target_roots = root_kinds_in(&target_txn);
        if let Some(only) = only {
            target_roots.retain(|(name, _)| only.contains(&**name));
        }
        if !restorer.target_readable(&target_roots) {
            return Err(refuse(
                "the target holds a list with text items, which yrs cannot read safely",
            ));
        }
        let mut txn = current
            .try_transact_mut()
            .map_err(|_| refuse("the live document has a transaction open"))?;
        // From here on nothing returns an error: changes made in `txn` are committed whatever
        // happens, so they must reach the caller as an update.
        restorer.restore_roots(&mut txn, target_roots, only);
        // Commit before encoding: committing may delete redundant formatting marks, and those
        // deletions belong in the update.
        txn.commit();
        if txn.has_changes() {
            Ok(Some(txn.encode_update_v1()))
        } else {
            Ok(None)
        }
    })
}

/// The error for a restore refused before any change.
fn refuse(what: &'static str) -> HistoryError {
    HistoryError::Apply {
        index: 0,
        reason: format!("cannot restore: {what}"),
    }
}

#[cfg(test)]
mod tests;
