//! Tests of [`restore_into`]: content, convergence of other replicas, concurrent edits,
//! identity preservation, and a real editing trace.

use super::*;
use crate::history::json::content_json;
use crate::history::kinds::RootKind;
use crate::history::reconstruct;
use serde_json::{Value, json};
use std::sync::Arc;
use yrs::branch::BranchPtr;
use yrs::types::Attrs;
use yrs::types::ToJson;
use yrs::types::text::YChange;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Assoc, GetString, IndexedSequence, Map, MapPrelim, MapRef,
    Out, ReadTxn, Root, StateVector, Text, TextPrelim, TextRef, TransactionMut, Update, WriteTxn,
    Xml, XmlElementPrelim, XmlElementRef, XmlFragment, XmlFragmentRef, XmlOut, XmlTextPrelim,
    XmlTextRef,
};

// ------------------------------------------------------------------ helpers

/// A rendering of a document's content independent of the code under test: per root (kind
/// inferred from content) its text delta, XML tree, or JSON.
fn render(doc: &Doc) -> Value {
    let txn = doc.transact();
    let mut out = serde_json::Map::new();
    for (name, kind) in root_kinds_in(&txn) {
        let value = match kind {
            RootKind::Text => match Root::<TextRef>::new(name.clone()).get(&txn) {
                Some(t) => render_text(&txn, &t),
                None => Value::Null,
            },
            RootKind::Xml => match Root::<XmlFragmentRef>::new(name.clone()).get(&txn) {
                Some(f) => Value::Array(render_children(&txn, &f)),
                None => Value::Null,
            },
            RootKind::Map => match Root::<MapRef>::new(name.clone()).get(&txn) {
                Some(m) => any_json(&m.to_json(&txn)),
                None => Value::Null,
            },
            RootKind::Array => match Root::<ArrayRef>::new(name.clone()).get(&txn) {
                Some(a) => any_json(&a.to_json(&txn)),
                None => Value::Null,
            },
        };
        // An emptied root renders like an absent one.
        if !is_empty(&value) {
            out.insert(name.to_string(), value);
        }
    }
    Value::Object(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn any_json(any: &Any) -> Value {
    let mut s = String::new();
    any.to_json(&mut s);
    serde_json::from_str(&s).unwrap()
}

/// A text as a normalized delta: `[{"insert": ..., "attributes": {...}}]`, runs merged.
fn render_text<R: ReadTxn, X: Text>(txn: &R, text: &X) -> Value {
    let mut ops: Vec<(Value, Value)> = Vec::new();
    for d in text.diff(txn, YChange::identity) {
        let attrs = d
            .attributes
            .map(|a| {
                let m: serde_json::Map<String, Value> = a
                    .iter()
                    .map(|(k, v)| (k.to_string(), any_json(v)))
                    .collect();
                Value::Object(m)
            })
            .unwrap_or(json!({}));
        let insert = match d.insert {
            Out::Any(Any::String(s)) => Value::String(s.to_string()),
            Out::Any(other) => json!({ "embed": any_json(&other) }),
            other => json!({ "embed": any_json(&other.to_json(txn)) }),
        };
        if let (Some((Value::String(prev), prev_attrs)), Value::String(s)) =
            (ops.last_mut(), &insert)
            && *prev_attrs == attrs
        {
            prev.push_str(s);
            continue;
        }
        ops.push((insert, attrs));
    }
    Value::Array(
        ops.into_iter()
            .map(|(i, a)| json!({ "insert": i, "attributes": a }))
            .collect(),
    )
}

fn render_children<R: ReadTxn, F: XmlFragment>(txn: &R, node: &F) -> Vec<Value> {
    node.children(txn).map(|c| render_xml(txn, &c)).collect()
}

fn render_xml<R: ReadTxn>(txn: &R, node: &XmlOut) -> Value {
    match node {
        XmlOut::Element(e) => {
            let attrs: serde_json::Map<String, Value> = e
                .attributes(txn)
                .map(|(k, v)| (k.to_string(), any_json(&v.to_json(txn))))
                .collect();
            json!({ "tag": e.tag().to_string(), "attrs": attrs, "children": render_children(txn, e) })
        }
        XmlOut::Text(t) => json!({ "text": render_text(txn, t) }),
        XmlOut::Fragment(f) => json!({ "fragment": render_children(txn, f) }),
    }
}

/// The admin API's rendering, without empty roots (it lists a typed root even when empty,
/// and a restore leaves emptied roots in place).
fn api_json(doc: &Doc) -> Value {
    let mut value = content_json(doc);
    if let Value::Object(roots) = &mut value {
        roots.retain(|_, root| {
            let v = &root["value"];
            !(is_empty(v)
                || v["type"] == "doc" && v["content"].as_array().is_some_and(Vec::is_empty))
        });
    }
    value
}

/// The full state of `doc` as an update.
fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

/// A replica of `doc` (own client id), through an encoded update like a reconnecting client.
fn replica(doc: &Doc) -> Doc {
    let copy = Doc::new();
    apply(&copy, &state(doc));
    copy
}

/// A replica with the history engine's options (UTF-16 offsets, untyped roots), as
/// `reconstruct` builds targets.
fn history_replica(doc: &Doc) -> Doc {
    reconstruct(Some(&state(doc)), std::iter::empty(), false).unwrap()
}

/// Restores `current` to `target` and checks the invariants every restore must keep: the
/// content equals the target's; a replica that had `current`'s old state and gets only the
/// returned update converges; the update is `None` exactly when nothing changed.
fn restore_checked(current: &Doc, target: &Doc) -> Option<Vec<u8>> {
    let before = replica(current);
    let unchanged = render(current) == render(target);
    let update = restore_into(current, target).unwrap();
    assert_eq!(
        render(current),
        render(target),
        "content differs from the target"
    );
    // The admin API's rendering agrees (it leaves formatting out, so it checks less).
    assert_eq!(api_json(current), api_json(target));
    match &update {
        Some(u) => {
            assert!(!unchanged, "an update for a document that already matched");
            apply(&before, u);
            assert_eq!(
                render(&before),
                render(target),
                "a replica did not converge"
            );
        }
        None => assert!(unchanged, "no update although the content differed"),
    }
    update
}

fn attrs(pairs: &[(&str, Any)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (Arc::from(*k), v.clone()))
        .collect()
}

fn bold() -> Attrs {
    attrs(&[("bold", Any::Bool(true))])
}

// ------------------------------------------------------------------ text

fn text_doc(s: &str) -> Doc {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    text.insert(&mut doc.transact_mut(), 0, s);
    doc
}

#[test]
fn plain_text_insertions_deletions_and_both() {
    let cases = [
        ("hello world", "hello brave new world"),
        ("hello brave new world", "hello world"),
        ("the quick brown fox", "a quick red fox jumps"),
        ("", "from nothing"),
        ("to nothing", ""),
        ("naïve café ☕ 𝄞 done", "naïve 𝄞 café ☕☕ done!"),
        (
            "line one\nline two\nline three\n",
            "line zero\nline one\nline 2\nline three\n",
        ),
    ];
    for (from, to) in cases {
        let current = text_doc(from);
        let target = history_replica(&text_doc(to));
        restore_checked(&current, &target);
        let txn = current.transact();
        assert_eq!(current.get_or_insert_text_in(&txn).get_string(&txn), to);
    }
}

/// `Doc::get_or_insert_text` would open a transaction; tests read through an open one.
trait TextIn {
    fn get_or_insert_text_in<R: ReadTxn>(&self, txn: &R) -> TextRef;
}
impl TextIn for Doc {
    fn get_or_insert_text_in<R: ReadTxn>(&self, txn: &R) -> TextRef {
        Root::<TextRef>::new("t").get(txn).unwrap()
    }
}

#[test]
fn unchanged_content_gives_no_update() {
    let current = text_doc("same");
    let target = history_replica(&current);
    assert_eq!(restore_checked(&current, &target), None);
    // Different history, same content: still nothing to do.
    let other = text_doc("sa");
    other
        .get_or_insert_text("t")
        .push(&mut other.transact_mut(), "me");
    assert_eq!(restore_checked(&current, &other), None);
}

#[test]
fn text_edit_is_minimal() {
    let base = "a".repeat(50) + " middle " + &"b".repeat(50);
    let current = text_doc(&base);
    let target = text_doc(&base.replace("middle", "center"));
    let update = restore_checked(&current, &target).unwrap();
    // Only the changed word travels, not the 100 kept characters.
    assert!(update.len() < 60, "update of {} bytes", update.len());
}

#[test]
fn rich_text_formats() {
    let current = Doc::new();
    {
        let text = current.get_or_insert_text("t");
        let mut txn = current.transact_mut();
        text.insert(&mut txn, 0, "Hello bold world, plain tail");
        text.format(&mut txn, 6, 4, bold());
        text.format(
            &mut txn,
            11,
            5,
            attrs(&[("link", Any::from("https://a.example"))]),
        );
    }
    let target = Doc::new();
    {
        let text = target.get_or_insert_text("t");
        let mut txn = target.transact_mut();
        text.insert(&mut txn, 0, "Hello bold brave world, plain tail!");
        // "bold" loses bold and gets italic; "world" keeps a different link; "tail" bold.
        text.format(&mut txn, 6, 4, attrs(&[("italic", Any::Bool(true))]));
        text.format(
            &mut txn,
            17,
            5,
            attrs(&[("link", Any::from("https://b.example"))]),
        );
        text.format(&mut txn, 30, 4, bold());
        text.insert_embed(&mut txn, 5, json_any(r#"{"image":"x.png"}"#));
    }
    let target = history_replica(&target);
    restore_checked(&current, &target);
    // And back.
    let original = history_replica(&replica(&current));
    restore_checked(&current, &original);
}

fn json_any(s: &str) -> Any {
    Any::from_json(s).unwrap()
}

#[test]
fn inserted_text_does_not_inherit_neighbouring_formatting() {
    let current = Doc::new();
    {
        let text = current.get_or_insert_text("t");
        let mut txn = current.transact_mut();
        text.insert_with_attributes(&mut txn, 0, "bold", bold());
        text.insert(&mut txn, 4, "plain");
    }
    let target = Doc::new();
    {
        let text = target.get_or_insert_text("t");
        let mut txn = target.transact_mut();
        text.insert_with_attributes(&mut txn, 0, "bold", bold());
        text.insert(&mut txn, 4, "XYplain");
    }
    restore_checked(&current, &target);
}

#[test]
fn utf16_and_byte_offset_documents() {
    // The live document counts bytes (the room's `Doc::new()`), targets from the history
    // engine count UTF-16 units; characters outside the BMP differ in both.
    let from = "😀 a 𝄞 b ☕ c";
    let to = "😀 A 𝄞𝄞 b c ☕";
    for current in [text_doc(from), {
        let d = reconstruct(None, std::iter::empty(), false).unwrap();
        let u = state(&text_doc(from));
        apply(&d, &u);
        d
    }] {
        let target = history_replica(&text_doc(to));
        restore_checked(&current, &target);
    }
}

// ------------------------------------------------------------------ XML (ProseMirror)

/// Builds a ProseMirror-shaped fragment from a compact description.
enum Node<'a> {
    El(&'a str, Vec<(&'a str, Any)>, Vec<Node<'a>>),
    /// Text runs: (text, bold?).
    Tx(Vec<(&'a str, bool)>),
}

fn build<F: XmlFragment>(txn: &mut TransactionMut, parent: &F, nodes: &[Node]) {
    for node in nodes {
        let len = parent.len(txn);
        match node {
            Node::El(tag, attrs, children) => {
                let el: XmlElementRef = parent.insert(txn, len, XmlElementPrelim::empty(*tag));
                for (k, v) in attrs {
                    el.insert_attribute(txn, *k, v.clone());
                }
                build(txn, &el, children);
            }
            Node::Tx(runs) => {
                let t: XmlTextRef = parent.insert(txn, len, XmlTextPrelim::new(""));
                for (s, b) in runs {
                    let at = t.len(txn);
                    let a = if *b { bold() } else { Attrs::new() };
                    t.insert_with_attributes(txn, at, s, a);
                }
            }
        }
    }
}

fn xml_doc(nodes: &[Node]) -> Doc {
    let doc = Doc::new();
    let frag = doc.get_or_insert_xml_fragment("default");
    build(&mut doc.transact_mut(), &frag, nodes);
    doc
}

fn p<'a>(runs: Vec<(&'a str, bool)>) -> Node<'a> {
    Node::El("paragraph", vec![], vec![Node::Tx(runs)])
}

fn heading(level: i64, s: &str) -> Node<'_> {
    Node::El(
        "heading",
        vec![("level", Any::from(level))],
        vec![Node::Tx(vec![(s, false)])],
    )
}

fn list<'a>(items: Vec<Vec<Node<'a>>>) -> Node<'a> {
    Node::El(
        "bulletList",
        vec![],
        items
            .into_iter()
            .map(|c| Node::El("listItem", vec![], c))
            .collect(),
    )
}

