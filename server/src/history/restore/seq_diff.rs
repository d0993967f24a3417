//! Common runs of two sequences: Myers' diff, and a tiered text diff on top of it (lines, then
//! words, then characters). Generic: it knows nothing of documents. Not to be confused with
//! [`crate::history::diff`], which attributes the changes between two points of a document's
//! history to their authors.

use std::collections::HashMap;
use std::ops::{ControlFlow, Range};

/// The token of a line break: line-level diffing splits texts after it.
const NEWLINE: u32 = '\n' as u32;
/// Below this many differing tokens (both sides together) a text is diffed character by
/// character directly; above it, by lines first (see [`diff_text`]).
const LINE_MODE_MIN: usize = 4_000;
/// The same for words, inside changed stretches of lines.
const WORD_MODE_MIN: usize = 256;

/// A run of equal elements: `a[a..a + len] == b[b..b + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Match {
    /// Start in the first sequence.
    pub(super) a: usize,
    /// Start in the second sequence.
    pub(super) b: usize,
    /// Length of the run.
    pub(super) len: usize,
}

/// Walks common runs `matches` (ascending) of sequences of lengths `len_a` and `len_b`: for
/// each run, the stretches of both sequences before it (changed, possibly empty) and the
/// run; a last empty run at the ends gives the trailing stretches.
pub(super) fn gaps_and_runs(
    matches: &[Match],
    len_a: usize,
    len_b: usize,
) -> impl Iterator<Item = (Range<usize>, Range<usize>, Match)> + '_ {
    let end = Match {
        a: len_a,
        b: len_b,
        len: 0,
    };
    let mut at = (0, 0);
    matches
        .iter()
        .copied()
        .chain(std::iter::once(end))
        .map(move |m| {
            let gaps = (at.0..m.a, at.1..m.b);
            at = (m.a + m.len, m.b + m.len);
            (gaps.0, gaps.1, m)
        })
}

/// Length of the common prefix of two slices.
pub(super) fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Length of the common suffix of two slices.
pub(super) fn common_suffix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Common runs of two texts (tokens), ascending and merged. Long texts are diffed in tiers:
/// lines first, then words inside changed stretches of lines, then characters inside changed
/// stretches of words; trivial common runs between large changes are dropped (see
/// [`cleanup_semantic`]).
///
/// Why tiers: Myers costs O((N+M)·D). A 100 KB text revised all over has D in the tens of
/// thousands of characters; the same changes counted in lines and words are far fewer, and
/// the character passes then run on short stretches.
pub(super) fn diff_text(a: &[u32], b: &[u32], budget: &mut u64) -> Vec<Match> {
    cleanup_semantic(merge_adjacent(diff_tier(a, b, Tier::Lines, budget)))
}

/// The unit a tier compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Lines,
    Words,
    Chars,
}

impl Tier {
    /// The next finer tier, and how long two stretches must be together before this tier
    /// is worth its bookkeeping (below that, characters directly).
    fn min_len(self) -> usize {
        match self {
            Tier::Lines => LINE_MODE_MIN,
            Tier::Words => WORD_MODE_MIN,
            Tier::Chars => 0,
        }
    }

    fn finer(self) -> Tier {
        match self {
            Tier::Lines => Tier::Words,
            Tier::Words | Tier::Chars => Tier::Chars,
        }
    }

    /// Token ranges of this tier's units in `t`.
    fn split(self, t: &[u32]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        match self {
            Tier::Lines => {
                // Each line includes its line break.
                for (i, &tok) in t.iter().enumerate() {
                    if tok == NEWLINE {
                        out.push(start..i + 1);
                        start = i + 1;
                    }
                }
                if start < t.len() {
                    out.push(start..t.len());
                }
            }
            Tier::Words | Tier::Chars => {
                // A word is a run of letters and digits; every other token stands alone.
                let wordy = |tok: u32| char::from_u32(tok).is_some_and(char::is_alphanumeric);
                while start < t.len() {
                    let mut end = start + 1;
                    if wordy(t[start]) {
                        while end < t.len() && wordy(t[end]) {
                            end += 1;
                        }
                    }
                    out.push(start..end);
                    start = end;
                }
            }
        }
        out
    }
}

