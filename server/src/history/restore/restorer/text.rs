//! Editing a text (`Y.Text`, `Y.XmlText`) into the target's: a diff of the two tokenized texts,
//! applied as one delta of deletes, inserts with the target's formatting, and re-formatting of
//! kept ranges whose attributes differ.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use yrs::types::text::YChange;
use yrs::types::{Attrs, Delta};
use yrs::{Any, In, OffsetKind, Out, ReadTxn, Text, TransactionMut};

use super::Restorer;
use crate::history::restore::fingerprint::hash_attrs;
use crate::history::restore::seq_diff::{Match, diff_text, gaps_and_runs};

/// First token value used for embeds in a tokenized text (above every Unicode scalar value).
const EMBED_BASE: u32 = 0x11_0000;

/// A tokenized text: one token per character (its scalar value) or embed (`EMBED_BASE` + an
/// interned id), with the interned attribute set of each.
struct Atoms {
    tokens: Vec<u32>,
    attrs: Vec<u32>,
    /// Embedded values by atom index (kept only for the target, whose embeds get inserted).
    embeds: HashMap<usize, Out>,
}

impl<T: ReadTxn> Restorer<'_, T> {
    /// Edits text `cur` (live document) into `tgt` (target) with one delta.
    pub(super) fn sync_text<C: Text, G: Text>(
        &mut self,
        txn: &mut TransactionMut,
        cur: &C,
        tgt: &G,
    ) {
        let a = self.atoms(&*txn, cur, false);
        let b = self.atoms(self.target, tgt, true);
        let matches = diff_text(&a.tokens, &b.tokens, &mut self.budget);
        let delta = self.text_delta(&a, &b, &matches);
        if !delta.is_empty() {
            cur.apply_delta(txn, delta);
        }
    }

    /// Tokenizes a text (see [`Atoms`]).
    fn atoms<R: ReadTxn, X: Text>(&mut self, txn: &R, text: &X, keep_embeds: bool) -> Atoms {
        let mut atoms = Atoms {
            tokens: Vec::new(),
            attrs: Vec::new(),
            embeds: HashMap::new(),
        };
        for chunk in text.diff(txn, YChange::identity) {
            let attr = self.attr_id(chunk.attributes.as_deref());
            match chunk.insert {
                Out::Any(Any::String(s)) => {
                    atoms.tokens.extend(s.chars().map(u32::from));
                    atoms.attrs.resize(atoms.tokens.len(), attr);
                }
                embed => {
                    let fp = self.fingerprint(txn, &embed);
                    let next = self.embed_ids.len() as u32;
                    let id = *self.embed_ids.entry(fp).or_insert(next);
                    if keep_embeds {
                        atoms.embeds.insert(atoms.tokens.len(), embed);
                    }
                    atoms.tokens.push(EMBED_BASE + id);
                    atoms.attrs.push(attr);
                }
            }
        }
        atoms
    }

    /// The id of an attribute set, interned by content.
    fn attr_id(&mut self, attrs: Option<&Attrs>) -> u32 {
        let Some(attrs) = attrs.filter(|a| !a.is_empty()) else {
            return 0;
        };
        let mut h = self.seeds.build_hasher();
        hash_attrs(attrs, &mut h);
        let fp = h.finish();
        let next = self.attr_sets.len() as u32;
        let id = *self.attr_ids.entry(fp).or_insert(next);
        if id == next {
            self.attr_sets.push(attrs.clone());
        }
        id
    }

    /// Length of a token in the live document's offset units.
    fn units(&self, tokens: &[u32]) -> u32 {
        tokens
            .iter()
            .map(|&t| match char::from_u32(t) {
                Some(c) => match self.offsets {
                    OffsetKind::Bytes => c.len_utf8() as u32,
                    OffsetKind::Utf16 => c.len_utf16() as u32,
                },
                // Embeds (and any other non-character item) count one.
                None => 1,
            })
            .sum()
    }

    /// The delta turning text `a` into `b` given their common runs.
    fn text_delta(&self, a: &Atoms, b: &Atoms, matches: &[Match]) -> Vec<Delta<In>> {
        let mut delta: Vec<Delta<In>> = Vec::new();
        for (ga, gb, m) in gaps_and_runs(matches, a.tokens.len(), b.tokens.len()) {
            if !ga.is_empty() {
                delta.push(Delta::Deleted(self.units(&a.tokens[ga])));
            }
            if !gb.is_empty() {
                self.push_inserts(&mut delta, b, gb.start, gb.end);
            }
            // Kept run: retain, re-formatting the parts whose attributes differ.
            let mut k = 0;
            while k < m.len {
                let (old, new) = (a.attrs[m.a + k], b.attrs[m.b + k]);
                let start = k;
                while k < m.len && a.attrs[m.a + k] == old && b.attrs[m.b + k] == new {
                    k += 1;
                }
                let units = self.units(&a.tokens[m.a + start..m.a + k]);
                if old == new {
                    push_retain(&mut delta, units);
                } else {
                    let change =
                        format_change(&self.attr_sets[old as usize], &self.attr_sets[new as usize]);
                    delta.push(Delta::Retain(units, Some(Box::new(change))));
                }
            }
        }
        while matches!(delta.last(), Some(Delta::Retain(_, None))) {
            delta.pop();
        }
        delta
    }

    /// Appends inserts of target atoms `from..to`, one per run of equal attributes (and one per
    /// embed).
    fn push_inserts(&self, delta: &mut Vec<Delta<In>>, b: &Atoms, from: usize, to: usize) {
        let attrs_of = |id: u32| -> Option<Box<Attrs>> {
            // No attributes means "plain": yrs unsets whatever formatting surrounds the insert.
            let attrs = &self.attr_sets[id as usize];
            (!attrs.is_empty()).then(|| Box::new(attrs.clone()))
        };
        let mut run = String::new();
        let mut run_attr = 0;
        for i in from..to {
            let (token, attr) = (b.tokens[i], b.attrs[i]);
            match char::from_u32(token) {
                Some(c) => {
                    if !run.is_empty() && attr != run_attr {
                        let s = std::mem::take(&mut run);
                        delta.push(Delta::Inserted(In::Any(Any::from(s)), attrs_of(run_attr)));
                    }
                    run_attr = attr;
                    run.push(c);
                }
                None => {
                    if !run.is_empty() {
                        let s = std::mem::take(&mut run);
                        delta.push(Delta::Inserted(In::Any(Any::from(s)), attrs_of(run_attr)));
                    }
                    if let Some(embed) = b.embeds.get(&i) {
                        let value = self.copy_whole(embed);
                        delta.push(Delta::Inserted(value, attrs_of(attr)));
                    }
                }
            }
        }
        if !run.is_empty() {
            delta.push(Delta::Inserted(In::Any(Any::from(run)), attrs_of(run_attr)));
        }
    }
}

/// Appends a plain retain, merging with a preceding one.
fn push_retain(delta: &mut Vec<Delta<In>>, units: u32) {
    if let Some(Delta::Retain(n, None)) = delta.last_mut() {
        *n += units;
    } else {
        delta.push(Delta::Retain(units, None));
    }
}

/// The formatting to apply to a kept range to go from attributes `old` to `new`: changed or
/// added keys with their new value, removed keys with null.
fn format_change(old: &Attrs, new: &Attrs) -> Attrs {
    let mut change = Attrs::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            change.insert(k.clone(), v.clone());
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            change.insert(k.clone(), Any::Null);
        }
    }
    change
}