fn article_v1() -> Vec<Node<'static>> {
    vec![
        heading(1, "Title"),
        p(vec![
            ("First paragraph, ", false),
            ("bold", true),
            (" end.", false),
        ]),
        p(vec![("Untouched paragraph stays the same item.", false)]),
        list(vec![
            vec![p(vec![("one", false)])],
            vec![
                p(vec![("two", false)]),
                list(vec![vec![p(vec![("two.a", false)])]]),
            ],
            vec![p(vec![("three", false)])],
        ]),
        p(vec![("Last words.", false)]),
    ]
}

fn article_v2() -> Vec<Node<'static>> {
    vec![
        heading(2, "Title, revised"),
        p(vec![
            ("First ", false),
            ("paragraph", true),
            (", bold end.", false),
        ]),
        p(vec![("Untouched paragraph stays the same item.", false)]),
        p(vec![("A new paragraph.", false)]),
        list(vec![
            vec![
                p(vec![("two", false)]),
                list(vec![vec![p(vec![("two.a!", true)])]]),
            ],
            vec![p(vec![("three", false)])],
            vec![p(vec![("four", false)])],
        ]),
        Node::El("blockquote", vec![], vec![p(vec![("Last words.", false)])]),
    ]
}

/// The XmlText of the untouched paragraph (third block).
fn untouched_text<R: ReadTxn>(txn: &R, doc_frag: &XmlFragmentRef) -> XmlTextRef {
    let XmlOut::Element(para) = doc_frag.get(txn, 2).unwrap() else {
        panic!("not an element")
    };
    let XmlOut::Text(text) = para.get(txn, 0).unwrap() else {
        panic!("not a text")
    };
    assert_eq!(
        text.get_string(txn),
        "Untouched paragraph stays the same item."
    );
    text
}

