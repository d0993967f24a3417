//! The history engine: pure functions (no I/O, no async) that turn stored updates into what
//! the admin API shows — a document's content at a point, a summary of each change, and the
//! difference between two points with who changed what.
//!
//! Every function here takes bytes read from the store and never trusts them: undecodable
//! updates and panics inside yrs become [`HistoryError`]s.
//!
//! - [`reconstruct`]: the document at a point (snapshot + log rows).
//! - [`json::content_json`]: its content as JSON (text, ProseMirror JSON, plain JSON).
//! - [`summary::summarize_rows`] / [`summary::summarize`]: what each change did, for the
//!   timeline; [`summary::group_sessions`] for `group=session`.
//! - [`diff::diff`]: inserted and deleted spans with their authors between two points.
//! - [`kinds`]: what each root type is (updates do not say).
//!
//! Two yrs traps shape this code. `doc.get_or_insert_*` opens a transaction of its own, so it
//! is never called while one is open. And yrs' list iterators (`ArrayRef::iter`, `get`,
//! `to_json`, `XmlFragment::children`) loop forever on a text holding characters wider than
//! one offset unit (an emoji), so nothing here reads a branch that may hold text through them
//! (see [`kinds::list_values`]).

pub(crate) mod diff;
#[cfg(test)]
mod fixture;
pub(crate) mod json;
pub(crate) mod kinds;
pub(crate) mod restore;
mod structs;
pub(crate) mod summary;

use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, Transact, Update};

/// Why a history could not be computed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// A stored update (or snapshot) is not a valid Yjs v1 update.
    #[error("stored update {index} is not a valid Yjs update: {reason}")]
    Undecodable {
        /// Position of the update among the ones given (0 = the snapshot, if any, or the first
        /// row).
        index: usize,
        /// What the decoder said.
        reason: String,
    },
    /// yrs rejected applying a stored update.
    #[error("stored update {index} could not be applied: {reason}")]
    Apply {
        /// Position of the update among the ones given.
        index: usize,
        /// What yrs said.
        reason: String,
    },
    /// The document given has a transaction open elsewhere (a caller bug: history
    /// documents are owned by one computation).
    #[error("the document is in use by another transaction")]
    Busy,
    /// A diff was asked of a document that discards deleted content (build it with
    /// `skip_gc = true`).
    #[error("the base document of a diff must keep deleted content (skip_gc)")]
    CollectsGarbage,
    /// yrs panicked on stored data; the document it was working on is unusable.
    #[error("yrs panicked while {0}")]
    Panicked(&'static str),
}

/// A fresh document for history work.
///
/// `skip_gc` keeps the content of deleted items (diffs and deletion counts need it);
/// offsets are UTF-16 units because that is how Yjs counts; formatting cleanup is off so that
/// applying stored updates never creates changes of our own.
pub(crate) fn history_doc(skip_gc: bool) -> Doc {
    Doc::with_options(Options {
        skip_gc,
        offset_kind: OffsetKind::Utf16,
        cleanup_formatting: false,
        ..Options::default()
    })
}

/// The branch behind a typed shared reference (the typed refs implement `AsRef` for several
/// types, so the conversion needs spelling out).
pub(crate) fn branch_of<T: AsRef<yrs::branch::Branch>>(shared: &T) -> yrs::branch::BranchPtr {
    yrs::branch::BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(shared))
}

/// Decodes one stored update; `index` only labels the error.
pub(crate) fn decode(bytes: &[u8], index: usize) -> Result<Update, HistoryError> {
    match catch_unwind(|| Update::decode_v1(bytes)) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(HistoryError::Undecodable {
            index,
            reason: e.to_string(),
        }),
        Err(_) => Err(HistoryError::Undecodable {
            index,
            reason: "the decoder panicked".into(),
        }),
    }
}

/// Runs `f`, turning a panic into [`HistoryError::Panicked`]. yrs has assertions on decoded
/// data; stored data is as untrusted as a socket's.
pub(crate) fn guard<T>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, HistoryError>,
) -> Result<T, HistoryError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(HistoryError::Panicked(what)))
}

