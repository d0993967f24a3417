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

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::types::{AsPrelim, Attrs, Delta};
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, GetString, In, Map, MapPrelim, MapRef, Number,
    OffsetKind, Options, Out, ReadTxn, Root, Text, TextPrelim, TextRef, Transact, TransactionMut,
    Xml, XmlElementPrelim, XmlFragmentPrelim, XmlFragmentRef, XmlTextPrelim,
};

use tracing::error;

use super::kinds::{RootKind, root_kinds_in};
use super::{HistoryError, guard};

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
///   [`items`]). Every such check runs before the first change.
/// - [`HistoryError::Panicked`]: yrs panicked part-way. A transaction interrupted by a panic
///   still commits what it did, so `current` may hold part of the restore that no update
///   describes: the caller must stop trusting its in-memory document (poison the room, reload
///   it from storage).
pub fn restore_into(current: &Doc, target: &Doc) -> Result<Option<Vec<u8>>, HistoryError> {
    restore_roots_into(current, target, None)
}

/// [`restore_into`] limited to the roots named in `only` (all roots when `None`): the other
/// roots of `current` are left as they are, whatever `target` holds for them. Setting a few
/// fields of a document (the HTTP content API) must not revert what others wrote elsewhere.
pub fn restore_roots_into(
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

/// First token value used for embeds in a tokenized text (above every Unicode scalar value).
const EMBED_BASE: u32 = 0x11_0000;
/// The token of a line break: line-level diffing splits texts after it.
const NEWLINE: u32 = '\n' as u32;
/// Below this many differing tokens (both sides together) a text is diffed character by
/// character directly; above it, by lines first (see [`diff_text`]).
const LINE_MODE_MIN: usize = 4_000;
/// The same for words, inside changed stretches of lines.
const WORD_MODE_MIN: usize = 256;
/// Work allowed to all Myers searches of one restore (diagonal steps). Myers costs
/// O((N+M)·D); two long, completely different texts could otherwise take minutes. When it is
/// used up, what is left is diffed coarsely (the result stays exact, only less minimal).
const DIFF_BUDGET: u64 = 300_000_000;
/// A changed stretch of a list with at most this many old×new pairs is aligned by similarity
/// (dynamic programming); larger ones pair items of the same kind in order.
const ALIGN_CELLS: usize = 4_096;
/// Score of pairing two items of the same kind, on top of their similarity (0..=1): pairing
/// (editing in place) beats deleting and re-inserting even dissimilar items, because it keeps
/// the item's identity.
const PAIR_BONUS: f64 = 0.01;

/// A run of equal elements: `a[a..a + len] == b[b..b + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Match {
    a: usize,
    b: usize,
    len: usize,
}

/// One step of bringing a list to its target, applied left to right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Keep this many items.
    Keep(usize),
    /// Delete this many items.
    Delete(usize),
    /// Insert a copy of target item `j`.
    Insert(usize),
    /// Edit current item `i` in place into target item `j` (same kind).
    Pair(usize, usize),
}

/// A tokenized text: one token per character (its scalar value) or embed (`EMBED_BASE` + an
/// interned id), with the interned attribute set of each.
struct Atoms {
    tokens: Vec<u32>,
    attrs: Vec<u32>,
    /// Embedded values by atom index (kept only for the target, whose embeds get inserted).
    embeds: HashMap<usize, Out>,
}

/// What a shared type or value is, for pairing list items: only items with equal keys can be
/// edited into each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shape {
    Text,
    Array,
    Map,
    Element(Arc<str>),
    Fragment,
    XmlText,
}

/// State of one restore: the target's read transaction and the interning tables shared by both
/// documents.
struct Restorer<'t, T: ReadTxn> {
    target: &'t T,
    /// How the live document counts text offsets (delta lengths are in these units).
    offsets: OffsetKind,
    /// Keys of the structural fingerprints, random per restore so that nobody can craft two
    /// different paragraphs that fingerprint alike.
    seeds: RandomState,
    /// Attribute sets by id (0 = none), and ids by fingerprint.
    attr_sets: Vec<Attrs>,
    attr_ids: HashMap<u64, u32>,
    /// Embed ids by fingerprint.
    embed_ids: HashMap<u64, u32>,
    /// Myers work left (see [`DIFF_BUDGET`]).
    budget: u64,
}

impl<'t, T: ReadTxn> Restorer<'t, T> {
    fn new(target: &'t T, offsets: OffsetKind) -> Self {
        Restorer {
            target,
            offsets,
            seeds: RandomState::new(),
            attr_sets: vec![Attrs::new()],
            attr_ids: HashMap::new(),
            embed_ids: HashMap::new(),
            budget: DIFF_BUDGET,
        }
    }

    /// Whether every list in the target's roots can be read (see [`items`]).
    fn target_readable(&self, roots: &[(Arc<str>, RootKind)]) -> bool {
        roots.iter().all(|(name, kind)| {
            root_as(self.target, name, *kind).is_none_or(|root| readable(self.target, &root))
        })
    }

    /// Brings every root of the live document (`txn`) to the target (`target_roots`: its
    /// roots' kinds), then checks the result.
    fn restore_roots(
        &mut self,
        txn: &mut TransactionMut,
        target_roots: Vec<(Arc<str>, RootKind)>,
        only: Option<&std::collections::BTreeSet<String>>,
    ) {
        // Kinds come from content: a document rebuilt from updates has untyped roots.
        let mut roots: BTreeMap<Arc<str>, (Option<RootKind>, Option<RootKind>)> = BTreeMap::new();
        for (name, kind) in root_kinds_in(&*txn) {
            if only.is_none_or(|only| only.contains(&*name)) {
                roots.entry(name).or_default().0 = Some(kind);
            }
        }
        for (name, kind) in target_roots {
            roots.entry(name).or_default().1 = Some(kind);
        }
        for (name, (cur_kind, tgt_kind)) in &roots {
            match tgt_kind {
                Some(kind) => self.restore_root(txn, name, *cur_kind, *kind),
                None => {
                    if cur_kind.is_some() {
                        clear_root(txn, name);
                    }
                }
            }
        }
        // Check every root; one that still differs is rebuilt from scratch, the plainest path.
        for (name, (_, tgt_kind)) in &roots {
            if self.root_matches(txn, name, *tgt_kind) {
                continue;
            }
            clear_root(txn, name);
            if let Some(kind) = tgt_kind {
                self.restore_root(txn, name, *tgt_kind, *kind);
            }
            if !self.root_matches(txn, name, *tgt_kind) {
                // Not an error: the changes are made and must travel as an update all the
                // same, or replicas would diverge from the live document.
                error!(root = %name, "restore left a root different from the target");
            }
        }
    }