#[test]
fn prosemirror_fragment_round_trip_and_identity() {
    let current = xml_doc(&article_v1());
    let original = history_replica(&current);
    let frag = current.get_or_insert_xml_fragment("default");
    let (untouched_id, sticky, sticky_offset) = {
        let txn = current.transact();
        let text = untouched_text(&txn, &frag);
        let sticky = text.sticky_index(&txn, 10, Assoc::After).unwrap();
        let offset = sticky.get_offset(&txn).unwrap().index;
        (
            AsRef::<yrs::branch::Branch>::as_ref(&text).id(),
            sticky,
            offset,
        )
    };
    let target = history_replica(&xml_doc(&article_v2()));
    restore_checked(&current, &target);
    {
        // The untouched paragraph moved down one block (a paragraph was not inserted before
        // it) but is the same CRDT item, and a cursor inside it still resolves.
        let txn = current.transact();
        let text = untouched_text(&txn, &frag);
        assert_eq!(
            AsRef::<yrs::branch::Branch>::as_ref(&text).id(),
            untouched_id
        );
        assert_eq!(sticky.get_offset(&txn).unwrap().index, sticky_offset);
    }
    // Restoring back gives the original content.
    restore_checked(&current, &original);
}

#[test]
fn edited_paragraph_keeps_identity_and_cursor_after_the_edit() {
    let current = xml_doc(&[
        p(vec![("alpha", false)]),
        p(vec![("The cat sat on the mat.", false)]),
        p(vec![("omega", false)]),
    ]);
    let frag = current.get_or_insert_xml_fragment("default");
    let (id, sticky) = {
        let txn = current.transact();
        let XmlOut::Element(para) = frag.get(&txn, 1).unwrap() else {
            panic!()
        };
        let XmlOut::Text(text) = para.get(&txn, 0).unwrap() else {
            panic!()
        };
        // Cursor before "mat".
        let sticky = text.sticky_index(&txn, 19, Assoc::After).unwrap();
        (AsRef::<yrs::branch::Branch>::as_ref(&text).id(), sticky)
    };
    let target = xml_doc(&[
        p(vec![("alpha", false)]),
        p(vec![("The dog sat on the mat.", false)]),
        p(vec![("omega", false)]),
    ]);
    restore_checked(&current, &target);
    let txn = current.transact();
    let XmlOut::Element(para) = frag.get(&txn, 1).unwrap() else {
        panic!()
    };
    let XmlOut::Text(text) = para.get(&txn, 0).unwrap() else {
        panic!()
    };
    assert_eq!(AsRef::<yrs::branch::Branch>::as_ref(&text).id(), id);
    assert_eq!(sticky.get_offset(&txn).unwrap().index, 19);
}

