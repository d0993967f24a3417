//! Structural fingerprints: a hash of a value's or shared type's content (equal content ⇒
//! equal fingerprint, whatever the items' ids; different content ⇒ different, but for a 2⁻⁶⁴
//! chance), to find what a restore can keep and to check its result.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use yrs::types::Attrs;
use yrs::types::text::YChange;
use yrs::{Any, ArrayRef, Map, Number, Out, ReadTxn, Text, Xml};

use super::roots::items;

/// The fingerprint of `v` under `seeds` (random per restore, so that nobody can craft two
/// different paragraphs that fingerprint alike).
pub(super) fn of<R: ReadTxn>(seeds: &RandomState, txn: &R, v: &Out) -> u64 {
    let mut h = seeds.build_hasher();
    hash_out(txn, v, &mut h);
    h.finish()
}

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
pub(super) fn hash_attrs<H: Hasher>(attrs: &Attrs, h: &mut H) {
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
