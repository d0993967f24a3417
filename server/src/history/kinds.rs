//! What each root (top-level) shared type of a document holds.
//!
//! A Yjs update names the root an item belongs to but not the root's type: `doc.getText("t")`
//! and `doc.getArray("t")` produce the same wire format for the root itself. A document rebuilt
//! from stored updates therefore has "undefined" roots, and the kind has to be inferred from
//! what the root contains. Nested shared types do carry their type on the wire, so only roots
//! need this.

use std::sync::Arc;

use yrs::branch::BranchPtr;
use yrs::types::TypeRef;
use yrs::types::text::YChange;
use yrs::{
    Array, ArrayRef, Doc, GetString, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact,
    XmlFragment, XmlFragmentRef,
};

/// What a root (top-level) shared type of a document holds. Yjs updates do not record a root's
/// type; it is inferred from content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RootKind {
    /// `Y.Text`: characters, embeds and formatting marks.
    Text,
    /// `Y.XmlFragment` (what y-prosemirror / TipTap use): XML elements and XML texts.
    Xml,
    /// `Y.Map`: keyed entries.
    Map,
    /// `Y.Array`: a list of values or shared types.
    Array,
}

/// Every root type of `doc` with its inferred kind, sorted by name. Opens its own read
/// transaction.
///
/// Roots that are undefined (rebuilt from updates) and hold nothing visible are left out: an
/// empty root renders the same whatever its kind.
pub(crate) fn root_kinds(doc: &Doc) -> Vec<(Arc<str>, RootKind)> {
    let txn = doc.transact();
    root_kinds_in(&txn)
}

/// [`root_kinds`] inside a transaction the caller already holds.
pub(crate) fn root_kinds_in<T: ReadTxn>(txn: &T) -> Vec<(Arc<str>, RootKind)> {
    let mut kinds: Vec<(Arc<str>, RootKind)> = txn
        .root_refs()
        .filter_map(|(name, out)| Some((Arc::from(name), kind_of_root(txn, out)?)))
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    kinds
}

/// Makes `doc`'s root types concrete (calls `get_or_insert_text` / `_xml_fragment` / `_map` /
/// `_array` per kind, with NO transaction open) so typed refs can be obtained afterwards;
/// returns the kinds.
///
/// Must not be called while a transaction on `doc` is open: `get_or_insert_*` opens a write
/// transaction of its own and would deadlock.
#[cfg(test)]
pub(crate) fn type_roots(doc: &Doc) -> Vec<(Arc<str>, RootKind)> {
    // The read transaction of `root_kinds` is closed when it returns.
    let kinds = root_kinds(doc);
    for (name, kind) in &kinds {
        match kind {
            RootKind::Text => {
                doc.get_or_insert_text(name.clone());
            }
            RootKind::Xml => {
                doc.get_or_insert_xml_fragment(name.clone());
            }
            RootKind::Map => {
                doc.get_or_insert_map(name.clone());
            }
            RootKind::Array => {
                doc.get_or_insert_array(name.clone());
            }
        }
    }
    kinds
}

/// The kind of one root, `None` for an undefined root with no visible content.
pub(crate) fn kind_of_root<T: ReadTxn>(txn: &T, root: Out) -> Option<RootKind> {
    match root {
        Out::YText(_) => Some(RootKind::Text),
        // A root XmlText is a formatted text; a root XmlElement does not occur in Yjs (roots
        // are created by `doc.get`, which has no element name) but renders like a fragment.
        Out::YXmlText(_) => Some(RootKind::Text),
        Out::YXmlFragment(_) | Out::YXmlElement(_) => Some(RootKind::Xml),
        Out::YMap(_) => Some(RootKind::Map),
        Out::YArray(_) => Some(RootKind::Array),
        Out::UndefinedRef(ptr) => infer(txn, ptr),
        // Weak links and sub-documents are not roots; treat anything else as opaque data.
        _ => None,
    }
}

