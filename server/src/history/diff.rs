//! The difference between two points of a document's history, with who inserted and who
//! deleted each piece.
//!
//! The document at the earlier point A (built keeping deleted content) gets the log rows
//! A+1..=B applied. Every item remembers its id, so:
//! - which row inserted an item is known from the rows' own insertions (client, clock range);
//! - which row deleted it, from the rows' delete sets (the first row that deletes an id wins;
//!   later ones re-send it);
//! - whether an item was visible at A and at B, from yrs snapshots taken at both points.
//!
//! Each text (a text root, or each `XmlText` inside an XML root) is walked once with yrs'
//! snapshot-aware walk, which yields kept runs and, per inserted or deleted item, its text and
//! id. An item may span several rows (yrs merges consecutive keystrokes of one client into one
//! item), so its text is cut at the rows' clock boundaries. Adjacent spans with the same op
//! and author are then merged; a merged span keeps the sequence number of its first part.
//!
//! XML roots are reported per block: a node whose children include text (a paragraph, a
//! heading) or that has no children at all (an empty paragraph, a horizontal rule). A block's
//! `path` is its child indexes from the fragment, counted over the children that exist at A
//! or at B, in document order — so deleted and inserted blocks both have a place. Inline nodes
//! (a hard break, a mention) appear in a block's spans as U+FFFC.
//!
//! Cost: yrs' snapshot walk re-splits the document along every range of both snapshots'
//! delete sets each time it walks a type, which made a diff of a much-edited TipTap document
//! take a second. So content already deleted at A is garbage-collected first (the walk then
//! skips it unaided and the snapshots only name deletions between A and B), and types the
//! changes did not touch are read as they are, without the snapshot walk.
//!
//! Not shown: formatting and attribute changes (a word made bold is "keep"), embeds in
//! texts (always "keep": the walk gives them no id), and map or array roots.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crdt_store::LogRow;
use serde::Serialize;
use yrs::branch::{BranchID, BranchPtr};
use yrs::types::text::Diff;
use yrs::types::text::{ChangeKind, YChange};
use yrs::{
    Any, ClientID, Doc, ID, IdSet, Out, ReadTxn, Snapshot, StateVector, Text, TextRef, Transact,
    TransactionMut, Update,
};

use super::json::MAX_DEPTH;
use super::kinds::{RootKind, root_kinds};
use super::{HistoryError, decode, guard};

/// What happened to a span of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    /// Present at both points.
    Keep,
    /// Inserted between the points (present at the later one only).
    Insert,
    /// Deleted between the points (present at the earlier one only).
    Delete,
}

/// A run of text with one op and one author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Span {
    /// What happened to it.
    pub op: Op,
    /// The characters.
    pub text: String,
    /// For insert: who inserted it; for delete: who deleted it; null for keep or unknown.
    #[schema(required = true)]
    pub author: Option<String>,
    /// The change that inserted (deleted) it; for a merged span, the first such change; null
    /// for keep.
    #[schema(required = true)]
    pub seq: Option<i64>,
}

/// One block of an XML root: a node holding text (paragraph, heading) or no children (empty
/// paragraph, horizontal rule). Inline nodes appear in spans as U+FFFC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = DiffBlock)]
pub(crate) struct Block {
    /// Child indexes from the fragment, counting children present at either point.
    pub path: Vec<u32>,
    /// The node type (element name; "text" for text directly inside a container).
    #[serde(rename = "type")]
    pub node_type: String,
    /// Whether the block itself was kept, inserted or deleted.
    pub op: Op,
    /// Its content.
    pub spans: Vec<Span>,
}

/// The changes of one root type. Text and XML roots only; formatting and attribute changes
/// show as keep, map and array roots are not diffed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum RootDiff {
    /// A `Y.Text`.
    Text {
        /// The whole text, in order.
        spans: Vec<Span>,
    },
    /// A `Y.XmlFragment`.
    Xml {
        /// Every block, in document order.
        blocks: Vec<Block>,
    },
}

/// The difference between two points of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Diff)]
pub(crate) struct DocDiff {
    /// The earlier point.
    #[schema(minimum = 0)]
    pub from: i64,
    /// The later point.
    #[schema(minimum = 0)]
    pub to: i64,
    /// Everyone who inserted or deleted something shown, sorted.
    pub authors: Vec<String>,
    /// Per changed text or XML root, by name; unchanged roots are left out.
    pub content: BTreeMap<String, RootDiff>,
}

