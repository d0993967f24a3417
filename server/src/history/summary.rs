//! What each change did, for the timeline: per root type, how many characters (UTF-16 units,
//! as Yjs counts them; an embed or an element counts 1) it inserted and deleted, and which Yjs
//! clients' items it carries.
//!
//! The timeline walks a page of updates in order on one document, applying each and reporting
//! what it changed. How the counting works:
//! - **Text and XML roots** are counted exactly from the transaction that applied the update,
//!   in an after-transaction callback (it runs before garbage collection, so deleted content
//!   is still readable). yrs lists every type that changed, each followed by its ancestors up
//!   to its root; for each directly changed type, a snapshot-aware walk of its items tells what
//!   became visible (clock past the state before the update) and what became invisible (in the
//!   transaction's delete set). That walk also reaches into a deleted paragraph, so joining or
//!   deleting whole paragraphs counts their characters, not just "1 element". The walk is
//!   linear in the changed type's items — for a keystroke in a TipTap document, one paragraph.
//!   A keystroke in a large `Y.Text` root would make that the whole text (~0.5 ms for the
//!   automerge-paper document), so when a transaction changed one text root and nothing else,
//!   the count comes from the update's own structs and the root's change in length instead
//!   (`FastPath`; ~10 µs).
//! - **Map and array roots** are counted from deep-observer events: map keys set or removed and
//!   array elements added or removed count 1 each, characters in nested texts count as above
//!   (content of deleted nested types is not looked into).
//! - A root that had no content before the update (or did not exist) counts everything it
//!   holds afterwards as inserted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crdt_store::LogRow;
use serde::Serialize;
use yrs::branch::{BranchID, BranchPtr};
use yrs::types::text::{ChangeKind, YChange};
use yrs::types::{Change as ListChange, Delta, EntryChange, Event, Events};
use yrs::{
    Any, ArrayRef, DeepObservable, Doc, IdSet, Map, MapRef, OffsetKind, Out, ReadTxn, Snapshot,
    StateVector, Text, TextRef, Transact, TransactionMut, Update,
};

use super::json::MAX_DEPTH;
use super::kinds::{RootKind, kind_of_root, list_values, root_kinds_in};
use super::structs::{self, Kind, Struct};
use super::{HistoryError, decode, guard};

/// What one change did to one root type: characters inserted and deleted (UTF-16 units as
/// Yjs counts; an embed or an element counts 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct RootChange {
    /// The root's kind.
    pub kind: RootKind,
    /// Characters (UTF-16 units; embeds and elements count 1) that became visible.
    pub inserted: u64,
    /// Characters that were visible before and no longer are.
    pub deleted: u64,
}

/// What one update did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ChangeSummary {
    /// Yjs client ids whose items the update carries, ascending. An update that only deletes
    /// carries no items (a delete set names the deleted items' owners, not the deleter).
    pub clients: Vec<u64>,
    /// Per root type that changed, by name. A root whose only change was formatting or an
    /// attribute appears with zero counts.
    pub roots: BTreeMap<String, RootChange>,
}

/// Applies `update` to `before` (which is thereby advanced to the next state) and reports
/// what it changed.
///
/// `before` should have been built with `skip_gc = true` ([`super::reconstruct`]) when it will
/// be walked further; the counting itself works either way. On error the document may hold a
/// partly applied update and should be dropped.
#[cfg(test)]
pub(crate) fn summarize(before: &Doc, update: &[u8]) -> Result<ChangeSummary, HistoryError> {
    let mut tracker = Tracker::new(before)?;
    let summary = tracker.apply(update, 0);
    tracker.close();
    summary
}

/// One change of the timeline, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Change {
    /// Log sequence number.
    #[schema(minimum = 1)]
    pub seq: i64,
    /// When the server accepted it (RFC 3339 with milliseconds in JSON).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    pub time: SystemTime,
    /// Bytes of the stored update.
    #[schema(minimum = 0)]
    pub size: i64,
    /// Who sent it, when known: the token's sub; admin:restore, admin:import etc. for admin
    /// changes.
    #[schema(required = true)]
    pub author: Option<String>,
    /// Yjs client ids whose items the update carries.
    pub clients: Vec<u64>,
    /// Per root type that changed, by root name.
    pub summary: BTreeMap<String, RootChange>,
}