/// Infers the kind of an undefined root from its content.
///
/// yrs' list iterators (`ArrayRef::iter`, `get`, `to_json`, `XmlFragment::children`) must not be
/// used on a branch that may hold text: they count string items in the document's offset unit
/// but read them in characters, and on a character wider than one unit (an emoji in UTF-16, any
/// non-ASCII in bytes) they loop forever. So this looks at the first visible item only (an XML
/// node means a fragment) and otherwise asks whether the branch holds any text characters:
/// `Y.Array` never stores strings as text items, so characters mean a `Y.Text`. That check is
/// linear in the root, which callers pay at most once per root (they are linear anyway).
fn infer<T: ReadTxn>(txn: &T, ptr: BranchPtr) -> Option<RootKind> {
    match ptr.type_ref() {
        // Defined by someone calling get_or_insert_* on this doc: trust the recorded type.
        TypeRef::Text | TypeRef::XmlText => return Some(RootKind::Text),
        TypeRef::XmlFragment | TypeRef::XmlElement(_) => return Some(RootKind::Xml),
        TypeRef::Map => return Some(RootKind::Map),
        TypeRef::Array => return Some(RootKind::Array),
        _ => {}
    }
    if XmlFragmentRef::from(ptr).first_child().is_some() {
        return Some(RootKind::Xml);
    }
    // Number of visible list elements (kept by yrs, no walk).
    if ArrayRef::from(ptr).len(txn) > 0 {
        return if has_text(txn, ptr) {
            Some(RootKind::Text)
        } else {
            Some(RootKind::Array)
        };
    }
    if MapRef::from(ptr).len(txn) > 0 {
        return Some(RootKind::Map);
    }
    None
}

/// Whether `branch` holds any visible text characters (string items).
pub(crate) fn has_text<T: ReadTxn>(txn: &T, branch: BranchPtr) -> bool {
    !TextRef::from(branch).get_string(txn).is_empty()
}