#[test]
fn attribute_values_keep_their_types() {
    // y-prosemirror stores attribute values as JSON (heading level is a number).
    let current = xml_doc(&[heading(1, "x")]);
    let target = xml_doc(&[
        heading(3, "x"),
        Node::El(
            "image",
            vec![
                ("src", Any::from("a.png")),
                ("width", Any::from(640)),
                ("inline", Any::Bool(false)),
                ("title", Any::Null),
            ],
            vec![],
        ),
    ]);
    restore_checked(&current, &target);
    let txn = current.transact();
    let frag = Root::<XmlFragmentRef>::new("default").get(&txn).unwrap();
    let XmlOut::Element(image) = frag.get(&txn, 1).unwrap() else {
        panic!()
    };
    assert_eq!(
        image.get_attribute(&txn, "width"),
        Some(Out::Any(Any::from(640)))
    );
}

// ------------------------------------------------------------------ maps and arrays

#[test]
fn maps_with_nested_types() {
    let current = Doc::new();
    {
        let mut txn = current.transact_mut();
        let m = txn.get_or_insert_map("m");
        m.insert(&mut txn, "keep", "same");
        m.insert(&mut txn, "change", 1);
        m.insert(&mut txn, "drop", true);
        let nested = m.insert(&mut txn, "nested", MapPrelim::default());
        nested.insert(&mut txn, "a", 1);
        nested.insert(&mut txn, "b", 2);
        let arr = m.insert(&mut txn, "list", ArrayPrelim::default());
        arr.insert_range(&mut txn, 0, [1, 2, 3]);
        let text = m.insert(&mut txn, "note", TextPrelim::new("hello"));
        text.push(&mut txn, " there");
    }
    let nested_id = {
        let txn = current.transact();
        let m = Root::<MapRef>::new("m").get(&txn).unwrap();
        let Some(Out::YMap(nested)) = m.get(&txn, "nested") else {
            panic!()
        };
        AsRef::<yrs::branch::Branch>::as_ref(&nested).id()
    };
    let target = Doc::new();
    {
        let mut txn = target.transact_mut();
        let m = txn.get_or_insert_map("m");
        m.insert(&mut txn, "keep", "same");
        m.insert(&mut txn, "change", "now a string");
        m.insert(&mut txn, "added", json_any(r#"{"deep":[1,{"x":null}]}"#));
        let nested = m.insert(&mut txn, "nested", MapPrelim::default());
        nested.insert(&mut txn, "a", 1);
        nested.insert(&mut txn, "c", 3);
        let arr = m.insert(&mut txn, "list", ArrayPrelim::default());
        arr.insert_range(&mut txn, 0, [1, 3, 4]);
        m.insert(&mut txn, "note", TextPrelim::new("hello world"));
        let sub = m.insert(&mut txn, "new_map", MapPrelim::default());
        sub.insert(&mut txn, "z", 26);
    }
    let target = history_replica(&target);
    restore_checked(&current, &target);
    let txn = current.transact();
    let m = Root::<MapRef>::new("m").get(&txn).unwrap();
    let Some(Out::YMap(nested)) = m.get(&txn, "nested") else {
        panic!()
    };
    assert_eq!(
        AsRef::<yrs::branch::Branch>::as_ref(&nested).id(),
        nested_id,
        "nested map replaced"
    );
}

#[test]
fn arrays_of_values_and_types() {
    let current = Doc::new();
    {
        let mut txn = current.transact_mut();
        let a = txn.get_or_insert_array("a");
        a.insert_range(&mut txn, 0, [1, 2, 3, 4, 5]);
        let todo = txn.get_or_insert_array("todos");
        for (i, title) in ["write", "test", "ship"].iter().enumerate() {
            let m = todo.insert(&mut txn, i as u32, MapPrelim::default());
            m.insert(&mut txn, "title", *title);
            m.insert(&mut txn, "done", false);
        }
    }
    let target = Doc::new();
    {
        let mut txn = target.transact_mut();
        let a = txn.get_or_insert_array("a");
        a.insert_range(&mut txn, 0, [0, 1, 3, 4, 6]);
        a.push_back(&mut txn, "str");
        let todo = txn.get_or_insert_array("todos");
        for (i, (title, done)) in [("write", true), ("ship", false), ("celebrate", false)]
            .iter()
            .enumerate()
        {
            let m = todo.insert(&mut txn, i as u32, MapPrelim::default());
            m.insert(&mut txn, "title", *title);
            m.insert(&mut txn, "done", *done);
        }
    }
    restore_checked(&current, &history_replica(&target));
}

// ------------------------------------------------------------------ roots

#[test]
fn roots_present_on_one_side_only_and_kind_changes() {
    let current = Doc::new();
    {
        let mut txn = current.transact_mut();
        txn.get_or_insert_text("only_current").push(&mut txn, "bye");
        txn.get_or_insert_array("was_array").push_back(&mut txn, 1);
        txn.get_or_insert_map("shared").insert(&mut txn, "k", "v");
    }
    let target = Doc::new();
    {
        let mut txn = target.transact_mut();
        txn.get_or_insert_text("only_target").push(&mut txn, "hi");
        txn.get_or_insert_text("was_array")
            .push(&mut txn, "now text");
        txn.get_or_insert_map("shared").insert(&mut txn, "k", "w");
        let f = txn.get_or_insert_xml_fragment("xml");
        f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
    }
    // Both sides through updates: the roots are untyped, as in the server.
    let current = history_replica(&current);
    let before = history_replica(&current);
    restore_checked(&current, &history_replica(&target));
    restore_checked(&current, &before);
}

// ------------------------------------------------------------------ replicas

#[test]
fn offline_edits_merge_deterministically() {
    let current = xml_doc(&article_v1());
    let offline = replica(&current);
    // The offline client types into the untouched paragraph and into one the restore deletes.
    {
        let frag = offline.get_or_insert_xml_fragment("default");
        let mut txn = offline.transact_mut();
        let text = untouched_text(&txn, &frag);
        text.insert(&mut txn, 0, "Offline: ");
        let XmlOut::Element(last) = frag.get(&txn, 4).unwrap() else {
            panic!()
        };
        let XmlOut::Text(t) = last.get(&txn, 0).unwrap() else {
            panic!()
        };
        t.push(&mut txn, " (offline)");
    }
    let offline_update = state(&offline);
    let target = history_replica(&xml_doc(&article_v2()));
    let restore = restore_into(&current, &target).unwrap().unwrap();
    // Order 1: the server has the restore, then the offline client returns.
    apply(&current, &offline_update);
    // Order 2: the offline client gets the restore first.
    apply(&offline, &restore);
    apply(&offline, &state(&current));
    apply(&current, &state(&offline));
    assert_eq!(render(&current), render(&offline));
    assert_eq!(
        current.transact().state_vector(),
        offline.transact().state_vector()
    );
    // The offline typing in the kept paragraph survived the restore.
    let txn = current.transact();
    let frag = Root::<XmlFragmentRef>::new("default").get(&txn).unwrap();
    let XmlOut::Element(para) = frag.get(&txn, 2).unwrap() else {
        panic!()
    };
    assert!(para.get_string(&txn).contains("Offline: Untouched"));
}

#[test]
fn restore_then_restore_back() {
    let current = Doc::new();
    {
        let mut txn = current.transact_mut();
        txn.get_or_insert_text("title").push(&mut txn, "Doc title");
        let m = txn.get_or_insert_map("meta");
        m.insert(&mut txn, "rev", 1);
    }
    let frag = current.get_or_insert_xml_fragment("default");
    build(&mut current.transact_mut(), &frag, &article_v1());
    let v1 = history_replica(&current);
    // Edits after v1.
    {
        let mut txn = current.transact_mut();
        let title = txn.get_or_insert_text("title");
        title.insert(&mut txn, 3, " new");
        txn.get_or_insert_map("meta").insert(&mut txn, "rev", 2);
        frag.remove_range(&mut txn, 0, 2);
    }
    let v2 = history_replica(&current);
    restore_checked(&current, &v1);
    restore_checked(&current, &v2);
    restore_checked(&current, &v1);
}

#[test]
fn same_document_is_an_error_not_a_deadlock() {
    let doc = text_doc("x");
    assert!(restore_into(&doc, &doc).is_err());
}

// ------------------------------------------------------------------ editing traces

#[derive(serde::Deserialize)]
struct TraceTxn {
    patches: Vec<(usize, usize, String)>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    #[serde(default)]
    start_content: String,
    end_content: String,
    txns: Vec<TraceTxn>,
}

/// Reads a trace from `shared/data/editing-traces` (through the system's `gzip`), or `None`
/// when it is not there.
fn read_trace(name: &str) -> Option<Trace> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = dir
        .ancestors()
        .map(|d| d.join("shared/data/editing-traces").join(name))
        .find(|p| p.exists())?;
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Replays the first `n` transactions of a (sequential, ASCII) trace into a document, one
/// update per transaction; returns the document and the updates.
fn replay(trace: &Trace, n: usize) -> (Doc, Vec<Vec<u8>>) {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    let mut updates = Vec::with_capacity(n);
    if !trace.start_content.is_empty() {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, &trace.start_content);
        updates.push(txn.encode_update_v1());
    }
    for t in &trace.txns[..n] {
        let mut txn = doc.transact_mut();
        for (pos, del, ins) in &t.patches {
            if *del > 0 {
                text.remove_range(&mut txn, *pos as u32, *del as u32);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, *pos as u32, ins);
            }
        }
        txn.commit();
        updates.push(txn.encode_update_v1());
    }
    (doc, updates)
}

