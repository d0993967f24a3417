//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same entry
//! point its cargo-fuzz target uses (`tandem::fuzz_entry`), so CI catches a regression on
//! stable Rust without running the fuzzer. `write_seed_corpora` (ignored) regenerates the
//! hand-made seeds the corpora started from.

use std::path::{Path, PathBuf};

use tandem::fuzz_entry;
use tandem::protocol::{encode_awareness, encode_sync_step1, encode_sync_step2, encode_update};
use yrs::types::xml::{Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};
use yrs::{Any, Array, ArrayPrelim, Doc, Map, ReadTxn, StateVector, Text, Transact, WriteTxn};

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 4] = [
    ("frame_decode", fuzz_entry::frame_decode),
    ("update_admission", fuzz_entry::update_admission),
    ("awareness", fuzz_entry::awareness),
    ("admin_import", fuzz_entry::admin_import),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_replays_cleanly() {
    for (target, entry) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target}: empty corpus");
        for file in &files {
            let data = std::fs::read(file).expect("read corpus file");
            // A panic names the file; a stack overflow or abort fails the whole test binary.
            eprintln!("{target}: {}", file.display());
            entry(&data);
        }
    }
}

// ---- Seeds ----

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An update with one Any value in root array "a" nested `depth` arrays deep.
fn deep_update(depth: usize) -> Vec<u8> {
    let mut out = vec![1, 1, 9, 0, 8, 1, 1, b'a', 1];
    for _ in 0..depth {
        out.extend_from_slice(&[117, 1]);
    }
    out.extend_from_slice(&[126, 0]);
    out
}

fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// A TipTap-like document: paragraphs with marks and a nested list.
fn tiptap_doc() -> Doc {
    let doc = Doc::with_client_id(11);
    {
        let mut txn = doc.transact_mut();
        let frag = txn.get_or_insert_xml_fragment("default");
        let p = frag.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.insert_attribute(&mut txn, "textAlign", "left");
        let text = p.push_back(&mut txn, XmlTextPrelim::new("Hello world"));
        let bold: yrs::types::Attrs = [("bold".into(), Any::from(true))].into();
        text.format(&mut txn, 0, 5, bold);
        let mut list = frag.push_back(&mut txn, XmlElementPrelim::empty("bulletList"));
        for _ in 0..4 {
            let item = list.push_back(&mut txn, XmlElementPrelim::empty("listItem"));
            let para = item.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            para.push_back(&mut txn, XmlTextPrelim::new("item"));
            list = item.push_back(&mut txn, XmlElementPrelim::empty("bulletList"));
        }
    }
    doc
}

/// Maps, arrays, embeds, binary and a sub-document.
fn mixed_doc() -> Doc {
    let doc = Doc::with_client_id(12);
    {
        let mut txn = doc.transact_mut();
        let t = txn.get_or_insert_text("t");
        t.push(&mut txn, "abc");
        t.insert_embed(
            &mut txn,
            1,
            Any::from_json(r#"{"image":"x"}"#).expect("json"),
        );
        let m = txn.get_or_insert_map("m");
        m.insert(&mut txn, "n", 1.5);
        m.insert(&mut txn, "i", -42);
        m.insert(&mut txn, "b", vec![1u8, 2, 3]);
        m.insert(&mut txn, "sub", Doc::new());
        let a = txn.get_or_insert_array("a");
        a.push_back(
            &mut txn,
            Any::from_json(r#"[1,[2,{"k":null}],true]"#).expect("json"),
        );
        a.push_back(&mut txn, ArrayPrelim::default());
        t.remove_range(&mut txn, 0, 1);
    }
    doc
}

/// The first `n` transactions of a real editing trace (one update each), or none if the
/// trace is not on this machine.
fn trace_updates(n: usize) -> Vec<Vec<u8>> {
    let path = "/work/shared/data/editing-traces/seph-blog1.json.gz";
    let Ok(out) = std::process::Command::new("gzip")
        .args(["-dc", path])
        .output()
    else {
        return Vec::new();
    };
    let Ok(trace) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    let doc = Doc::with_client_id(13);
    let text = doc.get_or_insert_text("t");
    let mut updates = Vec::new();
    for txn_json in trace["txns"].as_array().into_iter().flatten().take(n) {
        let mut txn = doc.transact_mut();
        for patch in txn_json["patches"].as_array().into_iter().flatten() {
            let pos = patch[0].as_u64().unwrap_or(0) as u32;
            let del = patch[1].as_u64().unwrap_or(0) as u32;
            let ins = patch[2].as_str().unwrap_or("");
            if del > 0 {
                text.remove_range(&mut txn, pos, del);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, pos, ins);
            }
        }
        updates.push(txn.encode_update_v1());
    }
    updates
}

/// Edits of one client, each its own update (for out-of-order delivery).
fn chained_edits(n: usize) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(14);
    let text = doc.get_or_insert_text("t");
    (0..n)
        .map(|i| {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &format!("edit {i} "));
            txn.encode_update_v1()
        })
        .collect()
}