/// Common runs of `a` and `b` at `tier` and finer.
fn diff_tier(a: &[u32], b: &[u32], tier: Tier, budget: &mut u64) -> Vec<Match> {
    let prefix = common_prefix(a, b);
    let suffix = common_suffix(&a[prefix..], &b[prefix..]);
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out = Vec::new();
    if prefix > 0 {
        out.push(Match {
            a: 0,
            b: 0,
            len: prefix,
        });
    }
    if !ma.is_empty() && !mb.is_empty() {
        let middle = if tier == Tier::Chars || ma.len() + mb.len() <= tier.min_len() {
            myers(ma, mb, budget)
        } else {
            diff_units(ma, mb, tier, budget)
        };
        out.extend(middle.into_iter().map(|m| Match {
            a: m.a + prefix,
            b: m.b + prefix,
            len: m.len,
        }));
    }
    if suffix > 0 {
        out.push(Match {
            a: a.len() - suffix,
            b: b.len() - suffix,
            len: suffix,
        });
    }
    out
}

/// Diffs `a` and `b` by the units of `tier`, then each changed stretch at the next tier.
fn diff_units(a: &[u32], b: &[u32], tier: Tier, budget: &mut u64) -> Vec<Match> {
    let (ua, ub) = (tier.split(a), tier.split(b));
    // Units are interned to small ids; the keys borrow `a` and `b`.
    let mut ids: HashMap<&[u32], u32> = HashMap::new();
    let mut ka = Vec::with_capacity(ua.len());
    for r in &ua {
        let next = ids.len() as u32;
        ka.push(*ids.entry(&a[r.clone()]).or_insert(next));
    }
    let mut kb = Vec::with_capacity(ub.len());
    for r in &ub {
        let next = ids.len() as u32;
        kb.push(*ids.entry(&b[r.clone()]).or_insert(next));
    }
    let unit_matches = myers(&ka, &kb, budget);
    // Token offset of unit `i` (or the end).
    let at = |us: &[std::ops::Range<usize>], i: usize, total: usize| {
        us.get(i).map_or(total, |r| r.start)
    };
    let mut out = Vec::new();
    for (ga, gb, m) in gaps_and_runs(&unit_matches, ua.len(), ub.len()) {
        let (sa, ea) = (at(&ua, ga.start, a.len()), at(&ua, ga.end, a.len()));
        let (sb, eb) = (at(&ub, gb.start, b.len()), at(&ub, gb.end, b.len()));
        if ea > sa && eb > sb {
            let finer = diff_tier(&a[sa..ea], &b[sb..eb], tier.finer(), budget);
            out.extend(finer.into_iter().map(|c| Match {
                a: c.a + sa,
                b: c.b + sb,
                len: c.len,
            }));
        }
        if m.len > 0 {
            let (ta, tb) = (at(&ua, m.a, a.len()), at(&ub, m.b, b.len()));
            let len = at(&ua, m.a + m.len, a.len()) - ta;
            out.push(Match { a: ta, b: tb, len });
        }
    }
    out
}

/// Joins runs that touch.
fn merge_adjacent(matches: Vec<Match>) -> Vec<Match> {
    let mut out: Vec<Match> = Vec::with_capacity(matches.len());
    for m in matches.into_iter().filter(|m| m.len > 0) {
        match out.last_mut() {
            Some(last) if last.a + last.len == m.a && last.b + last.len == m.b => last.len += m.len,
            _ => out.push(m),
        }
    }
    out
}

/// Drops common runs no longer than the changes on both sides of them (as diff-match-patch's
/// semantic cleanup does): keeping a lone space between two replaced sentences saves nothing
/// and shreds the text into tiny items.
fn cleanup_semantic(mut matches: Vec<Match>) -> Vec<Match> {
    // A few passes settle it; each drop can only make a neighbour's changes larger.
    for _ in 0..8 {
        let mut out: Vec<Match> = Vec::with_capacity(matches.len());
        let mut dropped = false;
        for (k, m) in matches.iter().enumerate() {
            let (pa, pb) = out.last().map_or((0, 0), |p| (p.a + p.len, p.b + p.len));
            let before = (m.a - pa).max(m.b - pb);
            let after = match matches.get(k + 1) {
                Some(n) => (n.a - (m.a + m.len)).max(n.b - (m.b + m.len)),
                // After the last run, up to the ends: unknown here, so never drop it for that.
                None => 0,
            };
            if m.len <= before && m.len <= after {
                dropped = true;
            } else {
                out.push(*m);
            }
        }
        matches = out;
        if !dropped {
            break;
        }
    }
    matches
}

/// Common runs of two sequences by Myers' O((N+M)·D) algorithm in linear space (divide and
/// conquer on the middle snake, after diff-match-patch's `bisect`), ascending and merged.
/// `budget` bounds the work; stretches left when it runs out get no common runs.
pub(super) fn myers<X: PartialEq>(a: &[X], b: &[X], budget: &mut u64) -> Vec<Match> {
    let lim = (a.len() + b.len()).div_ceil(2) + 1;
    let mut search = Myers {
        a,
        b,
        vf: V::new(lim),
        vb: V::new(lim),
        out: Vec::new(),
        budget,
    };
    search.conquer(0, a.len(), 0, b.len());
    // Runs come out in order: prefix, left half, right half, suffix.
    let out = std::mem::take(&mut search.out);
    merge_adjacent(out)
}

