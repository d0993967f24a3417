use super::*;
use yrs::types::text::TextPrelim;
use yrs::types::xml::{Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update,
    WriteTxn,
};

const LIMIT: usize = 128;

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_var(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// One struct of `content_ref` under the root type "a", client 7, then an empty delete set.
fn one_struct(content_ref: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 1, 7, 0, content_ref, 1];
    put_str(&mut out, b"a");
    out.extend_from_slice(content);
    out.push(0);
    out
}

/// An Any content holding `depth` nested arrays around a null.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut content = vec![1];
    for _ in 0..depth {
        content.extend_from_slice(&[117, 1]);
    }
    content.push(126);
    one_struct(8, &content)
}

/// An Any content holding `depth` nested objects `{"k": {...}}` around a null.
fn nested_objects(depth: usize) -> Vec<u8> {
    let mut content = vec![1];
    for _ in 0..depth {
        content.extend_from_slice(&[118, 1, 1, b'k']);
    }
    content.push(126);
    one_struct(8, &content)
}

fn format_with_json(json: &str) -> Vec<u8> {
    let mut content = Vec::new();
    put_str(&mut content, b"bold");
    put_str(&mut content, json.as_bytes());
    one_struct(6, &content)
}

fn decodes_in_yrs(bytes: &[u8]) -> bool {
    Update::decode_v1(bytes).is_ok()
}

#[test]
fn nesting_at_the_limit_passes_and_yrs_agrees() {
    for bytes in [nested_arrays(LIMIT), nested_objects(LIMIT)] {
        assert_eq!(check_update_v1(&bytes, LIMIT), Ok(()));
        assert!(decodes_in_yrs(&bytes));
    }
}

#[test]
fn deep_arrays_and_objects_are_refused() {
    for depth in [LIMIT + 1, 5_000, 8_000, 1_000_000] {
        assert_eq!(
            check_update_v1(&nested_arrays(depth), LIMIT),
            Err(CheckError::TooDeep { limit: LIMIT })
        );
        assert_eq!(
            check_update_v1(&nested_objects(depth), LIMIT),
            Err(CheckError::TooDeep { limit: LIMIT })
        );
    }
}

#[test]
fn empty_containers_count_as_a_level() {
    let mut content = vec![1];
    for _ in 0..LIMIT {
        content.extend_from_slice(&[117, 1]);
    }
    content.extend_from_slice(&[117, 0]);
    assert_eq!(
        check_update_v1(&one_struct(8, &content), LIMIT),
        Err(CheckError::TooDeep { limit: LIMIT })
    );
}

#[test]
fn deep_json_in_format_and_embed_is_refused() {
    let deep = format!("{}1{}", "[".repeat(LIMIT + 1), "]".repeat(LIMIT + 1));
    let ok = format!("{}1{}", "{\"a\":".repeat(LIMIT), "}".repeat(LIMIT));
    assert_eq!(
        check_update_v1(&format_with_json(&deep), LIMIT),
        Err(CheckError::TooDeep { limit: LIMIT })
    );
    assert_eq!(check_update_v1(&format_with_json(&ok), LIMIT), Ok(()));

    let mut embed = Vec::new();
    put_str(&mut embed, deep.as_bytes());
    assert_eq!(
        check_update_v1(&one_struct(5, &embed), LIMIT),
        Err(CheckError::TooDeep { limit: LIMIT })
    );
}

#[test]
fn brackets_inside_json_strings_do_not_count() {
    let json = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    assert_eq!(check_update_v1(&format_with_json(&json), LIMIT), Ok(()));
}