    /// Brings root `name` of the live document to the target's root of kind `kind`.
    fn restore_root(
        &mut self,
        txn: &mut TransactionMut,
        name: &Arc<str>,
        cur_kind: Option<RootKind>,
        kind: RootKind,
    ) {
        // A root of another kind in the live document is emptied first: its items cannot become
        // the target's (a text's characters are no array elements).
        if cur_kind.is_some_and(|k| k != kind) {
            clear_root(txn, name);
        }
        // An existing root is used as it is, even untyped: typing it would pin its kind in
        // the live document, and a later restore to another kind could not undo that (yrs
        // never retypes a root), leaving content inference to read the root wrongly. Only a
        // missing root is created, which needs a type.
        let cur = match root_as(txn, name, kind) {
            Some(cur) => cur,
            None => make_root(txn, name, kind),
        };
        let Some(tgt) = root_as(self.target, name, kind) else {
            return;
        };
        // Keyed entries on a list root (or list items on a map root) are not part of its
        // content as its kind sees it; drop them so the root is what the target shows.
        if let Some(ptr) = root_ptr(txn, name) {
            if kind == RootKind::Map {
                clear_list(txn, ptr);
            } else {
                clear_map(txn, &MapRef::from(ptr));
            }
        }
        self.sync(txn, &cur, &tgt);
    }

    /// Whether root `name` of the live document shows the target's content (`None`: the target
    /// has no such root, so it must be empty).
    fn root_matches(&self, txn: &TransactionMut, name: &Arc<str>, kind: Option<RootKind>) -> bool {
        match kind {
            Some(kind) => match (root_as(txn, name, kind), root_as(self.target, name, kind)) {
                (Some(cur), Some(tgt)) => {
                    self.fingerprint(txn, &cur) == self.fingerprint(self.target, &tgt)
                }
                (None, None) => true,
                _ => false,
            },
            // Typed roots stay listed when empty; what matters is that nothing is left.
            None => root_ptr(txn, name).is_none_or(|ptr| {
                ArrayRef::from(ptr).len(txn) == 0 && MapRef::from(ptr).len(txn) == 0
            }),
        }
    }

    /// Edits `cur` into `tgt` when both are shared types of the same shape; false otherwise.
    fn sync(&mut self, txn: &mut TransactionMut, cur: &Out, tgt: &Out) -> bool {
        match (cur, tgt) {
            (Out::YText(c), Out::YText(t)) => self.sync_text(txn, c, t),
            (Out::YXmlText(c), Out::YXmlText(t)) => {
                self.sync_attributes(txn, c, t);
                self.sync_text(txn, c, t);
            }
            (Out::YMap(c), Out::YMap(t)) => self.sync_map(txn, c, t),
            (Out::YArray(c), Out::YArray(t)) => self.sync_list(txn, c, t),
            (Out::YXmlFragment(c), Out::YXmlFragment(t)) => {
                self.sync_list(txn, c.as_ref(), t.as_ref());
            }
            (Out::YXmlElement(c), Out::YXmlElement(t)) if c.try_tag() == t.try_tag() => {
                self.sync_attributes(txn, c, t);
                self.sync_list(txn, c.as_ref(), t.as_ref());
            }
            _ => return false,
        }
        true
    }

    // ---------------------------------------------------------------- text

    /// Edits text `cur` (live document) into `tgt` (target) with one delta.
    fn sync_text<C: Text, G: Text>(&mut self, txn: &mut TransactionMut, cur: &C, tgt: &G) {
        let a = self.atoms(&*txn, cur, false);
        let b = self.atoms(self.target, tgt, true);
        let matches = diff_text(&a.tokens, &b.tokens, &mut self.budget);
        let delta = self.text_delta(&a, &b, &matches);
        if !delta.is_empty() {
            cur.apply_delta(txn, delta);
        }
    }

    /// Tokenizes a text (see [`Atoms`]).
    fn atoms<R: ReadTxn, X: Text>(&mut self, txn: &R, text: &X, keep_embeds: bool) -> Atoms {
        let mut atoms = Atoms {
            tokens: Vec::new(),
            attrs: Vec::new(),
            embeds: HashMap::new(),
        };
        for chunk in text.diff(txn, YChange::identity) {
            let attr = self.attr_id(chunk.attributes.as_deref());
            match chunk.insert {
                Out::Any(Any::String(s)) => {
                    atoms.tokens.extend(s.chars().map(u32::from));
                    atoms.attrs.resize(atoms.tokens.len(), attr);
                }
                embed => {
                    let fp = self.fingerprint(txn, &embed);
                    let next = self.embed_ids.len() as u32;
                    let id = *self.embed_ids.entry(fp).or_insert(next);
                    if keep_embeds {
                        atoms.embeds.insert(atoms.tokens.len(), embed);
                    }
                    atoms.tokens.push(EMBED_BASE + id);
                    atoms.attrs.push(attr);
                }
            }
        }
        atoms
    }

    /// The id of an attribute set, interned by content.
    fn attr_id(&mut self, attrs: Option<&Attrs>) -> u32 {
        let Some(attrs) = attrs.filter(|a| !a.is_empty()) else {
            return 0;
        };
        let mut h = self.seeds.build_hasher();
        hash_attrs(attrs, &mut h);
        let fp = h.finish();
        let next = self.attr_sets.len() as u32;
        let id = *self.attr_ids.entry(fp).or_insert(next);
        if id == next {
            self.attr_sets.push(attrs.clone());
        }
        id
    }

    /// Length of a token in the live document's offset units.
    fn units(&self, tokens: &[u32]) -> u32 {
        tokens
            .iter()
            .map(|&t| match char::from_u32(t) {
                Some(c) => match self.offsets {
                    OffsetKind::Bytes => c.len_utf8() as u32,
                    OffsetKind::Utf16 => c.len_utf16() as u32,
                },
                // Embeds (and any other non-character item) count one.
                None => 1,
            })
            .sum()
    }

    /// The delta turning text `a` into `b` given their common runs.
    fn text_delta(&self, a: &Atoms, b: &Atoms, matches: &[Match]) -> Vec<Delta<In>> {
        let mut delta: Vec<Delta<In>> = Vec::new();
        let (mut ia, mut ib) = (0, 0);
        let end = Match {
            a: a.tokens.len(),
            b: b.tokens.len(),
            len: 0,
        };
        for m in matches.iter().chain(std::iter::once(&end)) {
            if m.a > ia {
                delta.push(Delta::Deleted(self.units(&a.tokens[ia..m.a])));
            }
            if m.b > ib {
                self.push_inserts(&mut delta, b, ib, m.b);
            }
            // Kept run: retain, re-formatting the parts whose attributes differ.
            let mut k = 0;
            while k < m.len {
                let (old, new) = (a.attrs[m.a + k], b.attrs[m.b + k]);
                let start = k;
                while k < m.len && a.attrs[m.a + k] == old && b.attrs[m.b + k] == new {
                    k += 1;
                }
                let units = self.units(&a.tokens[m.a + start..m.a + k]);
                if old == new {
                    push_retain(&mut delta, units);
                } else {
                    let change =
                        format_change(&self.attr_sets[old as usize], &self.attr_sets[new as usize]);
                    delta.push(Delta::Retain(units, Some(Box::new(change))));
                }
            }
            ia = m.a + m.len;
            ib = m.b + m.len;
        }
        while matches!(delta.last(), Some(Delta::Retain(_, None))) {
            delta.pop();
        }
        delta
    }