/// The difference between `base` — the document at `from`, built with `skip_gc = true` so
/// deletions keep their text — and `base` with `rows` (the log rows right after `from`, in
/// order) applied. `base` is consumed: it ends at the later point.
pub(crate) fn diff(base: Doc, from: i64, rows: &[LogRow]) -> Result<DocDiff, HistoryError> {
    if !base.skip_gc() {
        return Err(HistoryError::CollectsGarbage);
    }
    let to = rows.last().map_or(from, |r| r.seq);
    let kinds_a = root_kinds(&base);
    let sv_a = base.transact().state_vector();
    let (updates, inserted, deleted) = attribute(rows, &sv_a)?;
    let applied = apply_tracked(&base, updates)?;
    let sv_b = base.transact().state_vector();
    let mut kinds: BTreeMap<String, RootKind> = kinds_a
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
    for (name, kind) in root_kinds(&base) {
        kinds.insert(name.to_string(), kind);
    }
    // Content deleted before A was garbage-collected by `apply_tracked`, so the walk skips it
    // by itself; the snapshots then only need the deletions made between A and B. That keeps
    // them small, which matters: yrs re-splits the document along every range of a snapshot's
    // delete set on each walk of a type.
    let snap_a = Snapshot::new(sv_a, IdSet::default());
    let snap_b = Snapshot::new(sv_b, applied.deleted);
    let walker = Walker {
        a: &snap_a,
        b: &snap_b,
        inserted: &inserted,
        deleted: &deleted,
        rows,
        touched: &applied.touched,
    };
    let content = guard("walking the diff", || {
        let mut txn = base.transact_mut();
        let mut content = BTreeMap::new();
        for (name, kind) in &kinds {
            let Some(branch) = root_branch(&txn, name) else {
                continue;
            };
            let root = match kind {
                RootKind::Text => RootDiff::Text {
                    spans: walker.text_spans(&mut txn, branch),
                },
                RootKind::Xml => {
                    let mut blocks = Vec::new();
                    walker.container(&mut txn, branch, &mut Vec::new(), 0, &mut blocks);
                    RootDiff::Xml { blocks }
                }
                RootKind::Map | RootKind::Array => continue,
            };
            if changed(&root) {
                content.insert(name.clone(), root);
            }
        }
        Ok(content)
    })?;
    let authors: BTreeSet<String> = content
        .values()
        .flat_map(|root| -> Box<dyn Iterator<Item = &Span>> {
            match root {
                RootDiff::Text { spans } => Box::new(spans.iter()),
                RootDiff::Xml { blocks } => Box::new(blocks.iter().flat_map(|b| b.spans.iter())),
            }
        })
        .filter(|s| s.op != Op::Keep)
        .filter_map(|s| s.author.clone())
        .collect();
    Ok(DocDiff {
        from,
        to,
        authors: authors.into_iter().collect(),
        content,
    })
}

/// Decodes `rows` and records which row inserted and which deleted each id (the first row to
/// claim an id wins). Items the document already had at A (`sv_a`) are re-sent, not inserted.
fn attribute(
    rows: &[LogRow],
    sv_a: &StateVector,
) -> Result<(Vec<Update>, Attribution, Attribution), HistoryError> {
    let mut inserted = Attribution::default();
    let mut deleted = Attribution::default();
    let mut updates = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let update = decode(&row.data, index)?;
        for (client, ranges) in update.insertions(true).iter() {
            let known = sv_a.get(client);
            for r in ranges.iter() {
                if r.end > known {
                    inserted.claim(*client, r.start.max(known)..r.end, index);
                }
            }
        }
        for (client, ranges) in update.delete_set().iter() {
            for r in ranges.iter() {
                deleted.claim(*client, r.clone(), index);
            }
        }
        updates.push(update);
    }
    Ok((updates, inserted, deleted))
}

/// What applying the changes touched.
#[derive(Default)]
struct Applied {
    /// Every type that changed, with its ancestors.
    touched: HashSet<BranchPtr>,
    /// Ids deleted by the changes (and not before).
    deleted: IdSet,
}

/// Key of the observer that records what the changes touch.
const OBSERVER_KEY: &str = "tandem-history-diff";