fn text_of(doc: &Doc) -> String {
    let txn = doc.transact();
    Root::<TextRef>::new("text")
        .get(&txn)
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}

#[test]
fn trace_restore_to_an_earlier_point_and_back() {
    let Some(trace) = read_trace("seph-blog1.json.gz") else {
        eprintln!("editing traces not reachable; skipped");
        return;
    };
    // Debug builds are slow: a prefix of the trace is plenty for correctness.
    let n = trace.txns.len().min(20_000);
    let (current, updates) = replay(&trace, n);
    let point = n / 2;
    let target = reconstruct(None, updates[..point].iter().map(Vec::as_slice), false).unwrap();
    let end = reconstruct(None, updates.iter().map(Vec::as_slice), false).unwrap();
    let old_text = text_of(&target);
    let restore = restore_checked(&current, &target).unwrap();
    assert_eq!(text_of(&current), old_text);
    // The restore is a forward change: history + restore reproduces it.
    apply(&end, &restore);
    assert_eq!(text_of(&end), old_text);
    // Restoring the end state brings the text back.
    let latest = reconstruct(None, updates.iter().map(Vec::as_slice), false).unwrap();
    restore_checked(&current, &latest);
    assert_eq!(text_of(&current), text_of(&latest));
}

/// Cost on the automerge-paper document (~105 KB final text), from halfway to the end and
/// back. Replaying the trace takes minutes (yrs finds text positions by walking items), the
/// restores well under a second. Release only:
/// `cargo test --release -p tandem-server restore::tests::trace_automerge -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn trace_automerge_paper_cost() {
    let Some(trace) = read_trace("automerge-paper.json.gz") else {
        eprintln!("editing traces not reachable; skipped");
        return;
    };
    let n = trace.txns.len();
    let t = std::time::Instant::now();
    let (end, updates) = replay(&trace, n);
    println!("replay: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(text_of(&end), trace.end_content);
    let half = reconstruct(None, updates[..n / 2].iter().map(Vec::as_slice), false).unwrap();
    println!("replay + reconstruct: {:.1} s", t.elapsed().as_secs_f64());
    // Both documents carry the whole item structure of their history (~260k / ~130k edits),
    // as the live document and a reconstructed version do.
    for (label, current, target) in [
        ("end -> halfway", &end, history_replica(&half)),
        ("halfway -> end", &half, history_replica(&end)),
    ] {
        let replica = replica(current);
        let cur_len = text_of(current).len();
        let t = std::time::Instant::now();
        let update = restore_into(current, &target).unwrap().unwrap();
        let took = t.elapsed();
        let t2 = std::time::Instant::now();
        apply(&replica, &update);
        let applied = t2.elapsed();
        assert_eq!(text_of(current), text_of(&target));
        assert_eq!(text_of(&replica), text_of(&target));
        println!(
            "{label}: {cur_len} -> {} chars, restore_into {:.1} ms, update {} bytes, \
             applying it on a replica {:.1} ms",
            text_of(&target).len(),
            took.as_secs_f64() * 1e3,
            update.len(),
            applied.as_secs_f64() * 1e3,
        );
    }
}