/// Builds the document at a point of its history: `snapshot` (a stored state, if any) then
/// every update of `rows`, in one transaction.
///
/// `skip_gc` keeps deleted content (needed to diff or to count deletions afterwards); plain
/// state reads should pass `false`, which is faster and smaller.
pub(crate) fn reconstruct<'a>(
    snapshot: Option<&'a [u8]>,
    rows: impl Iterator<Item = &'a [u8]>,
    skip_gc: bool,
) -> Result<Doc, HistoryError> {
    let doc = history_doc(skip_gc);
    guard("applying stored updates", || {
        let mut txn = doc.transact_mut();
        let all = snapshot.into_iter().chain(rows);
        for (index, bytes) in all.enumerate() {
            let update = decode(bytes, index)?;
            txn.apply_update(update).map_err(|e| HistoryError::Apply {
                index,
                reason: e.to_string(),
            })?;
        }
        Ok(())
    })?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::fixture::{generate, replay, text_of};
    use super::*;

    #[test]
    fn reconstruct_matches_direct_replay_at_every_point() {
        let edits = generate(1500, 2, 7);
        let r = replay(&edits, "body", 500);
        for point in [0usize, 1, 2, 17, 499, 500, 501, 999, 1234, 1500] {
            // From the nearest snapshot at or before the point, as the server loads.
            let snap = r
                .snapshots
                .iter()
                .rev()
                .find(|(seq, _)| *seq as usize <= point);
            let from = snap.map_or(0, |(seq, _)| *seq as usize);
            let rows = r.rows[from..point].iter().map(|row| row.data.as_slice());
            let doc = reconstruct(snap.map(|(_, s)| s.as_slice()), rows, false).unwrap();
            assert_eq!(text_of(&doc, "body"), r.texts[point], "at {point}");
            let json = json::content_json(&doc);
            if r.texts[point].is_empty() {
                assert!(json.get("body").is_none(), "empty root left out at {point}");
            } else {
                assert_eq!(json["body"]["kind"], "text");
                assert_eq!(
                    json["body"]["value"],
                    r.texts[point].as_str(),
                    "json at {point}"
                );
            }
            // Without the snapshot: the whole log.
            let all = r.rows[..point].iter().map(|row| row.data.as_slice());
            let doc = reconstruct(None, all, true).unwrap();
            assert_eq!(text_of(&doc, "body"), r.texts[point], "full log at {point}");
        }
    }

    #[test]
    fn bad_stored_data_is_an_error() {
        let edits = generate(10, 1, 3);
        let r = replay(&edits, "t", 0);
        let good: Vec<&[u8]> = r.rows.iter().map(|row| row.data.as_slice()).collect();
        let garbage: &[u8] = &[0xff, 0xff, 0xff, 0x01, 0x02];
        let mut rows = good.clone();
        rows.insert(3, garbage);
        match reconstruct(None, rows.into_iter(), false) {
            Err(HistoryError::Undecodable { index: 3, .. }) => {}
            other => panic!("expected an undecodable row 3, got {:?}", other.map(|_| ())),
        }
        match reconstruct(Some(garbage), good.into_iter(), false) {
            Err(HistoryError::Undecodable { index: 0, .. }) => {}
            other => panic!(
                "expected an undecodable snapshot, got {:?}",
                other.map(|_| ())
            ),
        }
        // Truncations of a real update never panic.
        let data = &r.rows[5].data;
        for cut in 0..data.len() {
            let _ = reconstruct(None, std::iter::once(&data[..cut]), false);
        }
    }

    /// Where the public editing traces live: `TRACE_DIR`, or the workspace's sibling `shared`
    /// directory. They are not part of this repository, hence `#[ignore]`.
    fn trace_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::var_os("TRACE_DIR").map_or_else(
            || {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/data/editing-traces")
            },
            std::path::PathBuf::from,
        );
        dir.join(name)
    }

    /// The figures of the history engine on the automerge-paper trace (259,778 updates, one
    /// per trace transaction, a snapshot every 1000 as the server writes them). Run with
    /// `cargo test --release -p tandem-server --lib automerge_paper -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs ../shared/data/editing-traces (not in this repository); run in release"]
    fn automerge_paper_timings() {
        use super::fixture::{read_trace, replay_trace, trace_edits};
        use std::time::Instant;
        let trace = read_trace(&trace_path("automerge-paper.json.gz"));
        let txns = trace_edits(&trace);
        let started = Instant::now();
        let (rows, snapshots, _) = replay_trace(&txns, "text", 1000);
        println!("replayed {} updates in {:?}", rows.len(), started.elapsed());
        // Expected text after n updates (ASCII trace: byte offsets are positions).
        let text_after = |n: usize| {
            let mut text = trace.start_content.clone();
            for edits in &txns[..n] {
                for e in edits {
                    text.replace_range(e.pos..e.pos + e.del, &e.ins);
                }
            }
            text
        };
        let base_at = |seq: usize, skip_gc: bool| {
            let snap = snapshots.iter().rev().find(|(s, _)| *s as usize <= seq);
            let from = snap.map_or(0, |(s, _)| *s as usize);
            reconstruct(
                snap.map(|(_, s)| s.as_slice()),
                rows[from..seq].iter().map(|r| r.data.as_slice()),
                skip_gc,
            )
            .unwrap()
        };
        // 1. State at a point: nearest snapshot + up to 999 rows.
        let mut worst = std::time::Duration::ZERO;
        for seq in [999usize, 100_999, 200_999, 255_999, 258_999, rows.len()] {
            for skip_gc in [false, true] {
                let t = Instant::now();
                let doc = base_at(seq, skip_gc);
                let took = t.elapsed();
                worst = worst.max(took);
                println!("reconstruct seq {seq} (skip_gc {skip_gc}): {took:?}");
                if !skip_gc && seq % 100_000 == 999 {
                    assert_eq!(super::fixture::text_of(&doc, "text"), text_after(seq));
                }
            }
        }
        println!("worst reconstruct: {worst:?}");
        // 2. content_json of the whole document.
        let doc = base_at(rows.len(), false);
        let t = Instant::now();
        let json = json::content_json(&doc);
        println!("content_json of the final document: {:?}", t.elapsed());
        assert_eq!(json["text"]["value"], trace.end_content.as_str());
        // 3. A timeline page of 100 updates (on a skip_gc base, as the timeline builds it).
        let base = base_at(200_000, true);
        let t = Instant::now();
        let changes = summary::summarize_rows(&base, &rows[200_000..200_100]).unwrap();
        println!("summarize 100 updates at seq 200000: {:?}", t.elapsed());
        assert_eq!(changes.len(), 100);
        let base = base_at(rows.len() - 100, true);
        let t = Instant::now();
        summary::summarize_rows(&base, &rows[rows.len() - 100..]).unwrap();
        println!("summarize the last 100 updates: {:?}", t.elapsed());
        // 4. A diff over 1000 updates.
        let base = base_at(200_000, true);
        let t = Instant::now();
        let d = diff::diff(base, 200_000, &rows[200_000..201_000]).unwrap();
        println!("diff over 1000 updates at seq 200000: {:?}", t.elapsed());
        let Some(diff::RootDiff::Text { spans }) = d.content.get("text") else {
            panic!("no text diff");
        };
        assert_eq!(diff::text_at(spans, false), text_after(200_000));
        assert_eq!(diff::text_at(spans, true), text_after(201_000));
        let base = base_at(rows.len() - 1000, true);
        let t = Instant::now();
        diff::diff(base, (rows.len() - 1000) as i64, &rows[rows.len() - 1000..]).unwrap();
        println!("diff over the last 1000 updates: {:?}", t.elapsed());
        if !cfg!(debug_assertions) {
            assert!(worst.as_millis() <= 200, "reconstruct took {worst:?}");
        }
    }

    /// Timeline and diff figures on a TipTap-like document (300 paragraphs typed one keystroke
    /// per update: 15,300 updates). Run in release with `--ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release"]
    fn tiptap_timings() {
        use std::time::Instant;
        let (rows, editor) = super::fixture::tiptap_history(300, 50, true);
        let n = rows.len();
        let base = reconstruct(
            None,
            rows[..n - 100].iter().map(|r| r.data.as_slice()),
            true,
        )
        .unwrap();
        let t = Instant::now();
        let changes = summary::summarize_rows(&base, &rows[n - 100..]).unwrap();
        println!("tiptap: summarize 100 keystrokes: {:?}", t.elapsed());
        assert!(changes.iter().all(|c| {
            let root = c.summary["default"];
            root.inserted + root.deleted == 1
        }));
        let base = reconstruct(
            None,
            rows[..n - 1000].iter().map(|r| r.data.as_slice()),
            true,
        )
        .unwrap();
        let t = Instant::now();
        let d = diff::diff(base, (n - 1000) as i64, &rows[n - 1000..]).unwrap();
        println!("tiptap: diff over 1000 updates: {:?}", t.elapsed());
        let Some(diff::RootDiff::Xml { blocks }) = d.content.get("default") else {
            panic!("no xml diff");
        };
        assert_eq!(blocks.len(), 300);
        // Half the paragraphs changed, over a long stretch of history.
        let half = n / 2;
        let base = reconstruct(None, rows[..half].iter().map(|r| r.data.as_slice()), true).unwrap();
        let t = Instant::now();
        diff::diff(base, half as i64, &rows[half..]).unwrap();
        println!(
            "tiptap: diff over the second half ({} updates): {:?}",
            n - half,
            t.elapsed()
        );
        let doc = reconstruct(None, rows.iter().map(|r| r.data.as_slice()), false).unwrap();
        let t = Instant::now();
        let got = json::content_json(&doc);
        println!("tiptap: content_json: {:?}", t.elapsed());
        let want = json::content_json(&editor);
        assert_eq!(got, want);
    }
}
