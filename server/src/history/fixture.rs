//! Test fixtures: editing histories stored the way the server stores them (one Yjs update per
//! edit, with an author), plus the expected text after every edit.
//!
//! The real editing traces live outside this repository (`../shared/data/editing-traces`), so
//! unit tests use a generated, deterministic trace with the same shape: typing runs, typos
//! fixed with backspace, cursor jumps, pastes, selection deletes, non-ASCII and astral
//! characters (UTF-16 surrogate pairs), and two authors taking turns.

use std::io::Read;
use std::path::Path;

use crdt_store::LogRow;
use yrs::updates::decoder::Decode;
use yrs::{
    Doc, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update, XmlElementPrelim,
    XmlFragment, XmlTextPrelim,
};

/// One edit: at `pos` (in characters) delete `del` characters, then insert `ins`.
#[derive(Debug, Clone)]
pub(super) struct Edit {
    pub pos: usize,
    pub del: usize,
    pub ins: String,
    /// Index of the author making it.
    pub author: usize,
}

/// A small deterministic PRNG (xorshift64*), so fixtures need no dependency.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const WORDS: &[&str] = &[
    "the",
    "CRDT",
    "merges",
    "edits",
    "of",
    "every",
    "peer",
    "café",
    "naïve",
    "über",
    "☃",
    "emoji😀",
    "text",
    "history",
    "διαφορά",
    "日本語",
    "and",
    "a",
    "document",
    "\n",
];

/// A generated editing session of `n` edits by `authors` authors taking turns in bursts.
pub(super) fn generate(n: usize, authors: usize, seed: u64) -> Vec<Edit> {
    let mut rng = Rng::new(seed);
    let mut len = 0usize;
    let mut cursor = 0usize;
    let mut author = 0usize;
    let mut edits = Vec::with_capacity(n);
    while edits.len() < n {
        if rng.below(40) == 0 {
            author = (author + 1) % authors.max(1);
        }
        let roll = rng.below(100);
        let edit = if roll < 8 && len > 0 {
            // Jump somewhere else.
            cursor = rng.below(len + 1);
            continue;
        } else if roll < 20 && cursor > 0 {
            // Backspace.
            cursor -= 1;
            Edit {
                pos: cursor,
                del: 1,
                ins: String::new(),
                author,
            }
        } else if roll < 23 && len > 0 {
            // Delete a selection.
            let pos = rng.below(len);
            let del = 1 + rng.below((len - pos).min(30));
            Edit {
                pos,
                del,
                ins: String::new(),
                author,
            }
        } else if roll < 26 {
            // Paste a phrase (or replace a selection with it).
            let words = 2 + rng.below(6);
            let phrase: Vec<&str> = (0..words).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            let ins = phrase.join(" ");
            let del = if len > cursor && rng.below(2) == 0 {
                rng.below((len - cursor).min(10))
            } else {
                0
            };
            Edit {
                pos: cursor,
                del,
                ins,
                author,
            }
        } else {
            // Type one character of a word.
            let word = WORDS[rng.below(WORDS.len())];
            let ch = word
                .chars()
                .nth(rng.below(word.chars().count()))
                .unwrap_or('x');
            let ins = if rng.below(6) == 0 {
                " ".to_string()
            } else {
                ch.to_string()
            };
            Edit {
                pos: cursor,
                del: 0,
                ins,
                author,
            }
        };
        len = len - edit.del + edit.ins.chars().count();
        cursor = edit.pos + edit.ins.chars().count();
        edits.push(edit);
    }
    edits
}

/// UTF-16 offset of character `pos` in `chars`.
fn utf16_at(chars: &[char], pos: usize) -> u32 {
    chars[..pos].iter().map(|c| c.len_utf16() as u32).sum()
}

/// A replayed history: the stored rows and the text after each of them.
pub(super) struct Replay {
    /// Log rows, seq 1.., one per edit.
    pub rows: Vec<LogRow>,
    /// `texts[i]` = the text after `i` rows (`texts[0]` is empty).
    pub texts: Vec<String>,
    /// Snapshots taken every `snapshot_every` rows: (seq, state) from a garbage-collected
    /// document, as the server writes them.
    pub snapshots: Vec<(i64, Vec<u8>)>,
}