/// Garbage-collects what was deleted before A, then applies the changes in one transaction,
/// recording which types they touched and which ids they deleted.
fn apply_tracked(base: &Doc, updates: Vec<Update>) -> Result<Applied, HistoryError> {
    let applied: Arc<Mutex<Option<Applied>>> = Arc::default();
    let record = applied.clone();
    base.observe_after_transaction(OBSERVER_KEY, move |txn| {
        let seen = Applied {
            touched: txn.changed_parent_types().iter().copied().collect(),
            deleted: txn.delete_set().clone(),
        };
        if let Ok(mut slot) = record.lock() {
            *slot = Some(seen);
        }
    })
    .map_err(|_| HistoryError::Busy)?;
    let outcome = guard("applying the changes to diff", || {
        // Deleted content at A is no longer needed; once collected, the walk skips it without
        // a snapshot having to name it.
        base.transact_mut().gc(None);
        if let Ok(mut slot) = applied.lock() {
            *slot = None;
        }
        let mut txn = base.transact_mut();
        for (index, update) in updates.into_iter().enumerate() {
            txn.apply_update(update).map_err(|e| HistoryError::Apply {
                index,
                reason: e.to_string(),
            })?;
        }
        Ok(())
    });
    let _ = base.unobserve_after_transaction(OBSERVER_KEY);
    outcome?;
    let recorded = applied.lock().map(|mut a| a.take()).unwrap_or_default();
    Ok(recorded.unwrap_or_default())
}

/// Whether a root diff shows any insertion or deletion.
fn changed(root: &RootDiff) -> bool {
    match root {
        RootDiff::Text { spans } => spans.iter().any(|s| s.op != Op::Keep),
        RootDiff::Xml { blocks } => blocks
            .iter()
            .any(|b| b.op != Op::Keep || b.spans.iter().any(|s| s.op != Op::Keep)),
    }
}

fn root_branch<T: ReadTxn>(txn: &T, name: &str) -> Option<BranchPtr> {
    txn.root_refs()
        .find(|(n, _)| *n == name)
        .and_then(|(_, out)| out.try_branch().map(BranchPtr::from))
}

/// Which row first inserted (or deleted) each id: per client, disjoint clock ranges.
#[derive(Default)]
struct Attribution {
    clients: HashMap<ClientID, BTreeMap<u32, (u32, usize)>>,
}

impl Attribution {
    /// Records `range` of `client` as `row`'s, except parts an earlier row already has.
    fn claim(&mut self, client: ClientID, range: Range<u32>, row: usize) {
        if range.is_empty() {
            return;
        }
        let map = self.clients.entry(client).or_default();
        let mut cursor = range.start;
        let mut gaps = Vec::new();
        // The interval starting at or before `range.start`, then those starting inside it.
        let before = map
            .range(..=range.start)
            .next_back()
            .map(|(s, v)| (*s, v.0));
        let inside = map.range(range.start..range.end).map(|(s, v)| (*s, v.0));
        for (start, end) in before.into_iter().chain(inside) {
            if end <= cursor {
                continue;
            }
            if start > cursor {
                gaps.push(cursor..start.min(range.end));
            }
            cursor = cursor.max(end);
            if cursor >= range.end {
                break;
            }
        }
        if cursor < range.end {
            gaps.push(cursor..range.end);
        }
        for gap in gaps {
            if !gap.is_empty() {
                map.insert(gap.start, (gap.end, row));
            }
        }
    }

    /// The row owning `clock` of `client`, and where its range ends.
    fn find(&self, client: ClientID, clock: u32) -> Option<(usize, u32)> {
        let (_, (end, row)) = self.clients.get(&client)?.range(..=clock).next_back()?;
        (clock < *end).then_some((*row, *end))
    }
}

/// Whether `id` is visible in `snapshot` (present and not deleted).
fn visible(snapshot: &Snapshot, id: &ID) -> bool {
    id.clock < snapshot.state_map.get(&id.client) && !snapshot.delete_set.contains(id)
}

/// Walks the document at B with the snapshots of A and B.
struct Walker<'a> {
    a: &'a Snapshot,
    b: &'a Snapshot,
    inserted: &'a Attribution,
    deleted: &'a Attribution,
    rows: &'a [LogRow],
    /// Types the changes touched; any other type that exists at both points is unchanged
    /// and is read without the (costlier) snapshot walk.
    touched: &'a HashSet<BranchPtr>,
}