    /// Appends inserts of target atoms `from..to`, one per run of equal attributes (and one per
    /// embed).
    fn push_inserts(&self, delta: &mut Vec<Delta<In>>, b: &Atoms, from: usize, to: usize) {
        let attrs_of = |id: u32| -> Option<Box<Attrs>> {
            // No attributes means "plain": yrs unsets whatever formatting surrounds the insert.
            let attrs = &self.attr_sets[id as usize];
            (!attrs.is_empty()).then(|| Box::new(attrs.clone()))
        };
        let mut run = String::new();
        let mut run_attr = 0;
        for i in from..to {
            let (token, attr) = (b.tokens[i], b.attrs[i]);
            match char::from_u32(token) {
                Some(c) => {
                    if !run.is_empty() && attr != run_attr {
                        let s = std::mem::take(&mut run);
                        delta.push(Delta::Inserted(In::Any(Any::from(s)), attrs_of(run_attr)));
                    }
                    run_attr = attr;
                    run.push(c);
                }
                None => {
                    if !run.is_empty() {
                        let s = std::mem::take(&mut run);
                        delta.push(Delta::Inserted(In::Any(Any::from(s)), attrs_of(run_attr)));
                    }
                    if let Some(embed) = b.embeds.get(&i) {
                        let value = self.copy_whole(embed);
                        delta.push(Delta::Inserted(value, attrs_of(attr)));
                    }
                }
            }
        }
        if !run.is_empty() {
            delta.push(Delta::Inserted(In::Any(Any::from(run)), attrs_of(run_attr)));
        }
    }

    // ---------------------------------------------------------------- keyed

    /// Edits map `cur` into `tgt`.
    fn sync_map(&mut self, txn: &mut TransactionMut, cur: &MapRef, tgt: &MapRef) {
        let cur_entries: Vec<(String, Out)> =
            cur.iter(&*txn).map(|(k, v)| (k.to_owned(), v)).collect();
        let tgt_entries: Vec<(String, Out)> = tgt
            .iter(self.target)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let plan = self.keyed_plan(txn, cur_entries, tgt_entries);
        for key in &plan.remove {
            cur.remove(txn, key);
        }
        for (cur_value, tgt_value) in &plan.edit {
            self.sync(txn, cur_value, tgt_value);
        }
        for (key, tgt_value) in &plan.set {
            let fresh = cur.insert(txn, key.as_str(), self.fresh(tgt_value));
            self.sync(txn, &fresh, tgt_value);
        }
    }

    /// Edits the attributes of XML node `cur` into those of `tgt`.
    fn sync_attributes<C: Xml, G: Xml>(&mut self, txn: &mut TransactionMut, cur: &C, tgt: &G) {
        let cur_entries: Vec<(String, Out)> = cur
            .attributes(&*txn)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let tgt_entries: Vec<(String, Out)> = tgt
            .attributes(self.target)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let plan = self.keyed_plan(txn, cur_entries, tgt_entries);
        for key in &plan.remove {
            cur.remove_attribute(txn, key);
        }
        for (cur_value, tgt_value) in &plan.edit {
            self.sync(txn, cur_value, tgt_value);
        }
        for (key, tgt_value) in &plan.set {
            let fresh = cur.insert_attribute(txn, key.as_str(), self.fresh(tgt_value));
            self.sync(txn, &fresh, tgt_value);
        }
    }

    /// What to do with the keys of a map or attribute set, in key order (so that the same
    /// restore always produces the same update).
    fn keyed_plan(
        &self,
        txn: &TransactionMut,
        cur: Vec<(String, Out)>,
        mut tgt: Vec<(String, Out)>,
    ) -> KeyedPlan {
        tgt.sort_by(|x, y| x.0.cmp(&y.0));
        let mut cur: HashMap<String, Out> = cur.into_iter().collect();
        let mut plan = KeyedPlan::default();
        for (key, tgt_value) in tgt {
            match cur.remove(&key) {
                Some(cur_value)
                    if self.fingerprint(txn, &cur_value)
                        == self.fingerprint(self.target, &tgt_value) => {}
                Some(cur_value)
                    if shape(&cur_value).is_some() && shape(&cur_value) == shape(&tgt_value) =>
                {
                    plan.edit.push((cur_value, tgt_value));
                }
                _ => plan.set.push((key, tgt_value)),
            }
        }
        plan.remove = cur.into_keys().collect();
        plan.remove.sort();
        plan
    }

    // ---------------------------------------------------------------- lists