/// Summarizes consecutive log `rows` on `before`, which must hold the state just before the
/// first of them (and is advanced past the last). One error fails the page: a row that cannot
/// be applied leaves every later state unknown.
pub(crate) fn summarize_rows(before: &Doc, rows: &[LogRow]) -> Result<Vec<Change>, HistoryError> {
    let mut tracker = Tracker::new(before)?;
    let mut changes = Vec::with_capacity(rows.len());
    let mut outcome = Ok(());
    for (index, row) in rows.iter().enumerate() {
        match tracker.apply(&row.data, index) {
            Ok(summary) => changes.push(Change {
                seq: row.seq,
                time: row.created_at,
                size: row.size,
                author: row.author.clone(),
                clients: summary.clients,
                summary: summary.roots,
            }),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    tracker.close();
    outcome.map(|()| changes)
}

/// Consecutive changes by one author, merged for `group=session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// First change's sequence number.
    #[schema(minimum = 1)]
    pub from_seq: i64,
    /// Last change's sequence number.
    #[schema(minimum = 1)]
    pub to_seq: i64,
    /// Time of the first change.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    pub start: SystemTime,
    /// Time of the last change.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-25T18:49:10.123Z")]
    pub end: SystemTime,
    /// The author of every change in the session.
    #[schema(required = true)]
    pub author: Option<String>,
    /// Number of changes merged.
    #[schema(minimum = 1)]
    pub changes: usize,
    /// Total bytes of their updates.
    #[schema(minimum = 0)]
    pub size: i64,
    /// Union of their client ids, ascending.
    pub clients: Vec<u64>,
    /// Per root: the sum of the changes' counts.
    pub summary: BTreeMap<String, RootChange>,
}

/// Merges consecutive changes by the same author that are less than `gap` apart (each
/// compared with the previous change, so a steady typist's session can last hours). Changes
/// are taken in the order given; times that go backwards (descending pages) are compared by
/// their distance.
pub(crate) fn group_sessions(changes: &[Change], gap: Duration) -> Vec<Session> {
    let mut sessions: Vec<Session> = Vec::new();
    let mut last_time: Option<SystemTime> = None;
    for change in changes {
        let close = |prev: SystemTime| {
            let apart = change
                .time
                .duration_since(prev)
                .or_else(|_| prev.duration_since(change.time))
                .unwrap_or_default();
            apart < gap
        };
        let joins = match (sessions.last(), last_time) {
            (Some(s), Some(prev)) => s.author == change.author && close(prev),
            _ => false,
        };
        last_time = Some(change.time);
        match sessions.last_mut() {
            Some(s) if joins => {
                s.from_seq = s.from_seq.min(change.seq);
                s.to_seq = s.to_seq.max(change.seq);
                s.start = s.start.min(change.time);
                s.end = s.end.max(change.time);
                s.changes += 1;
                s.size += change.size;
                s.clients.extend(&change.clients);
                s.clients.sort_unstable();
                s.clients.dedup();
                for (name, c) in &change.summary {
                    s.summary
                        .entry(name.clone())
                        .and_modify(|t| {
                            t.inserted += c.inserted;
                            t.deleted += c.deleted;
                        })
                        .or_insert(*c);
                }
            }
            _ => sessions.push(Session {
                from_seq: change.seq,
                to_seq: change.seq,
                start: change.time,
                end: change.time,
                author: change.author.clone(),
                changes: 1,
                size: change.size,
                clients: change.clients.clone(),
                summary: change.summary.clone(),
            }),
        }
    }
    sessions
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Key of this module's observers; yrs registers observers by key.
const OBSERVER_KEY: &str = "tandem-history-summary";

/// Counts collected by the observers during one transaction.
#[derive(Default)]
struct Tally {
    /// Per root name: (inserted, deleted).
    roots: HashMap<Arc<str>, (u64, u64)>,
    /// A panic or inconsistency inside a callback (callbacks cannot return errors).
    failed: bool,
}

impl Tally {
    fn add(&mut self, root: &Arc<str>, inserted: u64, deleted: u64) {
        let entry = self.roots.entry(root.clone()).or_default();
        entry.0 += inserted;
        entry.1 += deleted;
    }
}

/// Applies updates to a document one by one, counting what each changes. Holds the
/// observers that do the counting; [`Tracker::close`] removes them.
struct Tracker<'d> {
    doc: &'d Doc,
    tally: Arc<Mutex<Tally>>,
    /// Kinds of the roots that had content (or a declared type) before the current update.
    kinds: Arc<Mutex<HashMap<Arc<str>, RootKind>>>,
    /// Map and array roots with a deep observer.
    observed: HashSet<Arc<str>>,
    /// What the fast count of a text root needs about the current update.
    fast: Arc<Mutex<FastPath>>,
}

/// For counting a change to a large `Y.Text` without walking it: the update's structs and each
/// text root's length before it. With both, the characters inserted are the update's character
/// structs that the transaction integrated and did not delete again, and the characters deleted
/// follow from the change in length. Used when the transaction changed one text root and
/// nothing else (a keystroke); anything else takes the walk.
#[derive(Default, Clone)]
struct FastPath {
    /// The update's structs; `None` disables the fast path for this update.
    structs: Option<Arc<Vec<Struct>>>,
    /// Visible length (UTF-16 units) of each text root before the update.
    lens_before: HashMap<Arc<str>, u32>,
}

impl<'d> Tracker<'d> {
    fn new(doc: &'d Doc) -> Result<Self, HistoryError> {
        let tracker = Tracker {
            doc,
            tally: Arc::default(),
            kinds: Arc::default(),
            observed: HashSet::new(),
            fast: Arc::default(),
        };
        let tally = tracker.tally.clone();
        let kinds = tracker.kinds.clone();
        let fast = tracker.fast.clone();
        // Lengths are compared in UTF-16 units, the unit Yjs counts in.
        let utf16 = doc.offset_kind() == OffsetKind::Utf16;
        doc.observe_after_transaction(OBSERVER_KEY, move |txn| {
            let kinds = kinds.lock().map(|k| k.clone()).unwrap_or_default();
            let fast = match fast.lock() {
                Ok(f) if utf16 => f.clone(),
                _ => FastPath::default(),
            };
            let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                count_transaction(txn, &kinds, &fast)
            }));
            if let Ok(mut tally) = tally.lock() {
                match counted {
                    Ok(Some(counts)) => {
                        for (root, (ins, del)) in counts {
                            tally.add(&root, ins, del);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => tally.failed = true,
                }
            }
        })
        .map_err(|_| HistoryError::Busy)?;
        Ok(tracker)
    }

    /// Types the roots that have content, and puts deep observers on map and array roots.
    /// Runs with no transaction open (typing a root opens one).
    fn prepare(&mut self) {
        let kinds = {
            let txn = self.doc.transact();
            let undefined: HashSet<&str> = txn
                .root_refs()
                .filter(|(_, out)| matches!(out, Out::UndefinedRef(_)))
                .map(|(name, _)| name)
                .collect();
            root_kinds_in(&txn)
                .into_iter()
                .map(|(name, kind)| {
                    let needs_type = undefined.contains(&*name);
                    (name, kind, needs_type)
                })
                .collect::<Vec<_>>()
        };
        let mut known = HashMap::with_capacity(kinds.len());
        for (name, kind, needs_type) in kinds {
            // Undefined roots produce no change events; giving them their type makes the
            // changes inside them visible to the callbacks.
            if needs_type {
                match kind {
                    RootKind::Text => drop(self.doc.get_or_insert_text(name.clone())),
                    RootKind::Xml => drop(self.doc.get_or_insert_xml_fragment(name.clone())),
                    RootKind::Map => drop(self.doc.get_or_insert_map(name.clone())),
                    RootKind::Array => drop(self.doc.get_or_insert_array(name.clone())),
                }
            }
            if matches!(kind, RootKind::Map | RootKind::Array) && !self.observed.contains(&name) {
                self.observe_collection(name.clone(), kind);
                self.observed.insert(name.clone());
            }
            known.insert(name, kind);
        }
        if let Ok(mut kinds) = self.kinds.lock() {
            *kinds = known;
        }
    }

    fn observe_collection(&self, name: Arc<str>, kind: RootKind) {
        let tally = self.tally.clone();
        let root = name.clone();
        let callback = move |txn: &TransactionMut, events: &Events| {
            let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                count_events(txn, events)
            }));
            if let Ok(mut tally) = tally.lock() {
                match counted {
                    Ok((ins, del)) => tally.add(&root, ins, del),
                    Err(_) => tally.failed = true,
                }
            }
        };
        if kind == RootKind::Map {
            self.doc
                .get_or_insert_map(name)
                .observe_deep(OBSERVER_KEY, callback);
        } else {
            self.doc
                .get_or_insert_array(name)
                .observe_deep(OBSERVER_KEY, callback);
        }
    }

    /// Applies one update and reports what it changed.
    fn apply(&mut self, bytes: &[u8], index: usize) -> Result<ChangeSummary, HistoryError> {
        let update = decode(bytes, index)?;
        let clients = clients_of(&update);
        self.prepare();
        if let Ok(mut tally) = self.tally.lock() {
            *tally = Tally::default();
        }
        // Structs waiting for missing predecessors may be integrated by this update without
        // being part of it; the walk counts those, the fast path would not.
        let pending = self.doc.transact().store().pending_update().is_some();
        let fast = FastPath {
            structs: if pending {
                None
            } else {
                structs::scan(bytes).ok().map(Arc::new)
            },
            lens_before: self.text_lengths(),
        };
        if let Ok(mut f) = self.fast.lock() {
            *f = fast;
        }
        let doc = self.doc;
        guard("applying an update", || {
            let mut txn = doc.transact_mut();
            txn.apply_update(update).map_err(|e| HistoryError::Apply {
                index,
                reason: e.to_string(),
            })
        })?;
        let tally = self
            .tally
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .map_err(|_| HistoryError::Panicked("counting a change"))?;
        if tally.failed {
            return Err(HistoryError::Panicked("counting a change"));
        }
        let kinds_before = self.kinds.lock().map(|k| k.clone()).unwrap_or_default();
        let mut roots = BTreeMap::new();
        for (name, (inserted, deleted)) in tally.roots {
            if let Some(kind) = kinds_before.get(&name) {
                roots.insert(
                    name.to_string(),
                    RootChange {
                        kind: *kind,
                        inserted,
                        deleted,
                    },
                );
            }
        }
        // Roots that were empty (undefined, so silent) before: all they hold is new.
        let txn = doc.transact();
        for (name, out) in txn.root_refs() {
            if kinds_before.contains_key(name) {
                continue;
            }
            let Some(branch) = out.try_branch().map(BranchPtr::from) else {
                continue;
            };
            let Some(kind) = kind_of_root(&txn, out) else {
                continue;
            };
            let inserted = content_size(&txn, branch, kind, 0);
            roots.insert(
                name.to_string(),
                RootChange {
                    kind,
                    inserted,
                    deleted: 0,
                },
            );
        }
        Ok(ChangeSummary { clients, roots })
    }

    /// Visible length of every text root.
    fn text_lengths(&self) -> HashMap<Arc<str>, u32> {
        let kinds = self.kinds.lock().map(|k| k.clone()).unwrap_or_default();
        let txn = self.doc.transact();
        txn.root_refs()
            .filter(|(name, _)| kinds.get(*name) == Some(&RootKind::Text))
            .filter_map(|(name, out)| Some((Arc::from(name), out.try_branch()?.content_len)))
            .collect()
    }

    /// Removes the observers.
    fn close(self) {
        let _ = self.doc.unobserve_after_transaction(OBSERVER_KEY);
        for name in &self.observed {
            let txn = self.doc.transact();
            let root = txn.root_refs().find(|(n, _)| *n == &**name).map(|(_, o)| o);
            drop(txn);
            match root {
                Some(Out::YMap(m)) => drop(m.unobserve_deep(OBSERVER_KEY)),
                Some(Out::YArray(a)) => drop(a.unobserve_deep(OBSERVER_KEY)),
                _ => {}
            }
        }
    }
}