/// Author names used by the fixtures.
pub(super) const AUTHORS: &[&str] = &["alice", "bob", "carol"];

/// Replays `edits` into the text root `name`: each author edits through their own document
/// (own client id), every update is delivered to the others before the next edit.
pub(super) fn replay(edits: &[Edit], name: &str, snapshot_every: usize) -> Replay {
    let authors = edits.iter().map(|e| e.author).max().map_or(1, |m| m + 1);
    let docs: Vec<Doc> = (0..authors)
        .map(|i| {
            Doc::with_options(Options {
                client_id: yrs::ClientID::new(1000 + i as u64),
                offset_kind: OffsetKind::Utf16,
                ..Options::default()
            })
        })
        .collect();
    let server = Doc::new();
    let mut chars: Vec<char> = Vec::new();
    let mut rows = Vec::with_capacity(edits.len());
    let mut texts = vec![String::new()];
    let mut snapshots = Vec::new();
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for (i, edit) in edits.iter().enumerate() {
        let doc = &docs[edit.author];
        let text = doc.get_or_insert_text(name);
        let update = {
            let mut txn = doc.transact_mut();
            let at = utf16_at(&chars, edit.pos);
            if edit.del > 0 {
                let len = utf16_at(&chars, edit.pos + edit.del) - at;
                text.remove_range(&mut txn, at, len);
            }
            if !edit.ins.is_empty() {
                text.insert(&mut txn, at, &edit.ins);
            }
            txn.encode_update_v1()
        };
        chars.splice(edit.pos..edit.pos + edit.del, edit.ins.chars());
        for (j, other) in docs.iter().enumerate() {
            if j != edit.author {
                other
                    .transact_mut()
                    .apply_update(Update::decode_v1(&update).unwrap())
                    .unwrap();
            }
        }
        server
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        let seq = i as i64 + 1;
        rows.push(LogRow {
            seq,
            created_at: start + std::time::Duration::from_millis(500 * seq as u64),
            size: update.len() as i64,
            author: Some(AUTHORS[edit.author % AUTHORS.len()].to_string()),
            data: update,
        });
        texts.push(chars.iter().collect());
        if snapshot_every > 0 && (i + 1) % snapshot_every == 0 {
            let state = server
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            snapshots.push((seq, state));
        }
    }
    Replay {
        rows,
        texts,
        snapshots,
    }
}

/// A trace file of the public editing-traces collection (see ../shared/data/editing-traces).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TraceFile {
    #[serde(default)]
    pub start_content: String,
    pub end_content: String,
    pub txns: Vec<TraceTxn>,
}

/// One transaction of a trace.
#[derive(Debug, serde::Deserialize)]
pub(super) struct TraceTxn {
    pub patches: Vec<(usize, usize, String)>,
}

/// Reads a gzip-compressed trace with the system's `gzip -dc` (no compression crate needed).
pub(super) fn read_trace(path: &Path) -> TraceFile {
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .expect("run gzip -dc");
    assert!(out.status.success(), "gzip -dc {}", path.display());
    let mut raw = Vec::new();
    out.stdout.as_slice().read_to_end(&mut raw).unwrap();
    serde_json::from_slice(&raw).expect("parse trace")
}

/// Turns a sequential trace into edits by one author (one edit per patch; the traces' ASCII
/// variants make code points, bytes and UTF-16 units agree).
pub(super) fn trace_edits(trace: &TraceFile) -> Vec<Vec<Edit>> {
    trace
        .txns
        .iter()
        .map(|t| {
            t.patches
                .iter()
                .map(|(pos, del, ins)| Edit {
                    pos: *pos,
                    del: *del,
                    ins: ins.clone(),
                    author: 0,
                })
                .collect()
        })
        .collect()
}

/// Rows, snapshots (seq, state) and the final document of a replayed trace.
pub(super) type ReplayedTrace = (Vec<LogRow>, Vec<(i64, Vec<u8>)>, Doc);