impl Walker<'_> {
    fn op_of(&self, id: &ID) -> Op {
        match (visible(self.a, id), visible(self.b, id)) {
            (true, false) => Op::Delete,
            (false, true) => Op::Insert,
            _ => Op::Keep,
        }
    }

    /// Author and seq of row `index`.
    fn row(&self, index: Option<usize>) -> (Option<String>, Option<i64>) {
        match index.and_then(|i| self.rows.get(i)) {
            Some(row) => (row.author.clone(), Some(row.seq)),
            None => (None, None),
        }
    }

    /// The spans of one text (a `Y.Text` root or an `XmlText`), merged.
    fn text_spans(&self, txn: &mut TransactionMut, branch: BranchPtr) -> Vec<Span> {
        let mut spans = Vec::new();
        self.push_text(txn, branch, &mut spans);
        spans
    }

    /// Appends the spans of one text to `spans`.
    fn push_text(&self, txn: &mut TransactionMut, branch: BranchPtr, spans: &mut Vec<Span>) {
        let chunks = self.children(txn, branch);
        for chunk in chunks {
            match (chunk.insert, chunk.ychange) {
                (Out::Any(Any::String(s)), None) => push(spans, Op::Keep, &s, (None, None)),
                (Out::Any(Any::String(s)), Some(change)) => {
                    let (op, owners) = match change.kind {
                        ChangeKind::Added => (Op::Insert, self.inserted),
                        ChangeKind::Removed => (Op::Delete, self.deleted),
                    };
                    self.push_attributed(spans, op, &s, change.id, owners);
                }
                // An embed, or a nested type inside a text: one object, state unknown.
                _ => push(spans, Op::Keep, "\u{FFFC}", (None, None)),
            }
        }
    }

    /// Appends `text`, the content of the item starting at `id`, cut where the owning row
    /// changes (clocks advance by UTF-16 unit).
    fn push_attributed(
        &self,
        spans: &mut Vec<Span>,
        op: Op,
        text: &str,
        id: ID,
        owners: &Attribution,
    ) {
        let mut clock = id.clock;
        let mut run_start = 0usize;
        let mut current: Option<(Option<usize>, u32)> = None;
        for (at, ch) in text.char_indices() {
            let owner = match current {
                Some((row, end)) if clock < end => (row, end),
                _ => match owners.find(id.client, clock) {
                    Some((row, end)) => (Some(row), end),
                    // Unknown owner: one clock at a time until a known range starts.
                    None => (None, clock.saturating_add(1)),
                },
            };
            if let Some((row, _)) = current
                && row != owner.0
            {
                push(spans, op, &text[run_start..at], self.row(row));
                run_start = at;
            }
            current = Some(owner);
            clock = clock.saturating_add(ch.len_utf16() as u32);
        }
        if let Some((row, _)) = current {
            push(spans, op, &text[run_start..], self.row(row));
        }
    }

    /// The children of an XML node present at A or at B, in order (with text runs for any
    /// characters stored directly in it).
    fn children(&self, txn: &mut TransactionMut, branch: BranchPtr) -> Vec<Diff<YChange>> {
        let is_root = matches!(branch.id(), BranchID::Root(_));
        if is_root || self.touched.contains(&branch) || self.branch_op(branch) != Op::Keep {
            TextRef::from(branch).diff_range(txn, Some(self.b), Some(self.a), YChange::identity)
        } else {
            // Unchanged between A and B: its current content is its content at both points.
            TextRef::from(branch).diff(txn, YChange::identity)
        }
    }

    /// Walks the children of an XML fragment or container element, emitting blocks.
    fn container(
        &self,
        txn: &mut TransactionMut,
        branch: BranchPtr,
        path: &mut Vec<u32>,
        depth: usize,
        blocks: &mut Vec<Block>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let children = self.children(txn, branch);
        self.container_children(txn, children, path, depth, blocks);
    }

    fn container_children(
        &self,
        txn: &mut TransactionMut,
        children: Vec<Diff<YChange>>,
        path: &mut Vec<u32>,
        depth: usize,
        blocks: &mut Vec<Block>,
    ) {
        for (index, chunk) in children.into_iter().enumerate() {
            path.push(index as u32);
            match &chunk.insert {
                Out::YXmlElement(el) => {
                    let child = super::branch_of(el);
                    let name = el.try_tag().map_or("", |t| &**t).to_string();
                    self.element(txn, child, name, path, depth + 1, blocks);
                }
                Out::YXmlText(t) => {
                    let child = super::branch_of(t);
                    let spans = self.text_spans(txn, child);
                    blocks.push(Block {
                        path: path.clone(),
                        node_type: "text".into(),
                        op: self.branch_op(child),
                        spans,
                    });
                }
                _ => {}
            }
            path.pop();
        }
    }

    fn branch_op(&self, branch: BranchPtr) -> Op {
        match branch.id() {
            BranchID::Nested(id) => self.op_of(&id),
            BranchID::Root(_) => Op::Keep,
        }
    }

    /// An element: a block when it holds text or nothing, otherwise a container.
    fn element(
        &self,
        txn: &mut TransactionMut,
        branch: BranchPtr,
        name: String,
        path: &mut Vec<u32>,
        depth: usize,
        blocks: &mut Vec<Block>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let children = self.children(txn, branch);
        let has_text = children
            .iter()
            .any(|c| matches!(c.insert, Out::YXmlText(_)));
        let op = self.branch_op(branch);
        if has_text || children.is_empty() {
            let mut spans = Vec::new();
            for chunk in children {
                match chunk.insert {
                    Out::YXmlText(t) => self.push_text(txn, super::branch_of(&t), &mut spans),
                    Out::YXmlElement(el) => {
                        // An inline node (hard break, mention, inline image).
                        let child = super::branch_of(&el);
                        let child_op = self.branch_op(child);
                        let owner = match (child_op, child.id()) {
                            (Op::Insert, BranchID::Nested(id)) => {
                                self.inserted.find(id.client, id.clock).map(|o| o.0)
                            }
                            (Op::Delete, BranchID::Nested(id)) => {
                                self.deleted.find(id.client, id.clock).map(|o| o.0)
                            }
                            _ => None,
                        };
                        push(&mut spans, child_op, "\u{FFFC}", self.row(owner));
                    }
                    _ => {}
                }
            }
            blocks.push(Block {
                path: path.clone(),
                node_type: name,
                op,
                spans,
            });
        } else {
            // A container (list, list item, blockquote): its children are the blocks. Its own
            // insertion or deletion shows in theirs.
            self.container_children(txn, children, path, depth, blocks);
        }
    }
}