    /// Edits list `cur` (an array, or an XML node's children) into `tgt`.
    fn sync_list(&mut self, txn: &mut TransactionMut, cur: &ArrayRef, tgt: &ArrayRef) {
        // Checked readable before the restore began (`target_readable`).
        let tgt_items = items(self.target, tgt).unwrap_or_default();
        let cur_items = match items(&*txn, cur) {
            Some(items) => items,
            None => {
                // Unreadable here: start from an empty list.
                clear_list(
                    txn,
                    BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(cur)),
                );
                Vec::new()
            }
        };
        let fa: Vec<u64> = cur_items
            .iter()
            .map(|v| self.fingerprint(&*txn, v))
            .collect();
        let fb: Vec<u64> = tgt_items
            .iter()
            .map(|v| self.fingerprint(self.target, v))
            .collect();
        let matches = myers(&fa, &fb, &mut self.budget);
        let mut steps = Vec::new();
        let (mut ia, mut ib) = (0, 0);
        let end = Match {
            a: fa.len(),
            b: fb.len(),
            len: 0,
        };
        for m in matches.iter().chain(std::iter::once(&end)) {
            if m.a > ia || m.b > ib {
                self.align(txn, &cur_items, ia..m.a, &tgt_items, ib..m.b, &mut steps);
            }
            if m.len > 0 {
                steps.push(Step::Keep(m.len));
            }
            ia = m.a + m.len;
            ib = m.b + m.len;
        }
        self.apply_steps(txn, cur, &cur_items, &tgt_items, &steps);
    }

    /// Aligns a changed stretch: current items `ra` against target items `rb`, pairing items
    /// of the same shape (edited in place) and deleting / inserting the others.
    fn align(
        &self,
        txn: &TransactionMut,
        cur: &[Out],
        ra: std::ops::Range<usize>,
        tgt: &[Out],
        rb: std::ops::Range<usize>,
        steps: &mut Vec<Step>,
    ) {
        let sa: Vec<Option<Shape>> = cur[ra.clone()].iter().map(shape).collect();
        let sb: Vec<Option<Shape>> = tgt[rb.clone()].iter().map(shape).collect();
        let pairable = sa
            .iter()
            .flatten()
            .any(|s| sb.iter().flatten().any(|t| s == t));
        let pairs: Vec<(usize, usize)> = if !pairable {
            Vec::new()
        } else if sa.len() * sb.len() <= ALIGN_CELLS {
            let ta: Vec<String> = cur[ra.clone()].iter().map(|v| plain(txn, v)).collect();
            let tb: Vec<String> = tgt[rb.clone()]
                .iter()
                .map(|v| plain(self.target, v))
                .collect();
            align_by_similarity(&sa, &sb, &ta, &tb)
        } else {
            // Too many to score every pair: pair same-shaped items in order (an LCS over shapes;
            // items without a shape get unique keys so they never pair).
            let mut ids: HashMap<Shape, u64> = HashMap::new();
            let mut key = |s: &Option<Shape>, unique: u64| match s {
                Some(s) => {
                    let next = ids.len() as u64;
                    *ids.entry(s.clone()).or_insert(next)
                }
                None => unique,
            };
            let ka: Vec<u64> = sa
                .iter()
                .enumerate()
                .map(|(i, s)| key(s, (1 << 40) + i as u64))
                .collect();
            let kb: Vec<u64> = sb
                .iter()
                .enumerate()
                .map(|(j, s)| key(s, (1 << 41) + j as u64))
                .collect();
            let mut budget = u64::MAX;
            myers(&ka, &kb, &mut budget)
                .iter()
                .flat_map(|m| (0..m.len).map(move |k| (m.a + k, m.b + k)))
                .collect()
        };
        let (mut i, mut j) = (0, 0);
        let end = (sa.len(), sb.len());
        for &(pi, pj) in pairs.iter().chain(std::iter::once(&end)) {
            if pi > i {
                steps.push(Step::Delete(pi - i));
            }
            for k in j..pj {
                steps.push(Step::Insert(rb.start + k));
            }
            if (pi, pj) != end {
                steps.push(Step::Pair(ra.start + pi, rb.start + pj));
            }
            i = pi + 1;
            j = pj + 1;
        }
    }

    /// Applies list steps left to right; `pos` is the index in the list as edited so far.
    fn apply_steps(
        &mut self,
        txn: &mut TransactionMut,
        list: &ArrayRef,
        cur: &[Out],
        tgt: &[Out],
        steps: &[Step],
    ) {
        let mut pos: u32 = 0;
        let mut k = 0;
        while k < steps.len() {
            match steps[k] {
                Step::Keep(n) => pos += n as u32,
                Step::Delete(n) => list.remove_range(txn, pos, n as u32),
                Step::Pair(i, j) => {
                    if !self.sync(txn, &cur[i], &tgt[j]) {
                        // Paired only by shape, so this does not happen; stay exact anyway.
                        list.remove(txn, pos);
                        self.insert_copy(txn, list, pos, &tgt[j]);
                    }
                    pos += 1;
                }
                Step::Insert(j) => {
                    // Consecutive plain values go in as one item, as Yjs does for a pushed run.
                    let mut run: Vec<Any> = Vec::new();
                    while let Some(Step::Insert(j)) = steps.get(k) {
                        match &tgt[*j] {
                            Out::Any(any) => run.push(any.clone()),
                            _ => break,
                        }
                        k += 1;
                    }
                    if run.is_empty() {
                        self.insert_copy(txn, list, pos, &tgt[j]);
                        pos += 1;
                    } else {
                        let n = run.len() as u32;
                        list.insert_range(txn, pos, run);
                        pos += n;
                        continue;
                    }
                }
            }
            k += 1;
        }
    }

    /// Inserts a deep copy of target value `tgt` at `pos` of `list`.
    fn insert_copy(&mut self, txn: &mut TransactionMut, list: &ArrayRef, pos: u32, tgt: &Out) {
        let fresh = list.insert(txn, pos, self.fresh(tgt));
        self.sync(txn, &fresh, tgt);
    }

    // ---------------------------------------------------------------- copies

    /// What to insert for target value `v`: plain values as they are; shared types EMPTY, to be
    /// filled by [`Self::sync`] once integrated (the same code path as an edit, and unlike
    /// yrs's `as_prelim` it keeps XML attribute values typed: y-prosemirror stores numbers and
    /// booleans there).
    fn fresh(&self, v: &Out) -> In {
        match v {
            Out::Any(any) => In::Any(any.clone()),
            Out::YText(_) => In::from(TextPrelim::new("")),
            Out::YArray(_) => In::from(ArrayPrelim::default()),
            Out::YMap(_) => In::from(MapPrelim::default()),
            Out::YXmlElement(e) => match e.try_tag() {
                Some(tag) => In::from(XmlElementPrelim::empty(tag.clone())),
                None => v.as_prelim(self.target),
            },
            Out::YXmlFragment(_) => In::from(XmlFragmentPrelim::default()),
            Out::YXmlText(_) => In::from(XmlTextPrelim::new("")),
            // A sub-document is referenced, not copied: same guid, content loaded separately.
            Out::YDoc(d) => In::Doc(Doc::with_options(Options {
                guid: d.guid(),
                ..Options::default()
            })),
            other => other.as_prelim(self.target),
        }
    }

    /// A complete copy of target value `v` in one prelim (for embeds inside a text, which are
    /// inserted through a delta and cannot be filled afterwards).
    fn copy_whole(&self, v: &Out) -> In {
        match v {
            Out::Any(any) => In::Any(any.clone()),
            other => other.as_prelim(self.target),
        }
    }

    // ---------------------------------------------------------------- fingerprints

    /// A structural fingerprint of a value or shared type: equal content ⇒ equal fingerprint
    /// (whatever the items' ids); different content ⇒ different, but for a 2⁻⁶⁴ chance.
    fn fingerprint<R: ReadTxn>(&self, txn: &R, v: &Out) -> u64 {
        let mut h = self.seeds.build_hasher();
        hash_out(txn, v, &mut h);
        h.finish()
    }
}

/// The keyed edits of a map or attribute set.
#[derive(Default)]
struct KeyedPlan {
    /// Keys to set to a copy of the target's value.
    set: Vec<(String, Out)>,
    /// Values of the same shape on both sides, to edit in place.
    edit: Vec<(Out, Out)>,
    /// Keys to remove.
    remove: Vec<String>,
}

/// Appends a plain retain, merging with a preceding one.
fn push_retain(delta: &mut Vec<Delta<In>>, units: u32) {
    if let Some(Delta::Retain(n, None)) = delta.last_mut() {
        *n += units;
    } else {
        delta.push(Delta::Retain(units, None));
    }
}

/// The formatting to apply to a kept range to go from attributes `old` to `new`: changed or
/// added keys with their new value, removed keys with null.
fn format_change(old: &Attrs, new: &Attrs) -> Attrs {
    let mut change = Attrs::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            change.insert(k.clone(), v.clone());
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            change.insert(k.clone(), Any::Null);
        }
    }
    change
}

/// The shape of a list item (`None`: a plain value or something never edited in place).
fn shape(v: &Out) -> Option<Shape> {
    match v {
        Out::YText(_) => Some(Shape::Text),
        Out::YArray(_) => Some(Shape::Array),
        Out::YMap(_) => Some(Shape::Map),
        Out::YXmlElement(e) => e.try_tag().map(|t| Shape::Element(t.clone())),
        Out::YXmlFragment(_) => Some(Shape::Fragment),
        Out::YXmlText(_) => Some(Shape::XmlText),
        _ => None,
    }
}