#[test]
fn unreadable_target_is_refused_before_any_change() {
    // A crafted update can put text items (non-ASCII) inside an array, which yrs' array
    // iterator cannot read (it would loop forever).
    let target = Doc::new();
    {
        let mut txn = target.transact_mut();
        let list = txn.get_or_insert_array("list");
        let nested = list.push_back(&mut txn, ArrayPrelim::default());
        let as_text = TextRef::from(BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(
            &nested,
        )));
        as_text.insert(&mut txn, 0, "é😀");
    }
    let target = history_replica(&target);
    let current = text_doc("untouched");
    let before = state(&current);
    assert!(restore_into(&current, &target).is_err());
    assert_eq!(state(&current), before);
}

#[test]
fn unreadable_list_in_the_live_document_is_replaced() {
    let current = Doc::new();
    {
        let mut txn = current.transact_mut();
        let list = txn.get_or_insert_array("list");
        let nested = list.push_back(&mut txn, ArrayPrelim::default());
        let as_text = TextRef::from(BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(
            &nested,
        )));
        as_text.insert(&mut txn, 0, "é😀");
    }
    let target = Doc::new();
    {
        let mut txn = target.transact_mut();
        let list = txn.get_or_insert_array("list");
        let nested = list.push_back(&mut txn, ArrayPrelim::default());
        nested.push_back(&mut txn, 1);
    }
    restore_into(&current, &history_replica(&target)).unwrap();
    let txn = current.transact();
    let list = Root::<ArrayRef>::new("list").get(&txn).unwrap();
    let Some(Out::YArray(nested)) = list.get(&txn, 0) else {
        panic!()
    };
    assert_eq!(nested.len(&txn), 1);
    assert_eq!(nested.get(&txn, 0), Some(Out::Any(Any::from(1))));
}

