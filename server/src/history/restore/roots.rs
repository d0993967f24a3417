//! Reading and emptying the roots and lists of a document: viewing a root as a kind, creating
//! and clearing roots, and reading a list's items without hitting yrs' string-item bug.

use std::sync::Arc;

use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::{
    Any, Array, ArrayRef, Map, MapRef, OffsetKind, Out, ReadTxn, Root, Text, TextRef,
    TransactionMut, Xml, XmlFragmentRef,
};

use crate::history::kinds::RootKind;

/// Creates root `name` of the live document as `kind`.
pub(super) fn make_root(txn: &mut TransactionMut, name: &Arc<str>, kind: RootKind) -> Out {
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
pub(super) fn root_as<R: ReadTxn>(txn: &R, name: &Arc<str>, kind: RootKind) -> Option<Out> {
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
pub(super) fn root_ptr<R: ReadTxn>(txn: &R, name: &Arc<str>) -> Option<BranchPtr> {
    Root::<ArrayRef>::new(name.clone())
        .get(txn)
        .map(|a| BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(&a)))
}

/// Empties root `name`, whose content is of kind `kind` (both its list and its keyed part).
pub(super) fn clear_root(txn: &mut TransactionMut, name: &Arc<str>) {
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
pub(super) fn clear_list(txn: &mut TransactionMut, ptr: BranchPtr) {
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
pub(super) fn items<R: ReadTxn>(txn: &R, list: &ArrayRef) -> Option<Vec<Out>> {
    let text = TextRef::from(BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(list)));
    let has_strings = text
        .diff(txn, YChange::identity)
        .iter()
        .any(|chunk| matches!(chunk.insert, Out::Any(Any::String(_))));
    (!has_strings).then(|| list.iter(txn).collect())
}

/// Whether every list inside `v` (itself included) can be read by [`items`].
pub(super) fn readable<R: ReadTxn>(txn: &R, v: &Out) -> bool {
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
pub(super) fn clear_map(txn: &mut TransactionMut, map: &MapRef) {
    let mut keys: Vec<String> = map.keys(txn).map(str::to_owned).collect();
    keys.sort();
    for key in keys {
        map.remove(txn, &key);
    }
}