/// Appends a span, merging it into the previous one when op and author match.
fn push(spans: &mut Vec<Span>, op: Op, text: &str, (author, seq): (Option<String>, Option<i64>)) {
    if text.is_empty() {
        return;
    }
    if let Some(last) = spans.last_mut()
        && last.op == op
        && last.author == author
    {
        last.text.push_str(text);
        return;
    }
    spans.push(Span {
        op,
        text: text.to_string(),
        author,
        seq,
    });
}

/// The text of a span list at the earlier (`Op::Delete` kept) or later (`Op::Insert` kept)
/// point.
#[cfg(test)]
pub(crate) fn text_at(spans: &[Span], later: bool) -> String {
    spans
        .iter()
        .filter(|s| match s.op {
            Op::Keep => true,
            Op::Insert => later,
            Op::Delete => !later,
        })
        .map(|s| s.text.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixture::{generate, replay};
    use crate::history::reconstruct;
    use yrs::{Text, Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};

    /// The document at `seq` with deleted content kept, from the nearest snapshot.
    fn base_at(r: &crate::history::fixture::Replay, seq: usize) -> Doc {
        let snap = r.snapshots.iter().rev().find(|(s, _)| *s as usize <= seq);
        let from = snap.map_or(0, |(s, _)| *s as usize);
        reconstruct(
            snap.map(|(_, s)| s.as_slice()),
            r.rows[from..seq].iter().map(|x| x.data.as_slice()),
            true,
        )
        .unwrap()
    }

    fn spans_of(d: &DocDiff, root: &str) -> Vec<Span> {
        match d.content.get(root) {
            Some(RootDiff::Text { spans }) => spans.clone(),
            None => Vec::new(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn text_diff_reproduces_both_ends() {
        let edits = generate(2000, 3, 21);
        let r = replay(&edits, "body", 700);
        for (a, b) in [
            (0, 1),
            (0, 2000),
            (1, 40),
            (650, 760),
            (700, 1400),
            (1399, 1400),
            (1000, 1999),
            (37, 1800),
        ] {
            let d = diff(base_at(&r, a), a as i64, &r.rows[a..b]).unwrap();
            assert_eq!((d.from, d.to), (a as i64, b as i64));
            let spans = spans_of(&d, "body");
            if r.texts[a] == r.texts[b] && spans.is_empty() {
                continue;
            }
            assert_eq!(
                text_at(&spans, false),
                r.texts[a],
                "text at {a} from diff {a}..{b}"
            );
            assert_eq!(
                text_at(&spans, true),
                r.texts[b],
                "text at {b} from diff {a}..{b}"
            );
            for s in &spans {
                match s.op {
                    Op::Keep => assert_eq!((s.author.as_deref(), s.seq), (None, None)),
                    Op::Insert | Op::Delete => {
                        let seq = s.seq.expect("attributed span");
                        assert!(seq > a as i64 && seq <= b as i64, "{s:?}");
                        // The span's author is its first change's author.
                        assert_eq!(s.author, r.rows[seq as usize - 1].author, "{s:?}");
                        assert!(d.authors.contains(s.author.as_ref().unwrap()));
                    }
                }
            }
            // Merged: no two neighbours share op and author.
            for w in spans.windows(2) {
                assert!(w[0].op != w[1].op || w[0].author != w[1].author, "{w:?}");
            }
        }
    }

    #[test]
    fn attribution_follows_the_rows() {
        // alice types "hello", bob deletes "ell", alice types " world": exact spans.
        let doc = Doc::with_options(yrs::Options {
            client_id: yrs::ClientID::new(5),
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let text = doc.get_or_insert_text("t");
        let mut rows = Vec::new();
        let mut row = |author: &str, f: &dyn Fn(&mut yrs::TransactionMut)| {
            let mut txn = doc.transact_mut();
            f(&mut txn);
            let data = txn.encode_update_v1();
            let seq = rows.len() as i64 + 1;
            rows.push(LogRow {
                seq,
                created_at: std::time::UNIX_EPOCH,
                size: data.len() as i64,
                author: Some(author.to_string()),
                data,
            });
        };
        row("alice", &|t| text.insert(t, 0, "h"));
        // Same client, another author (a shared device): yrs merges "h" and "ello" into one
        // item, which the diff must cut where the rows change.
        row("dave", &|t| text.insert(t, 1, "ello"));
        row("bob", &|t| text.remove_range(t, 1, 3));
        row("alice", &|t| text.insert(t, 2, " w😀rld"));
        row("carol", &|t| text.remove_range(t, 0, 1));
        let plain = |spans: Vec<Span>| -> Vec<(Op, String, Option<String>, Option<i64>)> {
            spans
                .into_iter()
                .map(|s| (s.op, s.text, s.author, s.seq))
                .collect()
        };
        let s = |op, t: &str, a: Option<&str>, q: Option<i64>| {
            (op, t.to_string(), a.map(str::to_string), q)
        };
        // From the empty document. Text inserted and deleted in between is in neither state,
        // so it is not shown.
        let base = reconstruct(None, std::iter::empty(), true).unwrap();
        let d = diff(base, 0, &rows).unwrap();
        assert_eq!(
            plain(spans_of(&d, "t")),
            vec![
                s(Op::Insert, "o", Some("dave"), Some(2)),
                s(Op::Insert, " w😀rld", Some("alice"), Some(4)),
            ]
        );
        assert_eq!(d.authors, vec!["alice", "dave"]);
        // From after the first two rows: the deletions are attributed to their authors.
        let base = reconstruct(None, rows[..2].iter().map(|r| r.data.as_slice()), true).unwrap();
        let d = diff(base, 2, &rows[2..]).unwrap();
        assert_eq!(
            plain(spans_of(&d, "t")),
            vec![
                s(Op::Delete, "h", Some("carol"), Some(5)),
                s(Op::Delete, "ell", Some("bob"), Some(3)),
                s(Op::Keep, "o", None, None),
                s(Op::Insert, " w😀rld", Some("alice"), Some(4)),
            ]
        );
        assert_eq!(d.authors, vec!["alice", "bob", "carol"]);
        // No change: nothing to show.
        let base = reconstruct(None, rows.iter().map(|r| r.data.as_slice()), true).unwrap();
        let d = diff(base, 5, &[]).unwrap();
        assert!(d.content.is_empty() && d.authors.is_empty());
    }

    #[test]
    fn base_must_keep_deleted_content() {
        let base = reconstruct(None, std::iter::empty(), false).unwrap();
        assert!(matches!(
            diff(base, 0, &[]),
            Err(HistoryError::CollectsGarbage)
        ));
    }

    #[test]
    fn first_claim_wins() {
        let c = ClientID::new(1);
        let mut a = Attribution::default();
        a.claim(c, 10..20, 0);
        a.claim(c, 5..25, 1); // re-sends 10..20
        a.claim(c, 0..30, 2);
        a.claim(c, 7..7, 3);
        let owner = |clock| a.find(c, clock).map(|o| o.0);
        assert_eq!(
            [0, 4, 5, 9, 10, 19, 20, 24, 25, 29, 30].map(owner),
            [
                Some(2),
                Some(2),
                Some(1),
                Some(1),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                None
            ]
        );
        assert_eq!(a.find(c, 12), Some((0, 20)));
        assert_eq!(a.find(ClientID::new(2), 12), None);
    }

    #[test]
    fn xml_diff_by_block() {
        let editor = Doc::with_options(yrs::Options {
            client_id: yrs::ClientID::new(9),
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let frag = editor.get_or_insert_xml_fragment("default");
        let mut rows = Vec::new();
        let mut row = |author: &str, f: &dyn Fn(&mut yrs::TransactionMut)| {
            let mut txn = editor.transact_mut();
            f(&mut txn);
            let data = txn.encode_update_v1();
            let seq = rows.len() as i64 + 1;
            rows.push(LogRow {
                seq,
                created_at: std::time::UNIX_EPOCH,
                size: data.len() as i64,
                author: Some(author.to_string()),
                data,
            });
        };
        let para = |t: &mut yrs::TransactionMut, tag: &str, text: &str| {
            let p = frag.push_back(t, XmlElementPrelim::empty(tag));
            p.push_back(t, XmlTextPrelim::new(text));
        };
        row("alice", &|t| {
            para(t, "heading", "Title");
            para(t, "paragraph", "First");
            para(t, "paragraph", "Second");
            para(t, "paragraph", "Fourth");
        });
        row("bob", &|t| {
            // Edit the first paragraph, delete the second, add a third with a hard break.
            let p = frag.get(t, 1).and_then(|x| x.into_xml_element()).unwrap();
            let text = p.get(t, 0).and_then(|x| x.into_xml_text()).unwrap();
            text.insert(t, 5, "!");
            frag.remove_range(t, 2, 1);
            let p = frag.push_back(t, XmlElementPrelim::empty("paragraph"));
            p.push_back(t, XmlTextPrelim::new("a"));
            p.push_back(t, XmlElementPrelim::empty("hardBreak"));
            p.push_back(t, XmlTextPrelim::new("b"));
            let h = frag.get(t, 0).and_then(|x| x.into_xml_element()).unwrap();
            h.insert_attribute(t, "level", 2);
        });
        let base = reconstruct(None, rows[..1].iter().map(|r| r.data.as_slice()), true).unwrap();
        let d = diff(base, 1, &rows[1..]).unwrap();
        let Some(RootDiff::Xml { blocks }) = d.content.get("default") else {
            panic!("no xml diff: {d:?}");
        };
        type Shape<'a> = (Vec<u32>, &'a str, Op, Vec<(Op, &'a str)>);
        let shape: Vec<Shape> = blocks
            .iter()
            .map(|b| {
                (
                    b.path.clone(),
                    b.node_type.as_str(),
                    b.op,
                    b.spans.iter().map(|s| (s.op, s.text.as_str())).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (vec![0], "heading", Op::Keep, vec![(Op::Keep, "Title")]),
                (
                    vec![1],
                    "paragraph",
                    Op::Keep,
                    vec![(Op::Keep, "First"), (Op::Insert, "!")]
                ),
                (
                    vec![2],
                    "paragraph",
                    Op::Delete,
                    vec![(Op::Delete, "Second")]
                ),
                // Untouched: read without the snapshot walk.
                (vec![3], "paragraph", Op::Keep, vec![(Op::Keep, "Fourth")]),
                (
                    vec![4],
                    "paragraph",
                    Op::Insert,
                    vec![(Op::Insert, "a\u{FFFC}b")]
                ),
            ]
        );
        assert!(
            blocks
                .iter()
                .flat_map(|b| &b.spans)
                .filter(|s| s.op != Op::Keep)
                .all(|s| s.author.as_deref() == Some("bob") && s.seq == Some(2))
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["content"]["default"]["kind"], "xml");
        assert_eq!(json["content"]["default"]["blocks"][2]["type"], "paragraph");
        assert_eq!(
            json["content"]["default"]["blocks"][2]["spans"][0]["op"],
            "delete"
        );
    }
}
