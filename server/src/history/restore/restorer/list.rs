//! Editing a list (`Y.Array`, the children of an XML node) into the target's: items equal by
//! fingerprint are kept (an LCS), and within each changed stretch items of the same shape are
//! paired by similarity and edited in place; the rest are deleted or inserted as copies.

use std::collections::HashMap;

use yrs::branch::BranchPtr;
use yrs::{Any, Array, ArrayRef, GetString, Map, Out, ReadTxn, TransactionMut};

use super::{Restorer, Shape, shape};
use crate::history::restore::roots::{clear_list, items};
use crate::history::restore::seq_diff::{common_prefix, common_suffix, gaps_and_runs, myers};

/// A changed stretch of a list with at most this many old×new pairs is aligned by similarity
/// (dynamic programming); larger ones pair items of the same kind in order.
const ALIGN_CELLS: usize = 4_096;
/// Score of pairing two items of the same kind, on top of their similarity (0..=1): pairing
/// (editing in place) beats deleting and re-inserting even dissimilar items, because it keeps
/// the item's identity.
const PAIR_BONUS: f64 = 0.01;

/// One step of bringing a list to its target, applied left to right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Keep this many items.
    Keep(usize),
    /// Delete this many items.
    Delete(usize),
    /// Insert a copy of target item `j`.
    Insert(usize),
    /// Edit current item `i` in place into target item `j` (same kind).
    Pair(usize, usize),
}

impl<T: ReadTxn> Restorer<'_, T> {
    /// Edits list `cur` (an array, or an XML node's children) into `tgt`.
    pub(super) fn sync_list(&mut self, txn: &mut TransactionMut, cur: &ArrayRef, tgt: &ArrayRef) {
        // Checked readable before the restore began (`target_readable`).
        let tgt_items = items(self.target, tgt).unwrap_or_default();
        let cur_items = match items(&*txn, cur) {
            Some(items) => items,
            None => {
                // Unreadable here: start from an empty list.
                clear_list(
                    txn,
                    BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(cur)),
                );
                Vec::new()
            }
        };
        let fa: Vec<u64> = cur_items
            .iter()
            .map(|v| self.fingerprint(&*txn, v))
            .collect();
        let fb: Vec<u64> = tgt_items
            .iter()
            .map(|v| self.fingerprint(self.target, v))
            .collect();
        let matches = myers(&fa, &fb, &mut self.budget);
        let mut steps = Vec::new();
        for (ga, gb, m) in gaps_and_runs(&matches, fa.len(), fb.len()) {
            if !ga.is_empty() || !gb.is_empty() {
                self.align(txn, &cur_items, ga, &tgt_items, gb, &mut steps);
            }
            if m.len > 0 {
                steps.push(Step::Keep(m.len));
            }
        }
        self.apply_steps(txn, cur, &cur_items, &tgt_items, &steps);
    }

    /// Aligns a changed stretch: current items `ra` against target items `rb`, pairing items
    /// of the same shape (edited in place) and deleting / inserting the others.
    fn align(
        &self,
        txn: &TransactionMut,
        cur: &[Out],
        ra: std::ops::Range<usize>,
        tgt: &[Out],
        rb: std::ops::Range<usize>,
        steps: &mut Vec<Step>,
    ) {
        let sa: Vec<Option<Shape>> = cur[ra.clone()].iter().map(shape).collect();
        let sb: Vec<Option<Shape>> = tgt[rb.clone()].iter().map(shape).collect();
        let pairable = sa
            .iter()
            .flatten()
            .any(|s| sb.iter().flatten().any(|t| s == t));
        let pairs: Vec<(usize, usize)> = if !pairable {
            Vec::new()
        } else if sa.len() * sb.len() <= ALIGN_CELLS {
            let ta: Vec<String> = cur[ra.clone()].iter().map(|v| plain(txn, v)).collect();
            let tb: Vec<String> = tgt[rb.clone()]
                .iter()
                .map(|v| plain(self.target, v))
                .collect();
            align_by_similarity(&sa, &sb, &ta, &tb)
        } else {
            // Too many to score every pair: pair same-shaped items in order (an LCS over shapes;
            // items without a shape get unique keys so they never pair).
            let mut ids: HashMap<Shape, u64> = HashMap::new();
            let mut key = |s: &Option<Shape>, unique: u64| match s {
                Some(s) => {
                    let next = ids.len() as u64;
                    *ids.entry(s.clone()).or_insert(next)
                }
                None => unique,
            };
            let ka: Vec<u64> = sa
                .iter()
                .enumerate()
                .map(|(i, s)| key(s, (1 << 40) + i as u64))
                .collect();
            let kb: Vec<u64> = sb
                .iter()
                .enumerate()
                .map(|(j, s)| key(s, (1 << 41) + j as u64))
                .collect();
            let mut budget = u64::MAX;
            myers(&ka, &kb, &mut budget)
                .iter()
                .flat_map(|m| (0..m.len).map(move |k| (m.a + k, m.b + k)))
                .collect()
        };
        let (mut i, mut j) = (0, 0);
        let end = (sa.len(), sb.len());
        for &(pi, pj) in pairs.iter().chain(std::iter::once(&end)) {
            if pi > i {
                steps.push(Step::Delete(pi - i));
            }
            for k in j..pj {
                steps.push(Step::Insert(rb.start + k));
            }
            if (pi, pj) != end {
                steps.push(Step::Pair(ra.start + pi, rb.start + pj));
            }
            i = pi + 1;
            j = pj + 1;
        }
    }

    /// Applies list steps left to right; `pos` is the index in the list as edited so far.
    fn apply_steps(
        &mut self,
        txn: &mut TransactionMut,
        list: &ArrayRef,
        cur: &[Out],
        tgt: &[Out],
        steps: &[Step],
    ) {
        let mut pos: u32 = 0;
        let mut k = 0;
        while k < steps.len() {
            match steps[k] {
                Step::Keep(n) => pos += n as u32,
                Step::Delete(n) => list.remove_range(txn, pos, n as u32),
                Step::Pair(i, j) => {
                    if !self.sync(txn, &cur[i], &tgt[j]) {
                        // Paired only by shape, so this does not happen; stay exact anyway.
                        list.remove(txn, pos);
                        self.insert_copy(txn, list, pos, &tgt[j]);
                    }
                    pos += 1;
                }
                Step::Insert(j) => {
                    // Consecutive plain values go in as one item, as Yjs does for a pushed run.
                    let mut run: Vec<Any> = Vec::new();
                    while let Some(Step::Insert(j)) = steps.get(k) {
                        match &tgt[*j] {
                            Out::Any(any) => run.push(any.clone()),
                            _ => break,
                        }
                        k += 1;
                    }
                    if run.is_empty() {
                        self.insert_copy(txn, list, pos, &tgt[j]);
                        pos += 1;
                    } else {
                        let n = run.len() as u32;
                        list.insert_range(txn, pos, run);
                        pos += n;
                        continue;
                    }
                }
            }
            k += 1;
        }
    }

    /// Inserts a deep copy of target value `tgt` at `pos` of `list`.
    fn insert_copy(&mut self, txn: &mut TransactionMut, list: &ArrayRef, pos: u32, tgt: &Out) {
        let fresh = list.insert(txn, pos, self.fresh(tgt));
        self.sync(txn, &fresh, tgt);
    }
}