/// Client ids whose items `update` carries.
fn clients_of(update: &Update) -> Vec<u64> {
    let mut clients: Vec<u64> = update
        .insertions(true)
        .client_ids()
        .map(|c| c.get())
        .collect();
    clients.sort_unstable();
    clients.dedup();
    clients
}

/// In the after-transaction callback: per text or XML root, what the transaction inserted and
/// deleted. `None` when nothing changed.
fn count_transaction(
    txn: &mut TransactionMut,
    kinds: &HashMap<Arc<str>, RootKind>,
    fast: &FastPath,
) -> Option<HashMap<Arc<str>, (u64, u64)>> {
    let changed: Vec<BranchPtr> = txn.changed_parent_types().to_vec();
    if changed.is_empty() {
        return None;
    }
    // `changed` lists each changed type followed by its ancestors up to its root, so a type
    // is directly changed when it comes first or right after a root.
    let mut direct: Vec<(BranchPtr, Arc<str>)> = Vec::new();
    let mut start: Option<BranchPtr> = None;
    for branch in changed {
        let first = *start.get_or_insert(branch);
        if let BranchID::Root(name) = branch.id() {
            if !direct.iter().any(|(b, _)| *b == first) {
                direct.push((first, name));
            }
            start = None;
        }
    }
    if let [(branch, root)] = direct.as_slice()
        && kinds.get(root) == Some(&RootKind::Text)
        && let Some(counts) = count_text_fast(txn, *branch, root, fast)
    {
        return Some(HashMap::from([(root.clone(), counts)]));
    }
    let before = txn.before_state().clone();
    let deleted = txn.delete_set().clone();
    let view = Views::new(before, txn.after_state().clone(), deleted);
    let mut counts: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
    for (branch, root) in direct {
        // A type deleted in this transaction (with its parent, or on its own) is counted
        // through its parent, which lists it as removed; counting it here too would count its
        // characters twice.
        if branch.is_deleted() {
            counts.entry(root).or_default();
            continue;
        }
        match kinds.get(&root) {
            Some(RootKind::Text) | Some(RootKind::Xml) => {
                let (ins, del) = view.count(txn, branch, 0);
                let entry = counts.entry(root).or_default();
                entry.0 += ins;
                entry.1 += del;
            }
            // Counted by their deep observers; listed so an attribute-only change shows.
            Some(_) => {
                counts.entry(root).or_default();
            }
            None => {}
        }
    }
    Some(counts)
}