/// Furthest-reaching x per diagonal k (negative k too); -1 = not reached.
struct V {
    center: isize,
    /// Diagonals in use by the current search: -window..=window.
    window: isize,
    v: Vec<isize>,
}

impl V {
    fn new(lim: usize) -> Self {
        V {
            center: lim as isize + 1,
            window: 0,
            v: vec![-1; 2 * lim + 3],
        }
    }

    /// Starts a search whose diagonals stay within -window..=window.
    fn reset(&mut self, window: isize) {
        self.window = window;
        let (lo, hi) = (
            (self.center - window) as usize,
            (self.center + window) as usize,
        );
        self.v[lo..=hi].fill(-1);
    }

    /// Where a path on diagonal `k` starts at step `d`: from the neighbour diagonal that
    /// reached further.
    fn next_x(&self, k: isize, d: isize) -> isize {
        if k == -d || (k != d && self.get(k - 1) < self.get(k + 1)) {
            self.get(k + 1)
        } else {
            self.get(k - 1) + 1
        }
    }

    fn get(&self, k: isize) -> isize {
        if k.abs() > self.window {
            -1
        } else {
            self.v[(k + self.center) as usize]
        }
    }

    fn set(&mut self, k: isize, x: isize) {
        if k.abs() <= self.window {
            self.v[(k + self.center) as usize] = x;
        }
    }
}

/// The sub-problem a middle-snake search works on: `a[a0..a1]` against `b[b0..b1]`, of
/// lengths `n` and `m`.
struct Grid {
    a0: usize,
    a1: usize,
    b0: usize,
    b1: usize,
    n: isize,
    m: isize,
}

impl Grid {
    /// Whether diagonal `k` at `x` lies inside the grid.
    fn on_grid(&self, x: isize, k: isize) -> bool {
        x >= 0 && x <= self.n && x - k >= 0 && x - k <= self.m
    }
}

/// How many diagonals at each end one path no longer walks (they ran off the grid).
#[derive(Default)]
struct Trim {
    start: isize,
    end: isize,
}

struct Myers<'s, 'b, X> {
    a: &'s [X],
    b: &'s [X],
    vf: V,
    vb: V,
    out: Vec<Match>,
    budget: &'b mut u64,
}

impl<X: PartialEq> Myers<'_, '_, X> {
    fn conquer(&mut self, mut a0: usize, mut a1: usize, mut b0: usize, mut b1: usize) {
        let prefix = common_prefix(&self.a[a0..a1], &self.b[b0..b1]);
        if prefix > 0 {
            self.out.push(Match {
                a: a0,
                b: b0,
                len: prefix,
            });
        }
        a0 += prefix;
        b0 += prefix;
        let suffix = common_suffix(&self.a[a0..a1], &self.b[b0..b1]);
        a1 -= suffix;
        b1 -= suffix;
        if a0 < a1
            && b0 < b1
            && let Some((x, y)) = self.middle_snake(a0, a1, b0, b1)
        {
            self.conquer(a0, x, b0, y);
            self.conquer(x, a1, y, b1);
        }
        if suffix > 0 {
            self.out.push(Match {
                a: a1,
                b: b1,
                len: suffix,
            });
        }
    }

    /// A point (x, y) on an optimal edit path of `a[a0..a1]` → `b[b0..b1]`, strictly inside
    /// (neither corner, so both halves are smaller); `None` when the budget ran out. Both
    /// ranges are non-empty.
    fn middle_snake(
        &mut self,
        a0: usize,
        a1: usize,
        b0: usize,
        b1: usize,
    ) -> Option<(usize, usize)> {
        let (n, m) = ((a1 - a0) as isize, (b1 - b0) as isize);
        let grid = Grid {
            a0,
            a1,
            b0,
            b1,
            n,
            m,
        };
        let max_d = (n + m + 1) / 2;
        self.vf.reset(max_d + 1);
        self.vb.reset(max_d + 1);
        self.vf.set(1, 0);
        self.vb.set(1, 0);
        // Diagonals that ran off the grid are not walked again.
        let (mut forward, mut backward) = (Trim::default(), Trim::default());
        for d in 0..max_d {
            let cost = 2 * (d as u64 + 1);
            if *self.budget < cost {
                *self.budget = 0;
                return None;
            }
            *self.budget -= cost;
            if let ControlFlow::Break(split) = self.step::<true>(&grid, d, &mut forward) {
                return split;
            }
            if let ControlFlow::Break(split) = self.step::<false>(&grid, d, &mut backward) {
                return split;
            }
        }
        None
    }