/// A flat rendering of an item (its texts and plain values, tags as markers), only to
/// measure similarity. Bounded: similarity of two huge items needs no more.
fn plain<R: ReadTxn>(txn: &R, v: &Out) -> String {
    const MAX: usize = 4_096;
    fn walk<R: ReadTxn>(txn: &R, v: &Out, out: &mut String) {
        if out.len() >= MAX {
            return;
        }
        match v {
            Out::Any(any) => out.push_str(&format!("{any}")),
            Out::YText(t) => out.push_str(&t.get_string(txn)),
            Out::YXmlText(t) => out.push_str(&t.get_string(txn)),
            Out::YXmlElement(e) => {
                out.push('<');
                out.push_str(e.try_tag().map_or("", |t| t));
                out.push('>');
                for child in items(txn, e.as_ref()).unwrap_or_default() {
                    walk(txn, &child, out);
                }
            }
            Out::YXmlFragment(f) => {
                for child in items(txn, f.as_ref()).unwrap_or_default() {
                    walk(txn, &child, out);
                }
            }
            Out::YArray(a) => {
                for child in items(txn, a).unwrap_or_default() {
                    walk(txn, &child, out);
                }
            }
            Out::YMap(m) => {
                let mut entries: Vec<(&str, Out)> = m.iter(txn).collect();
                entries.sort_by(|x, y| x.0.cmp(y.0));
                for (k, v) in entries {
                    out.push_str(k);
                    walk(txn, &v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(txn, v, &mut out);
    out
}

/// Similarity of two strings in 0..=1: the share of the longer one covered by their common
/// prefix and suffix (a paragraph edited somewhere in the middle scores high).
fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let prefix = common_prefix(a, b);
    let suffix = common_suffix(&a[prefix..], &b[prefix..]);
    (prefix + suffix) as f64 / longest as f64
}

/// Pairs same-shaped items of a changed stretch, maximizing the summed similarity of the pairs
/// (in order: pairs never cross). Returns (index in `sa`, index in `sb`) ascending.
fn align_by_similarity(
    sa: &[Option<Shape>],
    sb: &[Option<Shape>],
    ta: &[String],
    tb: &[String],
) -> Vec<(usize, usize)> {
    let (n, m) = (sa.len(), sb.len());
    let w = m + 1;
    let mut score = vec![0.0f64; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            let mut best = score[(i - 1) * w + j].max(score[i * w + j - 1]);
            if sa[i - 1].is_some() && sa[i - 1] == sb[j - 1] {
                let pair =
                    score[(i - 1) * w + j - 1] + PAIR_BONUS + similarity(&ta[i - 1], &tb[j - 1]);
                best = best.max(pair);
            }
            score[i * w + j] = best;
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        let here = score[i * w + j];
        if here == score[(i - 1) * w + j] {
            i -= 1;
        } else if here == score[i * w + j - 1] {
            j -= 1;
        } else {
            pairs.push((i - 1, j - 1));
            i -= 1;
            j -= 1;
        }
    }
    pairs.reverse();
    pairs
}