/// (inserted, deleted) of a transaction that changed only the text root `root` (see
/// [`FastPath`]); `None` when the fast count does not apply.
fn count_text_fast(
    txn: &TransactionMut,
    branch: BranchPtr,
    root: &Arc<str>,
    fast: &FastPath,
) -> Option<(u64, u64)> {
    let structs = fast.structs.as_ref()?;
    let before = *fast.lens_before.get(root)?;
    // The changed branch must be the root itself, and no nested type may have been inserted
    // (its content would count differently).
    if !matches!(branch.id(), BranchID::Root(_)) || structs.iter().any(|s| s.kind == Kind::Type) {
        return None;
    }
    // Content going into a root that was empty before changes no type's events, so it would
    // be counted here as this root's: leave such updates to the walk.
    let stray = txn.root_refs().any(|(name, out)| match out {
        Out::UndefinedRef(b) => {
            &**root != name && (b.block_len > 0 || MapRef::from(b).len(txn) > 0)
        }
        _ => false,
    });
    if stray {
        return None;
    }
    let mut inserted: u64 = 0;
    // Per client: clock ranges the transaction integrated, and those of them it deleted.
    type Ranges = Vec<Range<u32>>;
    let mut clients: HashMap<yrs::ClientID, (Ranges, Ranges)> = HashMap::new();
    for s in structs.iter().filter(|s| s.kind == Kind::Countable) {
        let (integrated, gone) = clients.entry(s.client).or_insert_with(|| {
            let integrated = structs::ranges_of(txn.insert_set(), &s.client);
            let deleted = structs::ranges_of(txn.delete_set(), &s.client);
            let gone = structs::intersect(&integrated, &deleted);
            (integrated, gone)
        });
        let range = s.clock..s.clock.saturating_add(s.len);
        let visible = structs::covered(integrated, range.clone())
            .saturating_sub(structs::covered(gone, range));
        inserted += u64::from(visible);
    }
    let after = i64::from(branch.content_len);
    let deleted = inserted as i64 - (after - i64::from(before));
    let deleted = u64::try_from(deleted).ok()?;
    #[cfg(test)]
    FAST_COUNTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some((inserted, deleted))
}