#[test]
fn documents_made_by_yrs_pass() {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        // TipTap-like: a fragment of paragraphs, headings and nested lists with marks.
        let frag = txn.get_or_insert_xml_fragment("default");
        let p = frag.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.insert_attribute(&mut txn, "textAlign", "left");
        let text = p.push_back(&mut txn, XmlTextPrelim::new("Hello world"));
        let bold: yrs::types::Attrs = [("bold".into(), Any::from(true))].into();
        text.format(&mut txn, 0, 5, bold);
        let link: yrs::types::Attrs = [(
            "link".into(),
            Any::from_json(r#"{"href":"https://x","target":"_blank","rel":null}"#).unwrap(),
        )]
        .into();
        text.format(&mut txn, 6, 5, link);
        let mut list = frag.push_back(&mut txn, XmlElementPrelim::empty("bulletList"));
        for _ in 0..100 {
            let item = list.push_back(&mut txn, XmlElementPrelim::empty("listItem"));
            let para = item.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            para.push_back(&mut txn, XmlTextPrelim::new("item"));
            list = item.push_back(&mut txn, XmlElementPrelim::empty("bulletList"));
        }
        // Other content types: text with an embed, maps and arrays of Any, binary, sub-doc.
        let t = txn.get_or_insert_text("text");
        t.push(&mut txn, "abc");
        t.insert_embed(
            &mut txn,
            1,
            Any::from_json(r#"{"image":{"src":"x"}}"#).unwrap(),
        );
        let m = txn.get_or_insert_map("map");
        m.insert(&mut txn, "n", 1.5);
        m.insert(&mut txn, "i", 42);
        m.insert(&mut txn, "big", i64::MAX);
        m.insert(&mut txn, "s", "str");
        m.insert(&mut txn, "b", vec![1u8, 2, 3]);
        m.insert(&mut txn, "nested", MapPrelim::from([("x", Any::from(1))]));
        m.insert(&mut txn, "sub", Doc::new());
        let a = txn.get_or_insert_array("array");
        a.push_back(&mut txn, ArrayPrelim::default());
        a.push_back(
            &mut txn,
            Any::from_json(r#"[1,[2,[3,{"a":[4]}]],null,true]"#).unwrap(),
        );
        a.push_back(&mut txn, TextPrelim::new("t"));
        t.remove_range(&mut txn, 0, 2);
    }
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert_eq!(check_update_v1(&update, LIMIT), Ok(()));
    // Incremental updates (with origins and delete sets) too.
    let sv = doc.transact().state_vector();
    let t = doc.get_or_insert_text("text");
    t.insert(&mut doc.transact_mut(), 1, "more");
    t.remove_range(&mut doc.transact_mut(), 0, 1);
    let diff = doc.transact().encode_state_as_update_v1(&sv);
    assert_eq!(check_update_v1(&diff, LIMIT), Ok(()));
}

#[test]
fn truncated_input_is_refused_not_panicking() {
    let doc = Doc::new();
    let t = doc.get_or_insert_text("t");
    t.push(&mut doc.transact_mut(), "hello");
    let m = doc.get_or_insert_map("m");
    m.insert(
        &mut doc.transact_mut(),
        "k",
        Any::from_json("[1,{\"a\":2}]").unwrap(),
    );
    t.remove_range(&mut doc.transact_mut(), 0, 2);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert_eq!(check_update_v1(&update, LIMIT), Ok(()));
    for cut in 0..update.len() {
        assert!(check_update_v1(&update[..cut], LIMIT).is_err(), "cut {cut}");
    }
    let mut trailing = update.clone();
    trailing.push(0);
    assert!(check_update_v1(&trailing, LIMIT).is_err());
}

#[test]
fn lying_counts_are_refused() {
    // A huge Any array count with nothing behind it.
    let mut content = vec![1, 117];
    put_var(&mut content, u64::from(u32::MAX));
    assert!(check_update_v1(&one_struct(8, &content), LIMIT).is_err());
    // Counts above u32 (yrs would wrap them).
    let mut bytes = Vec::new();
    put_var(&mut bytes, 1 << 32);
    assert!(check_update_v1(&bytes, LIMIT).is_err());
    // A struct count far beyond the input.
    assert!(check_update_v1(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 7, 0], LIMIT).is_err());
}

#[test]
fn xml_hook_and_unknown_content_are_refused() {
    assert!(check_update_v1(&one_struct(7, &[5]), LIMIT).is_err());
    assert!(check_update_v1(&one_struct(7, &[7]), LIMIT).is_err());
    assert!(check_update_v1(&one_struct(0x18, &[1, 126]), LIMIT).is_err());
    assert_eq!(check_update_v1(&one_struct(7, &[0]), LIMIT), Ok(()));
}

#[test]
fn whatever_passes_decodes_in_yrs_without_trouble() {
    // Mutations of a valid update: the walk and yrs must agree closely enough that nothing
    // the walk accepts makes yrs misbehave (yrs may still refuse it).
    let doc = Doc::new();
    let a = doc.get_or_insert_array("a");
    a.push_back(
        &mut doc.transact_mut(),
        Any::from_json(r#"[1,[2,{"k":[3,4.5,"s"]}],null]"#).unwrap(),
    );
    let base = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = base.clone();
        let at = (seed as usize) % bytes.len();
        bytes[at] ^= (seed >> 40) as u8;
        if check_update_v1(&bytes, 4).is_ok() {
            let _ = std::panic::catch_unwind(|| Update::decode_v1(&bytes));
        }
    }
}

#[test]
fn legacy_json_content_is_refused() {
    // yrs decodes count + 1 strings and encodes count: stored, such a document would never
    // load again. (Yjs has not written JSON content since v13.)
    let mut json = vec![1];
    put_str(&mut json, b"1");
    put_str(&mut json, b"2");
    let bytes = one_struct(2, &json);
    let update = Update::decode_v1(&bytes).expect("yrs decodes it");
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(update)
        .expect("and applies it");
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert!(Update::decode_v1(&state).is_err(), "yrs now round-trips it");
    assert!(matches!(
        check_update_v1(&bytes, LIMIT),
        Err(CheckError::Malformed { .. })
    ));
}

#[test]
fn two_blocks_of_one_client_are_refused() {
    // The admin_import fuzz target's heap-use-after-free in yrs 0.28 (fuzz/found/): two
    // blocks for client 0, an item and then a GC range over its clock.
    let found = [
        0x03, 0x01, 0x00, 0x58, 0x03, 0x01, 0x03, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x58, 0x00,
        0x06, 0x00, 0x00, 0x00, 0x00,
    ];
    assert!(matches!(
        check_update_v1(&found, LIMIT),
        Err(CheckError::Malformed { .. })
    ));
    // What yrs itself writes (one block per client) still passes.
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("t");
    text.push(&mut doc.transact_mut(), "ab");
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert!(check_update_v1(&update, LIMIT).is_ok());
}