/// Cost on a large ProseMirror document: 2,000 paragraphs, every 20th edited, some removed,
/// some added. Release only, like the trace benchmark.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn large_fragment_cost() {
    let texts: Vec<String> = (0..2000)
        .map(|i| format!("Paragraph {i}: some ordinary prose that goes on for a while, {i}."))
        .collect();
    let v1: Vec<Node> = texts.iter().map(|t| p(vec![(t.as_str(), false)])).collect();
    let edited: Vec<String> = texts
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 97 != 0)
        .map(|(i, t)| {
            if i % 20 == 0 {
                t.replace("ordinary", "edited")
            } else {
                t.clone()
            }
        })
        .collect();
    let mut v2: Vec<Node> = edited
        .iter()
        .map(|t| p(vec![(t.as_str(), i_bold(t))]))
        .collect();
    v2.insert(1000, heading(2, "Inserted heading"));
    let current = xml_doc(&v1);
    let target = history_replica(&xml_doc(&v2));
    let t = std::time::Instant::now();
    let update = restore_into(&current, &target).unwrap().unwrap();
    let took = t.elapsed();
    assert_eq!(render(&current), render(&target));
    println!(
        "2,000 paragraphs: restore_into {:.1} ms, update {} bytes",
        took.as_secs_f64() * 1e3,
        update.len()
    );
}

/// Every 50th paragraph of the large-document benchmark turns bold.
fn i_bold(t: &str) -> bool {
    t.len().is_multiple_of(50)
}