/// How often the fast count was used (tests check that it is).
#[cfg(test)]
static FAST_COUNTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The two states around one transaction, as the snapshots yrs' item walk understands.
///
/// `after` sees everything except what the transaction deleted; `before` sees everything up to
/// the state before the transaction. Items deleted earlier look visible in both, which is
/// harmless: only items visible in exactly one of them are counted, and those are precisely
/// the transaction's insertions and deletions. Keeping the delete set this small makes the
/// snapshot walk cheap (yrs splits items along every range of it).
struct Views {
    before_sv: StateVector,
    deleted: IdSet,
    after: Snapshot,
    before: Snapshot,
}

impl Views {
    fn new(before: StateVector, after: StateVector, deleted: IdSet) -> Self {
        Views {
            after: Snapshot::new(after, deleted.clone()),
            before: Snapshot::new(before.clone(), IdSet::default()),
            before_sv: before,
            deleted,
        }
    }

    /// (inserted, deleted) among the direct items of `branch`, descending into nested types
    /// that were inserted or deleted as a whole.
    fn count(&self, txn: &mut TransactionMut, branch: BranchPtr, depth: usize) -> (u64, u64) {
        if depth > MAX_DEPTH {
            return (0, 0);
        }
        let chunks = TextRef::from(branch).diff_range(
            txn,
            Some(&self.after),
            Some(&self.before),
            YChange::identity,
        );
        let (mut ins, mut del) = (0u64, 0u64);
        for chunk in chunks {
            match chunk.insert {
                Out::Any(Any::String(s)) => {
                    let units = utf16_len(&s);
                    match chunk.ychange.map(|c| c.kind) {
                        Some(ChangeKind::Added) => ins += units,
                        Some(ChangeKind::Removed) => del += units,
                        None => {}
                    }
                }
                // An embed carries no id in the walk, so whether it is new cannot be told.
                Out::Any(_) => {}
                nested => {
                    let Some(child) = nested.try_branch().map(BranchPtr::from) else {
                        continue;
                    };
                    let BranchID::Nested(id) = child.id() else {
                        continue;
                    };
                    let existed = id.clock < self.before_sv.get(&id.client);
                    let weight = own_weight(&nested);
                    if self.deleted.contains(&id) {
                        if existed {
                            del += weight + self.count(txn, child, depth + 1).1;
                        }
                    } else if !existed {
                        ins += weight + out_size(txn, &nested, depth + 1);
                    }
                }
            }
        }
        (ins, del)
    }
}

/// UTF-16 length of a string, as Yjs measures text.
pub(crate) fn utf16_len(s: &str) -> u64 {
    s.chars().map(|c| c.len_utf16() as u64).sum()
}

/// What a nested type counts for itself: a text container is only its characters, anything
/// else (element, map, array, embed) counts 1.
fn own_weight(value: &Out) -> u64 {
    match value {
        Out::YText(_) | Out::YXmlText(_) => 0,
        _ => 1,
    }
}

/// Visible size of what a value holds (not counting the value itself).
fn out_size<T: ReadTxn>(txn: &T, value: &Out, depth: usize) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    match value {
        Out::YText(t) => u64::from(t.len(txn)),
        Out::YXmlText(t) => u64::from(t.len(txn)),
        Out::YXmlElement(e) => list_size(txn, &ArrayRef::from(super::branch_of(e)), depth),
        Out::YXmlFragment(f) => list_size(txn, &ArrayRef::from(super::branch_of(f)), depth),
        Out::YArray(a) => list_size(txn, a, depth),
        Out::YMap(m) => map_size(txn, m, depth),
        _ => 0,
    }
}