/// A flat rendering of an item (its texts and plain values, tags as markers), only to
/// measure similarity. Bounded: similarity of two huge items needs no more.
fn plain<R: ReadTxn>(txn: &R, v: &Out) -> String {
    const MAX: usize = 4_096;
    fn walk<R: ReadTxn>(txn: &R, v: &Out, out: &mut String) {
        if out.len() >= MAX {
            return;
        }
        match v {
            Out::Any(any) => out.push_str(&format!("{any}")),
            Out::YText(t) => out.push_str(&t.get_string(txn)),
            Out::YXmlText(t) => out.push_str(&t.get_string(txn)),
            Out::YXmlElement(e) => {
                out.push('<');
                out.push_str(e.try_tag().map_or("", |t| t));
                out.push('>');
                for child in items(txn, e.as_ref()).unwrap_or_default() {
                    walk(txn, &child, out);
                }
            }
            Out::YXmlFragment(f) => {
                for child in items(txn, f.as_ref()).unwrap_or_default() {
                    walk(txn, &child, out);
                }
            }
            Out::YArray(a) => {
                for child in items(txn, a).unwrap_or_default() {
                    walk(txn, &child, out);
                }
            }
            Out::YMap(m) => {
                let mut entries: Vec<(&str, Out)> = m.iter(txn).collect();
                entries.sort_by(|x, y| x.0.cmp(y.0));
                for (k, v) in entries {
                    out.push_str(k);
                    walk(txn, &v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(txn, v, &mut out);
    out
}

/// Similarity of two strings in 0..=1: the share of the longer one covered by their common
/// prefix and suffix (a paragraph edited somewhere in the middle scores high).
fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let prefix = common_prefix(a, b);
    let suffix = common_suffix(&a[prefix..], &b[prefix..]);
    (prefix + suffix) as f64 / longest as f64
}

/// Pairs same-shaped items of a changed stretch, maximizing the summed similarity of the pairs
/// (in order: pairs never cross). Returns (index in `sa`, index in `sb`) ascending.
fn align_by_similarity(
    sa: &[Option<Shape>],
    sb: &[Option<Shape>],
    ta: &[String],
    tb: &[String],
) -> Vec<(usize, usize)> {
    let (n, m) = (sa.len(), sb.len());
    let w = m + 1;
    let mut score = vec![0.0f64; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            let mut best = score[(i - 1) * w + j].max(score[i * w + j - 1]);
            if sa[i - 1].is_some() && sa[i - 1] == sb[j - 1] {
                let pair =
                    score[(i - 1) * w + j - 1] + PAIR_BONUS + similarity(&ta[i - 1], &tb[j - 1]);
                best = best.max(pair);
            }
            score[i * w + j] = best;
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        let here = score[i * w + j];
        if here == score[(i - 1) * w + j] {
            i -= 1;
        } else if here == score[i * w + j - 1] {
            j -= 1;
        } else {
            pairs.push((i - 1, j - 1));
            i -= 1;
            j -= 1;
        }
    }
    pairs.reverse();
    pairs
}

// -------------------------------------------------------------------- roots

/// Creates root `name` of the live document as `kind`.
fn make_root(txn: &mut TransactionMut, name: &Arc<str>, kind: RootKind) -> Out {
    // `Root::get_or_create` works inside the open transaction (`Doc::get_or_insert_*` would
    // open a second one and deadlock).
    match kind {
        RootKind::Text => Out::YText(Root::<TextRef>::new(name.clone()).get_or_create(txn)),
        RootKind::Xml => {
            Out::YXmlFragment(Root::<XmlFragmentRef>::new(name.clone()).get_or_create(txn))
        }
        RootKind::Map => Out::YMap(Root::<MapRef>::new(name.clone()).get_or_create(txn)),
        RootKind::Array => Out::YArray(Root::<ArrayRef>::new(name.clone()).get_or_create(txn)),
    }
}

/// Root `name` viewed as `kind` (whatever its recorded type), `None` if the document has none.
fn root_as<R: ReadTxn>(txn: &R, name: &Arc<str>, kind: RootKind) -> Option<Out> {
    match kind {
        RootKind::Text => Root::<TextRef>::new(name.clone()).get(txn).map(Out::YText),
        RootKind::Xml => Root::<XmlFragmentRef>::new(name.clone())
            .get(txn)
            .map(Out::YXmlFragment),
        RootKind::Map => Root::<MapRef>::new(name.clone()).get(txn).map(Out::YMap),
        RootKind::Array => Root::<ArrayRef>::new(name.clone())
            .get(txn)
            .map(Out::YArray),
    }
}

/// The branch of root `name`.
fn root_ptr<R: ReadTxn>(txn: &R, name: &Arc<str>) -> Option<BranchPtr> {
    Root::<ArrayRef>::new(name.clone())
        .get(txn)
        .map(|a| BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(&a)))
}

/// Empties root `name`, whose content is of kind `kind` (both its list and its keyed part).
fn clear_root(txn: &mut TransactionMut, name: &Arc<str>) {
    if let Some(ptr) = root_ptr(txn, name) {
        clear_list(txn, ptr);
        clear_map(txn, &MapRef::from(ptr));
    }
}

/// Deletes the list part of a branch, whatever it holds.
///
/// Two passes, because neither yrs view deletes everything: the text view removes characters,
/// embeds and nested types (counting characters in the document's offset units) but skips
/// plain values; the array view then removes the plain values, which is safe once no string is
/// left (see [`items`]).
fn clear_list(txn: &mut TransactionMut, ptr: BranchPtr) {
    let text = TextRef::from(ptr);
    let offsets = txn.doc().offset_kind();
    let units: u32 = text
        .diff(txn, YChange::identity)
        .iter()
        .map(|chunk| match &chunk.insert {
            Out::Any(Any::String(s)) => match offsets {
                OffsetKind::Bytes => s.len() as u32,
                OffsetKind::Utf16 => s.encode_utf16().count() as u32,
            },
            _ => 1,
        })
        .sum();
    if units > 0 {
        text.remove_range(txn, 0, units);
    }
    let list = ArrayRef::from(ptr);
    let len = list.len(txn);
    if len > 0 {
        list.remove_range(txn, 0, len);
    }
}

/// The items of a list (an array or an XML node's children), `None` when yrs cannot read them
/// safely.
///
/// yrs 0.28's array iterator loops forever on a string item (text content) whose length in the
/// document's offset units differs from its character count (any non-ASCII character with
/// byte offsets, any emoji with UTF-16 ones): it compares characters read with units. Arrays
/// and XML nodes made by Yjs never hold strings, but a crafted update can put one there, and a
/// restore must not hang the room. The text view walks items without that bug, so it is used
/// to check first.
fn items<R: ReadTxn>(txn: &R, list: &ArrayRef) -> Option<Vec<Out>> {
    let text = TextRef::from(BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(list)));
    let has_strings = text
        .diff(txn, YChange::identity)
        .iter()
        .any(|chunk| matches!(chunk.insert, Out::Any(Any::String(_))));
    (!has_strings).then(|| list.iter(txn).collect())
}

/// Whether every list inside `v` (itself included) can be read by [`items`].
fn readable<R: ReadTxn>(txn: &R, v: &Out) -> bool {
    let all =
        |values: Option<Vec<Out>>| values.is_some_and(|vs| vs.iter().all(|v| readable(txn, v)));
    let texts = |chunks: Vec<yrs::types::text::Diff<YChange>>| {
        chunks.iter().all(|c| readable(txn, &c.insert))
    };
    match v {
        Out::YArray(a) => all(items(txn, a)),
        Out::YXmlFragment(f) => all(items(txn, f.as_ref())),
        Out::YXmlElement(e) => {
            e.attributes(txn).all(|(_, v)| readable(txn, &v)) && all(items(txn, e.as_ref()))
        }
        Out::YXmlText(t) => {
            t.attributes(txn).all(|(_, v)| readable(txn, &v))
                && texts(t.diff(txn, YChange::identity))
        }
        Out::YText(t) => texts(t.diff(txn, YChange::identity)),
        Out::YMap(m) => m.iter(txn).all(|(_, v)| readable(txn, &v)),
        _ => true,
    }
}

/// Deletes every key of a map (in key order, for a deterministic update).
fn clear_map(txn: &mut TransactionMut, map: &MapRef) {
    let mut keys: Vec<String> = map.keys(txn).map(str::to_owned).collect();
    keys.sort();
    for key in keys {
        map.remove(txn, &key);
    }
}

// -------------------------------------------------------------------- hashing

/// Feeds the structure of `v` into `h`. Every variant starts with its own tag and every
/// sequence ends with a terminator, so different structures never feed the same bytes.
fn hash_out<R: ReadTxn, H: Hasher>(txn: &R, v: &Out, h: &mut H) {
    match v {
        Out::Any(any) => {
            0u8.hash(h);
            hash_any(any, h);
        }
        Out::YText(t) => {
            1u8.hash(h);
            hash_text(txn, t, h);
        }
        Out::YArray(a) => {
            2u8.hash(h);
            hash_list(txn, a, h);
        }
        Out::YMap(m) => {
            3u8.hash(h);
            hash_entries(txn, m.iter(txn), h);
        }
        Out::YXmlElement(e) => {
            4u8.hash(h);
            e.try_tag().map(|t| &**t).hash(h);
            hash_entries(txn, e.attributes(txn), h);
            hash_list(txn, e.as_ref(), h);
        }
        Out::YXmlFragment(f) => {
            5u8.hash(h);
            hash_list(txn, f.as_ref(), h);
        }
        Out::YXmlText(t) => {
            6u8.hash(h);
            hash_entries(txn, t.attributes(txn), h);
            hash_text(txn, t, h);
        }
        Out::YDoc(d) => {
            7u8.hash(h);
            d.guid().hash(h);
        }
        // Weak links and untyped nested branches: opaque, never equal to anything, so they are
        // replaced (by yrs's own deep copy).
        _ => hash_opaque(h),
    }
}

/// Feeds a list's items.
fn hash_list<R: ReadTxn, H: Hasher>(txn: &R, list: &ArrayRef, h: &mut H) {
    match items(txn, list) {
        Some(items) => {
            for item in &items {
                hash_out(txn, item, h);
            }
            0xfeu8.hash(h);
        }
        None => hash_opaque(h),
    }
}

/// Feeds a value that must equal nothing else (content that cannot be compared).
fn hash_opaque<H: Hasher>(h: &mut H) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    0xffu8.hash(h);
    NEXT.fetch_add(1, Ordering::Relaxed).hash(h);
}

/// Feeds keyed entries in key order.
fn hash_entries<'a, R: ReadTxn, H: Hasher>(
    txn: &R,
    entries: impl Iterator<Item = (&'a str, Out)>,
    h: &mut H,
) {
    let mut entries: Vec<(&str, Out)> = entries.collect();
    entries.sort_by(|x, y| x.0.cmp(y.0));
    entries.len().hash(h);
    for (k, v) in entries {
        k.hash(h);
        hash_out(txn, &v, h);
    }
}

/// Feeds a text's content: runs of characters with equal formatting merged (how the text was
/// split into items does not matter), embeds, and each run's attributes.
fn hash_text<R: ReadTxn, X: Text, H: Hasher>(txn: &R, text: &X, h: &mut H) {
    let mut run = String::new();
    let mut run_attrs: Option<Box<Attrs>> = None;
    let flush = |run: &mut String, attrs: &Option<Box<Attrs>>, h: &mut H| {
        if !run.is_empty() {
            0u8.hash(h);
            run.as_str().hash(h);
            hash_opt_attrs(attrs.as_deref(), h);
            run.clear();
        }
    };
    for chunk in text.diff(txn, YChange::identity) {
        let attrs = chunk.attributes.filter(|a| !a.is_empty());
        match chunk.insert {
            Out::Any(Any::String(s)) => {
                if attrs != run_attrs {
                    flush(&mut run, &run_attrs, h);
                    run_attrs = attrs;
                }
                run.push_str(&s);
            }
            embed => {
                flush(&mut run, &run_attrs, h);
                1u8.hash(h);
                hash_out(txn, &embed, h);
                hash_opt_attrs(attrs.as_deref(), h);
            }
        }
    }
    flush(&mut run, &run_attrs, h);
    0xfeu8.hash(h);
}

fn hash_opt_attrs<H: Hasher>(attrs: Option<&Attrs>, h: &mut H) {
    match attrs {
        Some(a) if !a.is_empty() => hash_attrs(a, h),
        _ => 0usize.hash(h),
    }
}

/// Feeds formatting attributes in key order.
fn hash_attrs<H: Hasher>(attrs: &Attrs, h: &mut H) {
    let mut keys: Vec<&Arc<str>> = attrs.keys().collect();
    keys.sort();
    keys.len().hash(h);
    for k in keys {
        (**k).hash(h);
        if let Some(v) = attrs.get(k) {
            hash_any(v, h);
        }
    }
}

/// Feeds a plain value. Numbers that compare equal (integer 2 and float 2.0) feed the same.
fn hash_any<H: Hasher>(any: &Any, h: &mut H) {
    match any {
        Any::Null => 0u8.hash(h),
        Any::Undefined => 1u8.hash(h),
        Any::Bool(b) => {
            2u8.hash(h);
            b.hash(h);
        }
        Any::Number(n) => {
            3u8.hash(h);
            match *n {
                Number::Int(i) => {
                    0u8.hash(h);
                    i.hash(h);
                }
                // Integral floats in i64 range hash as the integer (so 2.0 matches 2).
                Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
                    0u8.hash(h);
                    (f as i64).hash(h);
                }
                Number::Float(f) => {
                    1u8.hash(h);
                    f.to_bits().hash(h);
                }
            }
        }
        Any::String(s) => {
            4u8.hash(h);
            (**s).hash(h);
        }
        Any::Buffer(b) => {
            5u8.hash(h);
            (**b).hash(h);
        }
        Any::Array(items) => {
            6u8.hash(h);
            items.len().hash(h);
            for item in items.iter() {
                hash_any(item, h);
            }
        }
        Any::Map(map) => {
            7u8.hash(h);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            keys.len().hash(h);
            for k in keys {
                k.hash(h);
                if let Some(v) = map.get(k) {
                    hash_any(v, h);
                }
            }
        }
    }
}

