//! One restore: the target's read transaction, the tables both documents share, and the walk
//! that edits each shared type of the live document into the target's. How a text, a keyed
//! type or a list is edited is in the submodules.

mod keyed;
mod list;
mod text;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use yrs::types::{AsPrelim, Attrs};
use yrs::{
    Array, ArrayPrelim, ArrayRef, Doc, In, Map, MapPrelim, MapRef, OffsetKind, Options, Out,
    ReadTxn, TextPrelim, TransactionMut, XmlElementPrelim, XmlFragmentPrelim, XmlTextPrelim,
};

use tracing::error;

use super::fingerprint;
use super::roots::{clear_list, clear_map, clear_root, make_root, readable, root_as, root_ptr};
use crate::history::kinds::{RootKind, root_kinds_in};

/// Work allowed to all Myers searches of one restore (diagonal steps). Myers costs
/// O((N+M)·D); two long, completely different texts could otherwise take minutes. When it is
/// used up, what is left is diffed coarsely (the result stays exact, only less minimal).
const DIFF_BUDGET: u64 = 300_000_000;

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
pub(super) struct Restorer<'t, T: ReadTxn> {
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
    pub(super) fn new(target: &'t T, offsets: OffsetKind) -> Self {
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
    pub(super) fn target_readable(&self, roots: &[(Arc<str>, RootKind)]) -> bool {
        roots.iter().all(|(name, kind)| {
            root_as(self.target, name, *kind).is_none_or(|root| readable(self.target, &root))
        })
    }

    /// Brings every root of the live document (`txn`) to the target (`target_roots`: its
    /// roots' kinds), then checks the result.
    pub(super) fn restore_roots(
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

    /// A structural fingerprint of a value or shared type: equal content ⇒ equal fingerprint
    /// (whatever the items' ids); different content ⇒ different, but for a 2⁻⁶⁴ chance.
    fn fingerprint<R: ReadTxn>(&self, txn: &R, v: &Out) -> u64 {
        fingerprint::of(&self.seeds, txn, v)
    }
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