fn concat(frames: &[&[u8]]) -> Vec<u8> {
    frames.concat()
}

#[test]
#[ignore = "regenerates fuzz/corpus seeds; run by hand"]
fn write_seed_corpora() {
    let tiptap = full_state(&tiptap_doc());
    let mixed = full_state(&mixed_doc());
    let trace = trace_updates(300);
    let edits = chained_edits(6);
    let mut trace_merged = Vec::new();
    if !trace.is_empty() {
        trace_merged = yrs::merge_updates_v1(&trace).expect("merge");
    }
    let sv = mixed_doc().transact().state_vector();
    let awareness = encode_awareness(
        [
            (
                1u64,
                1u32,
                Some(r##"{"user":{"name":"a","color":"#f00"},"cursor":null}"##),
            ),
            (2, 5, None),
        ]
        .into_iter(),
    );
    let awareness_many =
        encode_awareness((0..20u32).map(|i| (u64::from(i) + 100, i, Some(r#"{"x":[1,{"y":2}]}"#))));

    let mut updates: Vec<(&str, Vec<u8>)> = vec![
        ("tiptap", tiptap.clone()),
        ("mixed", mixed.clone()),
        ("deep16", deep_update(16)),
        ("deep17", deep_update(17)),
        ("edit0", edits[0].clone()),
        ("edit3", edits[3].clone()),
    ];
    if !trace.is_empty() {
        updates.push(("trace_first", trace[0].clone()));
        updates.push(("trace_50", trace[50].clone()));
        updates.push(("trace_merged300", trace_merged.clone()));
    }

    let mut frames: Vec<(String, Vec<u8>)> = updates
        .iter()
        .map(|(n, u)| (format!("update-{n}"), encode_update(u).to_vec()))
        .collect();
    frames.push(("step2-mixed".into(), encode_sync_step2(&mixed).to_vec()));
    frames.push(("step1".into(), encode_sync_step1(&sv).to_vec()));
    frames.push(("awareness".into(), awareness.to_vec()));
    frames.push(("awareness-many".into(), awareness_many.to_vec()));
    frames.push(("query".into(), vec![3]));
    frames.push(("nine-queries".into(), vec![3; 9]));
    frames.push((
        "out-of-order".into(),
        concat(&[
            &encode_update(&edits[2]),
            &encode_update(&edits[1]),
            &encode_update(&edits[0]),
        ]),
    ));
    frames.push((
        "batch".into(),
        concat(&[
            &encode_sync_step1(&sv),
            &awareness,
            &[3],
            &encode_update(&edits[0]),
        ]),
    ));

    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write");
    };
    for (name, data) in &frames {
        write("frame_decode", name, data);
        if name.starts_with("update") || name.starts_with("step") || name == "out-of-order" {
            write("update_admission", name, data);
        }
        if name.starts_with("awareness") || name == "query" || name == "batch" {
            write("awareness", name, data);
        }
    }
    for (name, data) in &updates {
        write("admin_import", name, data);
    }
    let mut with_len = Vec::new();
    put_var(&mut with_len, 3);
    write("admin_import", "garbage", &with_len);
}