// -------------------------------------------------------------------- diff

/// Length of the common prefix of two slices.
fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Length of the common suffix of two slices.
fn common_suffix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Common runs of two texts (tokens), ascending and merged. Long texts are diffed in tiers:
/// lines first, then words inside changed stretches of lines, then characters inside changed
/// stretches of words; trivial common runs between large changes are dropped (see
/// [`cleanup_semantic`]).
///
/// Why tiers: Myers costs O((N+M)·D). A 100 KB text revised all over has D in the tens of
/// thousands of characters; the same changes counted in lines and words are far fewer, and
/// the character passes then run on short stretches.
fn diff_text(a: &[u32], b: &[u32], budget: &mut u64) -> Vec<Match> {
    cleanup_semantic(merge_adjacent(diff_tier(a, b, Tier::Lines, budget)))
}

/// The unit a tier compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Lines,
    Words,
    Chars,
}

impl Tier {
    /// The next finer tier, and how long two stretches must be together before this tier
    /// is worth its bookkeeping (below that, characters directly).
    fn min_len(self) -> usize {
        match self {
            Tier::Lines => LINE_MODE_MIN,
            Tier::Words => WORD_MODE_MIN,
            Tier::Chars => 0,
        }
    }

    fn finer(self) -> Tier {
        match self {
            Tier::Lines => Tier::Words,
            Tier::Words | Tier::Chars => Tier::Chars,
        }
    }