/// Replays a trace (one update per trace transaction) and returns its rows, the snapshots a
/// server would write every `snapshot_every` rows, and the final document.
pub(super) fn replay_trace(txns: &[Vec<Edit>], name: &str, snapshot_every: usize) -> ReplayedTrace {
    let doc = Doc::with_options(Options {
        client_id: yrs::ClientID::new(42),
        ..Options::default()
    });
    let text = doc.get_or_insert_text(name);
    let mut rows = Vec::with_capacity(txns.len());
    let mut snapshots = Vec::new();
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for (i, edits) in txns.iter().enumerate() {
        let update = {
            let mut txn = doc.transact_mut();
            for e in edits {
                if e.del > 0 {
                    text.remove_range(&mut txn, e.pos as u32, e.del as u32);
                }
                if !e.ins.is_empty() {
                    text.insert(&mut txn, e.pos as u32, &e.ins);
                }
            }
            txn.encode_update_v1()
        };
        let seq = i as i64 + 1;
        rows.push(LogRow {
            seq,
            created_at: start + std::time::Duration::from_millis(200 * seq as u64),
            size: update.len() as i64,
            author: Some("trace".into()),
            data: update,
        });
        if snapshot_every > 0 && (i + 1) % snapshot_every == 0 {
            snapshots.push((
                seq,
                doc.transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            ));
        }
    }
    (rows, snapshots, doc)
}

/// A TipTap-like document history: paragraphs typed one keystroke per update into an XML
/// fragment named `default`, with Enter creating new paragraphs, by alternating authors.
pub(super) fn tiptap_history(
    paragraphs: usize,
    chars_each: usize,
    typos: bool,
) -> (Vec<LogRow>, Doc) {
    let doc = Doc::with_options(Options {
        client_id: yrs::ClientID::new(7),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let frag = doc.get_or_insert_xml_fragment("default");
    let mut rows = Vec::new();
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let mut rng = Rng::new(99);
    let push = |update: Vec<u8>, rows: &mut Vec<LogRow>, author: usize| {
        let seq = rows.len() as i64 + 1;
        rows.push(LogRow {
            seq,
            created_at: start + std::time::Duration::from_millis(300 * seq as u64),
            size: update.len() as i64,
            author: Some(AUTHORS[author].to_string()),
            data: update,
        });
    };
    let text_at = |txn: &yrs::Transaction, p: usize| {
        frag.get(txn, p as u32)
            .and_then(|x| x.into_xml_element())
            .and_then(|el| el.get(txn, 0))
            .and_then(|x| x.into_xml_text())
            .unwrap()
    };
    for p in 0..paragraphs {
        let update = {
            let mut txn = doc.transact_mut();
            let el = frag.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            el.push_back(&mut txn, XmlTextPrelim::new(""));
            txn.encode_update_v1()
        };
        push(update, &mut rows, p % 2);
        for c in 0..chars_each {
            // With typos, one keystroke in five is a wrong letter fixed with backspace: deleted
            // ranges all over the document, as real editing leaves them.
            let typo = typos && rng.below(5) == 0;
            for attempt in 0..if typo { 2 } else { 1 } {
                let t = text_at(&doc.transact(), p);
                let ch = (b'a' + rng.below(26) as u8) as char;
                let update = {
                    let mut txn = doc.transact_mut();
                    t.insert(&mut txn, c as u32, &ch.to_string());
                    txn.encode_update_v1()
                };
                push(update, &mut rows, p % 2);
                if typo && attempt == 0 {
                    let update = {
                        let mut txn = doc.transact_mut();
                        t.remove_range(&mut txn, c as u32, 1);
                        txn.encode_update_v1()
                    };
                    push(update, &mut rows, p % 2);
                }
            }
        }
    }
    (rows, doc)
}

/// The text of the named root of `doc`.
pub(super) fn text_of(doc: &Doc, name: &str) -> String {
    use yrs::GetString;
    let txn = doc.transact();
    txn.get_text(name)
        .map(|t| t.get_string(&txn))
        .unwrap_or_default()
}