    /// Step `d` of one path: the forward one (`FORWARD`) from the top-left corner, or the
    /// backward one from the bottom-right corner, whose x and y count from the ends. With an
    /// odd `n - m` the paths meet during a forward step, else during a backward one.
    fn step<const FORWARD: bool>(
        &mut self,
        g: &Grid,
        d: isize,
        trim: &mut Trim,
    ) -> ControlFlow<Option<(usize, usize)>> {
        let delta = g.n - g.m;
        let mut k = -d + trim.start;
        while k <= d - trim.end {
            let (mine, other) = if FORWARD {
                (&mut self.vf, &self.vb)
            } else {
                (&mut self.vb, &self.vf)
            };
            let mut x = mine.next_x(k, d);
            let mut y = x - k;
            if x < g.n && y < g.m && y >= 0 {
                let (x0, y0) = (x as usize, y as usize);
                let run = if FORWARD {
                    common_prefix(&self.a[g.a0 + x0..g.a1], &self.b[g.b0 + y0..g.b1])
                } else {
                    common_suffix(&self.a[g.a0..g.a1 - x0], &self.b[g.b0..g.b1 - y0])
                };
                *self.budget = self.budget.saturating_sub(run as u64);
                x += run as isize;
                y += run as isize;
            }
            mine.set(k, x);
            if x > g.n {
                trim.end += 2;
            } else if y > g.m {
                trim.start += 2;
            } else if (delta & 1 == 1) == FORWARD {
                let k_other = delta - k;
                let x_other = other.get(k_other);
                // The forward path's end on its diagonal, and the backward path's reach.
                let (xf, kf, xb) = if FORWARD {
                    (x, k, x_other)
                } else {
                    (x_other, k_other, x)
                };
                if x_other != -1 && g.on_grid(x_other, k_other) && xf >= g.n - xb {
                    return ControlFlow::Break(self.split(xf, xf - kf, g));
                }
            }
            k += 2;
        }
        ControlFlow::Continue(())
    }

    /// The split point in absolute indexes, refusing a corner (which would not divide the
    /// problem; it does not happen on trimmed input, and refusing keeps recursion finite).
    fn split(&self, x: isize, y: isize, g: &Grid) -> Option<(usize, usize)> {
        let corner = (x == 0 && y == 0) || (x == g.n && y == g.m);
        (!corner && (0..=g.n).contains(&x) && (0..=g.m).contains(&y))
            .then(|| (g.a0 + x as usize, g.b0 + y as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LCS length by dynamic programming (reference).
    fn lcs_len(a: &[u8], b: &[u8]) -> usize {
        let mut row = vec![0usize; b.len() + 1];
        for x in a {
            let mut diag = 0;
            for (j, y) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
                diag = up;
            }
        }
        row[b.len()]
    }

    #[test]
    fn myers_is_exact_and_optimal() {
        // A small deterministic generator (xorshift) over a 3-letter alphabet: many matches and
        // many ties, where a wrong middle snake shows.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let (la, lb) = ((next() % 24) as usize, (next() % 24) as usize);
            let a: Vec<u8> = (0..la).map(|_| b'a' + (next() % 3) as u8).collect();
            let b: Vec<u8> = (0..lb).map(|_| b'a' + (next() % 3) as u8).collect();
            let mut budget = u64::MAX;
            let ms = myers(&a, &b, &mut budget);
            let mut total = 0;
            let (mut ia, mut ib) = (0, 0);
            for m in &ms {
                assert!(m.a >= ia && m.b >= ib, "round {round}: runs out of order");
                assert_eq!(a[m.a..m.a + m.len], b[m.b..m.b + m.len], "round {round}");
                ia = m.a + m.len;
                ib = m.b + m.len;
                total += m.len;
            }
            assert_eq!(total, lcs_len(&a, &b), "round {round}: {a:?} {b:?}");
        }
    }

    #[test]
    fn myers_budget_degrades_to_a_valid_coarse_diff() {
        let a: Vec<u32> = (0..2000).map(|i| i % 7).collect();
        let b: Vec<u32> = (0..2000).map(|i| (i * 3) % 11).collect();
        let mut budget = 1_000;
        let ms = myers(&a, &b, &mut budget);
        for m in &ms {
            assert_eq!(a[m.a..m.a + m.len], b[m.b..m.b + m.len]);
        }
    }
}