    /// Token ranges of this tier's units in `t`.
    fn split(self, t: &[u32]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        match self {
            Tier::Lines => {
                // Each line includes its line break.
                for (i, &tok) in t.iter().enumerate() {
                    if tok == NEWLINE {
                        out.push(start..i + 1);
                        start = i + 1;
                    }
                }
                if start < t.len() {
                    out.push(start..t.len());
                }
            }
            Tier::Words | Tier::Chars => {
                // A word is a run of letters and digits; every other token stands alone.
                let wordy = |tok: u32| char::from_u32(tok).is_some_and(char::is_alphanumeric);
                while start < t.len() {
                    let mut end = start + 1;
                    if wordy(t[start]) {
                        while end < t.len() && wordy(t[end]) {
                            end += 1;
                        }
                    }
                    out.push(start..end);
                    start = end;
                }
            }
        }
        out
    }
}

/// Common runs of `a` and `b` at `tier` and finer.
fn diff_tier(a: &[u32], b: &[u32], tier: Tier, budget: &mut u64) -> Vec<Match> {
    let prefix = common_prefix(a, b);
    let suffix = common_suffix(&a[prefix..], &b[prefix..]);
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out = Vec::new();
    if prefix > 0 {
        out.push(Match {
            a: 0,
            b: 0,
            len: prefix,
        });
    }
    if !ma.is_empty() && !mb.is_empty() {
        let middle = if tier == Tier::Chars || ma.len() + mb.len() <= tier.min_len() {
            myers(ma, mb, budget)
        } else {
            diff_units(ma, mb, tier, budget)
        };
        out.extend(middle.into_iter().map(|m| Match {
            a: m.a + prefix,
            b: m.b + prefix,
            len: m.len,
        }));
    }
    if suffix > 0 {
        out.push(Match {
            a: a.len() - suffix,
            b: b.len() - suffix,
            len: suffix,
        });
    }
    out
}

/// Diffs `a` and `b` by the units of `tier`, then each changed stretch at the next tier.
fn diff_units(a: &[u32], b: &[u32], tier: Tier, budget: &mut u64) -> Vec<Match> {
    let (ua, ub) = (tier.split(a), tier.split(b));
    // Units are interned to small ids; the keys borrow `a` and `b`.
    let mut ids: HashMap<&[u32], u32> = HashMap::new();
    let mut ka = Vec::with_capacity(ua.len());
    for r in &ua {
        let next = ids.len() as u32;
        ka.push(*ids.entry(&a[r.clone()]).or_insert(next));
    }
    let mut kb = Vec::with_capacity(ub.len());
    for r in &ub {
        let next = ids.len() as u32;
        kb.push(*ids.entry(&b[r.clone()]).or_insert(next));
    }
    let unit_matches = myers(&ka, &kb, budget);
    // Token offset of unit `i` (or the end).
    let at = |us: &[std::ops::Range<usize>], i: usize, total: usize| {
        us.get(i).map_or(total, |r| r.start)
    };
    let mut out = Vec::new();
    let (mut ia, mut ib) = (0, 0);
    let end = Match {
        a: ua.len(),
        b: ub.len(),
        len: 0,
    };
    for m in unit_matches.iter().chain(std::iter::once(&end)) {
        let (sa, ea) = (at(&ua, ia, a.len()), at(&ua, m.a, a.len()));
        let (sb, eb) = (at(&ub, ib, b.len()), at(&ub, m.b, b.len()));
        if ea > sa && eb > sb {
            let finer = diff_tier(&a[sa..ea], &b[sb..eb], tier.finer(), budget);
            out.extend(finer.into_iter().map(|c| Match {
                a: c.a + sa,
                b: c.b + sb,
                len: c.len,
            }));
        }
        if m.len > 0 {
            let (ta, tb) = (at(&ua, m.a, a.len()), at(&ub, m.b, b.len()));
            let len = at(&ua, m.a + m.len, a.len()) - ta;
            out.push(Match { a: ta, b: tb, len });
        }
        ia = m.a + m.len;
        ib = m.b + m.len;
    }
    out
}

/// Joins runs that touch.
fn merge_adjacent(matches: Vec<Match>) -> Vec<Match> {
    let mut out: Vec<Match> = Vec::with_capacity(matches.len());
    for m in matches.into_iter().filter(|m| m.len > 0) {
        match out.last_mut() {
            Some(last) if last.a + last.len == m.a && last.b + last.len == m.b => last.len += m.len,
            _ => out.push(m),
        }
    }
    out
}

/// Drops common runs no longer than the changes on both sides of them (as diff-match-patch's
/// semantic cleanup does): keeping a lone space between two replaced sentences saves nothing
/// and shreds the text into tiny items.
fn cleanup_semantic(mut matches: Vec<Match>) -> Vec<Match> {
    // A few passes settle it; each drop can only make a neighbour's changes larger.
    for _ in 0..8 {
        let mut out: Vec<Match> = Vec::with_capacity(matches.len());
        let mut dropped = false;
        for (k, m) in matches.iter().enumerate() {
            let (pa, pb) = out.last().map_or((0, 0), |p| (p.a + p.len, p.b + p.len));
            let before = (m.a - pa).max(m.b - pb);
            let after = match matches.get(k + 1) {
                Some(n) => (n.a - (m.a + m.len)).max(n.b - (m.b + m.len)),
                // After the last run, up to the ends: unknown here, so never drop it for that.
                None => 0,
            };
            if m.len <= before && m.len <= after {
                dropped = true;
            } else {
                out.push(*m);
            }
        }
        matches = out;
        if !dropped {
            break;
        }
    }
    matches
}