/// The visible elements of a list-like branch (array, XML fragment or element), read safely.
///
/// yrs' array iterator (`ArrayRef::iter`, also behind `get`, `to_json` and
/// `XmlFragment::children`) counts string items in the document's offset unit but reads them
/// in characters, and on a character wider than one unit (an emoji in UTF-16, any non-ASCII in
/// bytes) it loops forever. So it is used only when the branch holds no text; otherwise the
/// text walk lists the strings and nested types (plain values mixed into a text are then left
/// out).
pub(crate) fn list_values<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Vec<Out> {
    if has_text(txn, branch) {
        TextRef::from(branch)
            .diff(txn, YChange::identity)
            .into_iter()
            .map(|d| d.insert)
            .collect()
    } else {
        ArrayRef::from(branch).iter(txn).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{
        ArrayPrelim, GetString, MapPrelim, Text, TextPrelim, Update, WriteTxn, XmlElementPrelim,
        XmlFragment, XmlTextPrelim,
    };

    /// Copies `source` into a fresh document through an encoded update, as the server's history
    /// does: the copy's roots are undefined.
    fn through_update(source: &Doc) -> Doc {
        let bytes = source
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let copy = Doc::new();
        copy.transact_mut()
            .apply_update(Update::decode_v1(&bytes).unwrap())
            .unwrap();
        copy
    }

    #[test]
    fn infers_every_kind_from_updates() {
        let source = Doc::new();
        {
            let mut txn = source.transact_mut();
            let text = txn.get_or_insert_text("title");
            text.insert(&mut txn, 0, "Hello");
            let frag = txn.get_or_insert_xml_fragment("default");
            let p = frag.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            p.push_back(&mut txn, XmlTextPrelim::new("hi"));
            let map = txn.get_or_insert_map("meta");
            map.insert(&mut txn, "k", "value");
            let arr = txn.get_or_insert_array("list");
            arr.push_back(&mut txn, "ab");
            let arr2 = txn.get_or_insert_array("numbers");
            arr2.push_back(&mut txn, 1);
            let arr3 = txn.get_or_insert_array("nested");
            arr3.push_back(&mut txn, MapPrelim::default());
            let arr4 = txn.get_or_insert_array("texts");
            arr4.push_back(&mut txn, TextPrelim::new("x"));
            let map2 = txn.get_or_insert_map("nested_map");
            map2.insert(&mut txn, "a", ArrayPrelim::default());
            txn.get_or_insert_text("empty");
        }
        let copy = through_update(&source);
        let kinds = root_kinds(&copy);
        let expect: Vec<(Arc<str>, RootKind)> = vec![
            ("default".into(), RootKind::Xml),
            ("list".into(), RootKind::Array),
            ("meta".into(), RootKind::Map),
            ("nested".into(), RootKind::Array),
            ("nested_map".into(), RootKind::Map),
            ("numbers".into(), RootKind::Array),
            ("texts".into(), RootKind::Array),
            ("title".into(), RootKind::Text),
        ];
        assert_eq!(kinds, expect);
        // Defined roots keep their declared kind, empty ones included.
        let mut defined = root_kinds(&source);
        defined.retain(|(n, _)| &**n == "empty");
        assert_eq!(defined, vec![("empty".into(), RootKind::Text)]);
    }

    #[test]
    fn text_with_formats_and_leading_embed_is_text() {
        let source = Doc::new();
        {
            let mut txn = source.transact_mut();
            let text = txn.get_or_insert_text("t");
            text.insert(&mut txn, 0, "bold and plain");
            let bold = yrs::types::Attrs::from([("bold".into(), true.into())]);
            text.format(&mut txn, 0, 4, bold);
            text.insert_embed(&mut txn, 0, yrs::Any::from(7));
        }
        let copy = through_update(&source);
        assert_eq!(root_kinds(&copy), vec![("t".into(), RootKind::Text)]);
    }

    #[test]
    fn type_roots_makes_typed_refs_available() {
        let source = Doc::new();
        {
            let mut txn = source.transact_mut();
            let text = txn.get_or_insert_text("title");
            text.insert(&mut txn, 0, "Hi");
        }
        let copy = through_update(&source);
        assert_eq!(type_roots(&copy), vec![("title".into(), RootKind::Text)]);
        let text = copy.get_or_insert_text("title");
        assert_eq!(text.get_string(&copy.transact()), "Hi");
        // Now defined: the kind comes from the type, not from sampling.
        assert_eq!(root_kinds(&copy), vec![("title".into(), RootKind::Text)]);
    }

    #[test]
    fn wide_characters_do_not_hang() {
        // yrs' array iterator loops forever on these; inference must not use it on text.
        let source = Doc::with_options(yrs::Options {
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        {
            let mut txn = source.transact_mut();
            let text = txn.get_or_insert_text("t");
            text.insert(&mut txn, 0, "😀 naïve ☃");
            let bold = yrs::types::Attrs::from([("bold".into(), true.into())]);
            text.format(&mut txn, 0, 2, bold);
        }
        let copy = through_update(&source);
        assert_eq!(root_kinds(&copy), vec![("t".into(), RootKind::Text)]);
        let bytes_doc = Doc::with_options(yrs::Options {
            offset_kind: yrs::OffsetKind::Bytes,
            ..yrs::Options::default()
        });
        let state = copy
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        bytes_doc
            .transact_mut()
            .apply_update(Update::decode_v1(&state).unwrap())
            .unwrap();
        assert_eq!(root_kinds(&bytes_doc), vec![("t".into(), RootKind::Text)]);
        let txn = bytes_doc.transact();
        let branch = crate::history::branch_of(&txn.get_text("t").unwrap());
        let joined: String = list_values(&txn, branch)
            .into_iter()
            .map(|v| match v {
                Out::Any(yrs::Any::String(s)) => s.to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(joined, "😀 naïve ☃");
    }

    #[test]
    fn deleted_content_is_empty() {
        let source = Doc::new();
        {
            let mut txn = source.transact_mut();
            let text = txn.get_or_insert_text("gone");
            text.insert(&mut txn, 0, "abc");
            text.remove_range(&mut txn, 0, 3);
        }
        let copy = through_update(&source);
        assert_eq!(root_kinds(&copy), vec![]);
    }
}
