//! What kind of content each item of an encoded update holds.
//!
//! yrs decodes an update into blocks it keeps private, and its public walk over a text is
//! linear in the text. To count a keystroke in a 100k-character `Y.Text` without walking it,
//! the timeline reads the update's structs itself (through yrs' own public v1 decoder and
//! content decoder, so the reading cannot disagree with yrs') and learns which inserted ids
//! are characters and which are formatting marks or nested types.

use std::ops::Range;

use yrs::block::ItemContent;
use yrs::encoding::read::Read;
use yrs::updates::decoder::{Decoder, DecoderV1};
use yrs::{ClientID, IdSet};

/// Info byte of a skip struct (no content, only a length).
const SKIP: u8 = 10;
/// Info byte of a garbage-collected range.
const GC: u8 = 0;
/// Info bits telling that a struct has a left origin, a right origin or a map key.
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

/// What an item holds, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Characters, embeds or plain values: counted in a text's length.
    Countable,
    /// A nested shared type.
    Type,
    /// Formatting marks, deleted content, garbage-collected or skipped ranges.
    Other,
}

/// One struct of an update: `len` clocks of `client` from `clock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Struct {
    pub client: ClientID,
    pub clock: u32,
    pub len: u32,
    pub kind: Kind,
}

/// The structs of a v1 update, in encoding order. An error means yrs would reject it too.
pub(crate) fn scan(update: &[u8]) -> Result<Vec<Struct>, yrs::encoding::read::Error> {
    let mut decoder = DecoderV1::from(update);
    let clients: u32 = decoder.read_var()?;
    let mut out = Vec::new();
    for _ in 0..clients {
        let structs: u32 = decoder.read_var()?;
        let client = decoder.read_client()?;
        let mut clock: u32 = decoder.read_var()?;
        for _ in 0..structs {
            let info = decoder.read_info()?;
            let (len, kind) = match info {
                SKIP => (decoder.read_var()?, Kind::Other),
                GC => (decoder.read_len()?, Kind::Other),
                info => {
                    let copies_parent = info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) != 0;
                    if info & HAS_ORIGIN != 0 {
                        decoder.read_left_id()?;
                    }
                    if info & HAS_RIGHT_ORIGIN != 0 {
                        decoder.read_right_id()?;
                    }
                    if !copies_parent {
                        if decoder.read_parent_info()? {
                            decoder.read_string()?;
                        } else {
                            decoder.read_left_id()?;
                        }
                        if info & HAS_PARENT_SUB != 0 {
                            decoder.read_string()?;
                        }
                    }
                    let content = ItemContent::decode(&mut decoder, info)?;
                    let kind = match &content {
                        ItemContent::Type(_) => Kind::Type,
                        c if c.is_countable() => Kind::Countable,
                        _ => Kind::Other,
                    };
                    (content.len_utf16(), kind)
                }
            };
            // yrs drops empty structs without advancing the clock; so does this.
            if len > 0 {
                out.push(Struct {
                    client,
                    clock,
                    len,
                    kind,
                });
                clock = clock.saturating_add(len);
            }
        }
    }
    Ok(out)
}

/// Sorted, merged clock ranges of one client in an id set.
pub(crate) fn ranges_of(set: &IdSet, client: &ClientID) -> Vec<Range<u32>> {
    let mut ranges: Vec<Range<u32>> = set
        .iter()
        .filter(|(c, _)| *c == client)
        .flat_map(|(_, r)| r.iter().cloned().collect::<Vec<_>>())
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// How many clocks of `range` the sorted, disjoint `ranges` cover.
pub(crate) fn covered(ranges: &[Range<u32>], range: Range<u32>) -> u32 {
    let first = ranges.partition_point(|r| r.end <= range.start);
    ranges[first..]
        .iter()
        .take_while(|r| r.start < range.end)
        .map(|r| {
            r.end
                .min(range.end)
                .saturating_sub(r.start.max(range.start))
        })
        .sum()
}

/// The intersection of two sorted, disjoint range lists.
pub(crate) fn intersect(a: &[Range<u32>], b: &[Range<u32>]) -> Vec<Range<u32>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].start.max(b[j].start);
        let end = a[i].end.min(b[j].end);
        if start < end {
            out.push(start..end);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::types::Attrs;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

    #[test]
    fn scan_agrees_with_yrs() {
        let doc = Doc::with_options(yrs::Options {
            offset_kind: yrs::OffsetKind::Utf16,
            ..yrs::Options::default()
        });
        let mut updates = Vec::new();
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("t");
            text.insert(&mut txn, 0, "héllo 😀");
            updates.push(txn.encode_update_v1());
        }
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("t");
            text.format(&mut txn, 0, 2, Attrs::from([("bold".into(), true.into())]));
            text.insert_embed(&mut txn, 1, yrs::Any::from(1));
            text.remove_range(&mut txn, 3, 2);
            let map = txn.get_or_insert_map("m");
            map.insert(&mut txn, "k", yrs::MapPrelim::default());
            map.insert(&mut txn, "v", vec![1, 2, 3]);
            updates.push(txn.encode_update_v1());
        }
        updates.push(
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        for bytes in &updates {
            let structs = scan(bytes).unwrap();
            let update = Update::decode_v1(bytes).unwrap();
            // Same ids as yrs reads.
            let mut ours = IdSet::new();
            for s in &structs {
                ours.insert(yrs::ID::new(s.client, s.clock), s.len);
            }
            let theirs = update.insertions(true);
            for (client, _) in theirs.iter() {
                assert_eq!(ranges_of(&ours, client), ranges_of(&theirs, client));
            }
        }
        let second = scan(&updates[1]).unwrap();
        let kinds: Vec<Kind> = second.iter().map(|s| s.kind).collect();
        assert!(kinds.contains(&Kind::Type));
        assert!(kinds.contains(&Kind::Other)); // formatting marks
        assert!(scan(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn range_arithmetic() {
        let r = vec![0..5, 10..20, 30..31];
        assert_eq!(covered(&r, 3..12), 4);
        assert_eq!(covered(&r, 20..30), 0);
        assert_eq!(covered(&r, 0..100), 16);
        assert_eq!(
            intersect(&r, &[4..11, 15..35]),
            vec![4..5, 10..11, 15..20, 30..31]
        );
    }
}