/// Common runs of two sequences by Myers' O((N+M)·D) algorithm in linear space (divide and
/// conquer on the middle snake, after diff-match-patch's `bisect`), ascending and merged.
/// `budget` bounds the work; stretches left when it runs out get no common runs.
fn myers<X: PartialEq>(a: &[X], b: &[X], budget: &mut u64) -> Vec<Match> {
    let lim = (a.len() + b.len()).div_ceil(2) + 1;
    let mut search = Myers {
        a,
        b,
        vf: V::new(lim),
        vb: V::new(lim),
        out: Vec::new(),
        budget,
    };
    search.conquer(0, a.len(), 0, b.len());
    // Runs come out in order: prefix, left half, right half, suffix.
    let out = std::mem::take(&mut search.out);
    merge_adjacent(out)
}

/// Furthest-reaching x per diagonal k (negative k too); -1 = not reached.
struct V {
    center: isize,
    /// Diagonals in use by the current search: -window..=window.
    window: isize,
    v: Vec<isize>,
}

impl V {
    fn new(lim: usize) -> Self {
        V {
            center: lim as isize + 1,
            window: 0,
            v: vec![-1; 2 * lim + 3],
        }
    }

    /// Starts a search whose diagonals stay within -window..=window.
    fn reset(&mut self, window: isize) {
        self.window = window;
        let (lo, hi) = (
            (self.center - window) as usize,
            (self.center + window) as usize,
        );
        self.v[lo..=hi].fill(-1);
    }

    fn get(&self, k: isize) -> isize {
        if k.abs() > self.window {
            -1
        } else {
            self.v[(k + self.center) as usize]
        }
    }

    fn set(&mut self, k: isize, x: isize) {
        if k.abs() <= self.window {
            self.v[(k + self.center) as usize] = x;
        }
    }
}

struct Myers<'s, 'b, X> {
    a: &'s [X],
    b: &'s [X],
    vf: V,
    vb: V,
    out: Vec<Match>,
    budget: &'b mut u64,
}

impl<X: PartialEq> Myers<'_, '_, X> {
    fn conquer(&mut self, mut a0: usize, mut a1: usize, mut b0: usize, mut b1: usize) {
        let prefix = common_prefix(&self.a[a0..a1], &self.b[b0..b1]);
        if prefix > 0 {
            self.out.push(Match {
                a: a0,
                b: b0,
                len: prefix,
            });
        }
        a0 += prefix;
        b0 += prefix;
        let suffix = common_suffix(&self.a[a0..a1], &self.b[b0..b1]);
        a1 -= suffix;
        b1 -= suffix;
        if a0 < a1
            && b0 < b1
            && let Some((x, y)) = self.middle_snake(a0, a1, b0, b1)
        {
            self.conquer(a0, x, b0, y);
            self.conquer(x, a1, y, b1);
        }
        if suffix > 0 {
            self.out.push(Match {
                a: a1,
                b: b1,
                len: suffix,
            });
        }
    }

    /// A point (x, y) on an optimal edit path of `a[a0..a1]` → `b[b0..b1]`, strictly inside
    /// (neither corner, so both halves are smaller); `None` when the budget ran out. Both
    /// ranges are non-empty.
    fn middle_snake(
        &mut self,
        a0: usize,
        a1: usize,
        b0: usize,
        b1: usize,
    ) -> Option<(usize, usize)> {
        let (n, m) = ((a1 - a0) as isize, (b1 - b0) as isize);
        let max_d = (n + m + 1) / 2;
        self.vf.reset(max_d + 1);
        self.vb.reset(max_d + 1);
        self.vf.set(1, 0);
        self.vb.set(1, 0);
        let delta = n - m;
        // With an odd delta the paths meet during a forward step, else during a backward one.
        let front = delta & 1 == 1;
        // Diagonals that ran off the grid are not walked again.
        let (mut k1start, mut k1end, mut k2start, mut k2end) = (0, 0, 0, 0);
        let on_grid = |x: isize, k: isize| x >= 0 && x <= n && x - k >= 0 && x - k <= m;
        for d in 0..max_d {
            let cost = 2 * (d as u64 + 1);
            if *self.budget < cost {
                *self.budget = 0;
                return None;
            }
            *self.budget -= cost;
            // Forward path, from the top-left corner.
            let mut k1 = -d + k1start;
            while k1 <= d - k1end {
                let mut x1 = if k1 == -d || (k1 != d && self.vf.get(k1 - 1) < self.vf.get(k1 + 1)) {
                    self.vf.get(k1 + 1)
                } else {
                    self.vf.get(k1 - 1) + 1
                };
                let mut y1 = x1 - k1;
                if x1 < n && y1 < m && y1 >= 0 {
                    let run =
                        common_prefix(&self.a[a0 + x1 as usize..a1], &self.b[b0 + y1 as usize..b1])
                            as isize;
                    *self.budget = self.budget.saturating_sub(run as u64);
                    x1 += run;
                    y1 += run;
                }
                self.vf.set(k1, x1);
                if x1 > n {
                    k1end += 2;
                } else if y1 > m {
                    k1start += 2;
                } else if front {
                    let k2 = delta - k1;
                    let x2 = self.vb.get(k2);
                    if x2 != -1 && on_grid(x2, k2) && x1 >= n - x2 {
                        return self.split(x1, y1, n, m, a0, b0);
                    }
                }
                k1 += 2;
            }
            // Backward path, from the bottom-right corner (x and y count from the ends).
            let mut k2 = -d + k2start;
            while k2 <= d - k2end {
                let mut x2 = if k2 == -d || (k2 != d && self.vb.get(k2 - 1) < self.vb.get(k2 + 1)) {
                    self.vb.get(k2 + 1)
                } else {
                    self.vb.get(k2 - 1) + 1
                };
                let mut y2 = x2 - k2;
                if x2 < n && y2 < m && y2 >= 0 {
                    let run =
                        common_suffix(&self.a[a0..a1 - x2 as usize], &self.b[b0..b1 - y2 as usize])
                            as isize;
                    *self.budget = self.budget.saturating_sub(run as u64);
                    x2 += run;
                    y2 += run;
                }
                self.vb.set(k2, x2);
                if x2 > n {
                    k2end += 2;
                } else if y2 > m {
                    k2start += 2;
                } else if !front {
                    let k1 = delta - k2;
                    let x1 = self.vf.get(k1);
                    if x1 != -1 && on_grid(x1, k1) && x1 >= n - x2 {
                        return self.split(x1, x1 - k1, n, m, a0, b0);
                    }
                }
                k2 += 2;
            }
        }
        None
    }

    /// The split point in absolute indexes, refusing a corner (which would not divide the
    /// problem; it does not happen on trimmed input, and refusing keeps recursion finite).
    fn split(
        &self,
        x: isize,
        y: isize,
        n: isize,
        m: isize,
        a0: usize,
        b0: usize,
    ) -> Option<(usize, usize)> {
        let corner = (x == 0 && y == 0) || (x == n && y == m);
        (!corner && (0..=n).contains(&x) && (0..=m).contains(&y))
            .then(|| (a0 + x as usize, b0 + y as usize))
    }
}

#[cfg(test)]
mod tests;