fn list_size<T: ReadTxn>(txn: &T, list: &ArrayRef, depth: usize) -> u64 {
    list_values(txn, super::branch_of(list))
        .iter()
        .map(|v| match v {
            // Characters of a text mistaken for a list (see `list_values`).
            Out::Any(Any::String(s)) => utf16_len(s),
            v => own_weight(v) + out_size(txn, v, depth + 1),
        })
        .sum()
}

fn map_size<T: ReadTxn>(txn: &T, map: &MapRef, depth: usize) -> u64 {
    map.iter(txn)
        .map(|(_, v)| own_weight(&v) + out_size(txn, &v, depth + 1))
        .sum()
}

/// Visible size of a root of a known kind.
fn content_size<T: ReadTxn>(txn: &T, branch: BranchPtr, kind: RootKind, depth: usize) -> u64 {
    match kind {
        RootKind::Text => u64::from(TextRef::from(branch).len(txn)),
        RootKind::Xml | RootKind::Array => list_size(txn, &ArrayRef::from(branch), depth),
        RootKind::Map => map_size(txn, &MapRef::from(branch), depth),
    }
}

/// (inserted, deleted) from the deep events of a map or array root.
fn count_events(txn: &TransactionMut, events: &Events) -> (u64, u64) {
    let (mut ins, mut del) = (0u64, 0u64);
    for event in events.iter() {
        match event {
            Event::Text(e) => text_delta(e.delta(txn), &mut ins, &mut del),
            Event::XmlText(e) => text_delta(e.delta(txn), &mut ins, &mut del),
            Event::Array(e) => list_delta(txn, e.delta(txn), &mut ins, &mut del),
            Event::XmlFragment(e) => list_delta(txn, e.delta(txn), &mut ins, &mut del),
            Event::Map(e) => {
                for change in e.keys(txn).values() {
                    match change {
                        EntryChange::Inserted(v) => ins += 1 + out_size(txn, v, 0),
                        EntryChange::Updated(_, v) => {
                            ins += 1 + out_size(txn, v, 0);
                            del += 1;
                        }
                        EntryChange::Removed(_) => del += 1,
                    }
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
    (ins, del)
}

fn text_delta(delta: &[Delta], ins: &mut u64, del: &mut u64) {
    for d in delta {
        match d {
            Delta::Inserted(Out::Any(Any::String(s)), _) => *ins += utf16_len(s),
            Delta::Inserted(_, _) => *ins += 1,
            Delta::Deleted(n) => *del += u64::from(*n),
            Delta::Retain(_, _) => {}
        }
    }
}

fn list_delta(txn: &TransactionMut, delta: &[ListChange], ins: &mut u64, del: &mut u64) {
    for c in delta {
        match c {
            ListChange::Added(values) => {
                for v in values {
                    *ins += own_weight(v) + out_size(txn, v, 0);
                }
            }
            ListChange::Removed(n) => *del += u64::from(*n),
            ListChange::Retain(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixture::{AUTHORS, generate, replay, tiptap_history};
    use crate::history::reconstruct;
    use yrs::{
        Array, MapPrelim, Text, TextPrelim, WriteTxn, Xml, XmlElementPrelim, XmlFragment,
        XmlTextPrelim,
    };

    fn utf16(s: &str) -> u64 {
        utf16_len(s)
    }

    #[test]
    fn text_counts_match_the_edits() {
        let edits = generate(800, 2, 11);
        let r = replay(&edits, "body", 0);
        let doc = reconstruct(None, std::iter::empty(), true).unwrap();
        let fast_before = FAST_COUNTS.load(std::sync::atomic::Ordering::Relaxed);
        let changes = summarize_rows(&doc, &r.rows).unwrap();
        let fast = FAST_COUNTS.load(std::sync::atomic::Ordering::Relaxed) - fast_before;
        // Every edit but the first (which creates the root) takes the fast count.
        assert!(fast >= edits.len() - 1, "fast count used {fast} times");
        assert_eq!(changes.len(), edits.len());
        for (i, (edit, change)) in edits.iter().zip(&changes).enumerate() {
            let before: Vec<char> = r.texts[i].chars().collect();
            let deleted: String = before[edit.pos..edit.pos + edit.del].iter().collect();
            let expect = RootChange {
                kind: RootKind::Text,
                inserted: utf16(&edit.ins),
                deleted: utf16(&deleted),
            };
            assert_eq!(change.seq, i as i64 + 1);
            assert_eq!(change.author.as_deref(), Some(AUTHORS[edit.author]));
            assert_eq!(
                change.summary.get("body"),
                Some(&expect),
                "edit {i}: {edit:?}"
            );
            let client = 1000 + edit.author as u64;
            let clients: Vec<u64> = if edit.ins.is_empty() {
                vec![]
            } else {
                vec![client]
            };
            assert_eq!(change.clients, clients, "edit {i}");
        }
        assert_eq!(
            crate::history::fixture::text_of(&doc, "body"),
            r.texts[edits.len()]
        );
    }

    #[test]
    fn text_counts_by_walk_when_two_roots_change() {
        let editor = Doc::with_options(yrs::Options {
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let history = reconstruct(None, std::iter::empty(), true).unwrap();
        let u = edit(&editor, |t| {
            t.get_or_insert_text("a").insert(t, 0, "hello 😀");
            t.get_or_insert_text("b").insert(t, 0, "xy");
        });
        summarize(&history, &u).unwrap();
        let u = edit(&editor, |t| {
            let a = t.get_or_insert_text("a");
            a.remove_range(t, 0, 2);
            a.insert(t, 0, "J");
            let b = t.get_or_insert_text("b");
            b.insert(t, 2, "z");
            let bold = yrs::types::Attrs::from([("bold".into(), true.into())]);
            b.format(t, 0, 3, bold);
        });
        let s = summarize(&history, &u).unwrap();
        assert_eq!(
            s.roots["a"],
            RootChange {
                kind: RootKind::Text,
                inserted: 1,
                deleted: 2
            }
        );
        // Formatting marks are not characters.
        assert_eq!(
            s.roots["b"],
            RootChange {
                kind: RootKind::Text,
                inserted: 1,
                deleted: 0
            }
        );
        // One root with formatting takes the fast path: marks still do not count.
        let u = edit(&editor, |t| {
            let b = t.get_or_insert_text("b");
            let italic = yrs::types::Attrs::from([("italic".into(), true.into())]);
            b.format(t, 1, 1, italic);
            b.remove_range(t, 0, 1);
        });
        let s = summarize(&history, &u).unwrap();
        assert_eq!(
            s.roots["b"],
            RootChange {
                kind: RootKind::Text,
                inserted: 0,
                deleted: 1
            }
        );
    }

    #[test]
    fn single_update_summary_from_a_gc_document() {
        // `summarize` also works on a document that collects garbage.
        let edits = generate(50, 1, 5);
        let r = replay(&edits, "t", 0);
        let doc = reconstruct(None, r.rows[..49].iter().map(|x| x.data.as_slice()), false).unwrap();
        let s = summarize(&doc, &r.rows[49].data).unwrap();
        let last = &edits[49];
        let before: Vec<char> = r.texts[49].chars().collect();
        let deleted: String = before[last.pos..last.pos + last.del].iter().collect();
        assert_eq!(s.roots["t"].inserted, utf16(&last.ins));
        assert_eq!(s.roots["t"].deleted, utf16(&deleted));
    }

    /// Applies `f` to `doc` in one transaction and returns the update it made.
    fn edit(doc: &Doc, f: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
        let mut txn = doc.transact_mut();
        f(&mut txn);
        txn.encode_update_v1()
    }

    #[test]
    fn xml_counts_include_whole_paragraphs() {
        let editor = Doc::with_options(yrs::Options {
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let frag = editor.get_or_insert_xml_fragment("default");
        let history = reconstruct(None, std::iter::empty(), true).unwrap();
        let step = |f: &dyn Fn(&mut yrs::TransactionMut)| {
            let u = edit(&editor, |t| f(t));
            summarize(&history, &u).unwrap().roots
        };
        let add = step(&|t| {
            let p = frag.push_back(t, XmlElementPrelim::empty("paragraph"));
            p.push_back(t, XmlTextPrelim::new("Hello"));
        });
        assert_eq!(
            add["default"],
            RootChange {
                kind: RootKind::Xml,
                inserted: 6,
                deleted: 0
            }
        );
        let typed = step(&|t| {
            let p = frag.get(t, 0).and_then(|x| x.into_xml_element()).unwrap();
            let text = p.get(t, 0).and_then(|x| x.into_xml_text()).unwrap();
            text.insert(t, 5, " 😀");
            text.remove_range(t, 0, 1);
        });
        assert_eq!(
            typed["default"],
            RootChange {
                kind: RootKind::Xml,
                inserted: 3,
                deleted: 1
            }
        );
        let second = step(&|t| {
            let p = frag.push_back(t, XmlElementPrelim::empty("heading"));
            p.insert_attribute(t, "level", 1);
            p.push_back(t, XmlTextPrelim::new("ab"));
        });
        assert_eq!(second["default"].inserted, 3);
        let attr = step(&|t| {
            let p = frag.get(t, 1).and_then(|x| x.into_xml_element()).unwrap();
            p.insert_attribute(t, "level", 2);
        });
        assert_eq!(
            attr["default"],
            RootChange {
                kind: RootKind::Xml,
                inserted: 0,
                deleted: 0
            }
        );
        // Deleting the first paragraph ("ello 😀" = 7 units) counts it and its text.
        let removed = step(&|t| frag.remove_range(t, 0, 1));
        assert_eq!(
            removed["default"],
            RootChange {
                kind: RootKind::Xml,
                inserted: 0,
                deleted: 8
            }
        );
        let json = crate::history::json::content_json(&history);
        assert_eq!(json["default"]["value"]["content"][0]["attrs"]["level"], 2);
    }

    #[test]
    fn maps_arrays_and_new_roots() {
        let editor = Doc::new();
        let history = reconstruct(None, std::iter::empty(), true).unwrap();
        let u = edit(&editor, |t| {
            let m = t.get_or_insert_map("meta");
            m.insert(t, "a", 1);
            let nested = m.insert(t, "n", MapPrelim::default());
            nested.insert(t, "x", TextPrelim::new("abc"));
            let title = t.get_or_insert_text("title");
            title.insert(t, 0, "Hi");
        });
        let s = summarize(&history, &u).unwrap();
        // New roots: everything they hold counts as inserted.
        assert_eq!(
            s.roots["title"],
            RootChange {
                kind: RootKind::Text,
                inserted: 2,
                deleted: 0
            }
        );
        assert_eq!(
            s.roots["meta"],
            RootChange {
                kind: RootKind::Map,
                inserted: 5,
                deleted: 0
            }
        );
        let u = edit(&editor, |t| {
            let m = t.get_or_insert_map("meta");
            m.insert(t, "a", 2);
            m.remove(t, "n");
            let arr = t.get_or_insert_array("list");
            arr.push_back(t, 1);
        });
        let s = summarize(&history, &u).unwrap();
        assert_eq!(
            s.roots["meta"],
            RootChange {
                kind: RootKind::Map,
                inserted: 1,
                deleted: 2
            }
        );
        assert_eq!(
            s.roots["list"],
            RootChange {
                kind: RootKind::Array,
                inserted: 1,
                deleted: 0
            }
        );
        assert!(!s.roots.contains_key("title"));
        let u = edit(&editor, |t| {
            let arr = t.get_or_insert_array("list");
            arr.push_back(t, 2);
            arr.remove(t, 0);
        });
        let s = summarize(&history, &u).unwrap();
        assert_eq!(
            s.roots["list"],
            RootChange {
                kind: RootKind::Array,
                inserted: 1,
                deleted: 1
            }
        );
    }

    #[test]
    fn keystrokes_in_a_tiptap_document() {
        let (rows, _) = tiptap_history(5, 20, false);
        let base = reconstruct(None, rows[..30].iter().map(|r| r.data.as_slice()), true).unwrap();
        let changes = summarize_rows(&base, &rows[30..]).unwrap();
        for c in &changes {
            let root = c.summary["default"];
            assert_eq!(root.kind, RootKind::Xml);
            assert_eq!(root.deleted, 0);
            // A new paragraph (1) with its empty text, or a keystroke (1).
            assert_eq!(root.inserted, 1, "seq {}", c.seq);
        }
    }

    #[test]
    fn undecodable_row_fails_the_page() {
        let edits = generate(5, 1, 1);
        let mut r = replay(&edits, "t", 0);
        r.rows[2].data = vec![0xff; 4];
        let doc = reconstruct(None, std::iter::empty(), true).unwrap();
        assert!(matches!(
            summarize_rows(&doc, &r.rows),
            Err(HistoryError::Undecodable { index: 2, .. })
        ));
    }

    #[test]
    fn sessions_merge_same_author_within_gap() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let change = |seq: i64, secs: u64, author: &str, ins: u64| Change {
            seq,
            time: t0 + Duration::from_secs(secs),
            size: 10,
            author: Some(author.to_string()),
            clients: vec![seq as u64 % 2],
            summary: BTreeMap::from([(
                "t".to_string(),
                RootChange {
                    kind: RootKind::Text,
                    inserted: ins,
                    deleted: 0,
                },
            )]),
        };
        let changes = vec![
            change(1, 0, "a", 1),
            change(2, 10, "a", 2),
            change(3, 400, "a", 3), // gap too long
            change(4, 410, "b", 4), // other author
            change(5, 420, "a", 5),
        ];
        let sessions = group_sessions(&changes, Duration::from_secs(300));
        let shape: Vec<(i64, i64, usize, u64)> = sessions
            .iter()
            .map(|s| (s.from_seq, s.to_seq, s.changes, s.summary["t"].inserted))
            .collect();
        assert_eq!(
            shape,
            vec![(1, 2, 2, 3), (3, 3, 1, 3), (4, 4, 1, 4), (5, 5, 1, 5)]
        );
        assert_eq!(sessions[0].clients, vec![0, 1]);
        assert_eq!(sessions[0].size, 20);
        let json = serde_json::to_value(&sessions[0]).unwrap();
        assert_eq!(json["start"], "1970-01-12T13:46:40.000Z");
        // Descending order groups the same way.
        let mut rev = changes.clone();
        rev.reverse();
        let sessions = group_sessions(&rev, Duration::from_secs(300));
        assert_eq!(sessions.len(), 4);
        assert_eq!((sessions[3].from_seq, sessions[3].to_seq), (1, 2));
    }
}
