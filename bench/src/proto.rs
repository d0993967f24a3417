//! The parts of the y-websocket / lib0 wire format the load generator needs.
//!
//! Incoming frames are parsed by hand (no allocation); the clock ranges of an update are read
//! straight from its v1 encoding, falling back to `yrs` for content kinds the fast path does not
//! know. Outgoing messages are framed around updates produced by a real `yrs::Doc`.

use yrs::updates::decoder::Decode;

/// Top-level message type of a sync message.
pub const MSG_SYNC: u8 = tandem_wire::MSG_SYNC as u8;
/// Sync sub-type: SyncStep1 (state vector).
pub const SYNC_STEP1: u8 = tandem_wire::SYNC_STEP1 as u8;

pub use tandem_wire::{STEP1_EMPTY, STEP2_EMPTY};

/// A decoded incoming frame, borrowing its payload from the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Server's SyncStep1 with its state vector.
    Step1(&'a [u8]),
    /// SyncStep2: the update the server computed from our state vector.
    Step2(&'a [u8]),
    /// An incremental update relayed by the server.
    Update(&'a [u8]),
    /// Any other message type (awareness, auth, query awareness, ...): its type byte.
    Other(u64),
}

/// Reasons a frame or update could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Input ended in the middle of a value.
    Truncated,
    /// A varUint longer than 64 bits.
    Overflow,
    /// A sync message with an unknown sub-type.
    UnknownSync(u64),
    /// The update could not be decoded even by `yrs`.
    BadUpdate,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Truncated => f.write_str("truncated message"),
            ParseError::Overflow => f.write_str("varUint overflow"),
            ParseError::UnknownSync(t) => write!(f, "unknown sync message type {t}"),
            ParseError::BadUpdate => f.write_str("undecodable update"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<tandem_wire::ReadError> for ParseError {
    fn from(e: tandem_wire::ReadError) -> Self {
        match e {
            tandem_wire::ReadError::Truncated(_) => ParseError::Truncated,
            tandem_wire::ReadError::BadVarint(_) => ParseError::Overflow,
        }
    }
}

/// The shared lib0 cursor, with this module's error type.
struct Reader<'a>(tandem_wire::Reader<'a>);

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader(tandem_wire::Reader::new(buf))
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.0.u8()?)
    }

    fn var_uint(&mut self) -> Result<u64, ParseError> {
        Ok(self.0.var_uint()?)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ParseError> {
        Ok(self.0.var_bytes()?)
    }
}

/// Appends `v` as a lib0 varUint.
pub use tandem_wire::put_var_uint as write_var_uint;

/// Frames `update` as a sync Update message `[0][2][varUint8Array(update)]`.
pub fn frame_update(update: &[u8]) -> Vec<u8> {
    tandem_wire::update(update)
}

/// Top-level message type of an awareness message.
pub const MSG_AWARENESS: u8 = tandem_wire::MSG_AWARENESS as u8;

/// Frames one awareness entry `[1][varUint8Array(1, client, clock, varString(state))]`;
/// `state` is the JSON of the user's state, or `"null"` to announce that it left.
pub fn frame_awareness(client: u64, clock: u32, state: &str) -> Vec<u8> {
    tandem_wire::awareness(std::iter::once((client, clock, Some(state))))
}

/// The entries of an awareness frame (the whole frame, type byte included): for each, the
/// client id and whether its state is present (`false` = the JSON `null`, a removal).
pub fn awareness_entries(frame: &[u8]) -> Result<Vec<(u64, bool)>, ParseError> {
    let mut r = Reader::new(frame);
    if r.var_uint()? != u64::from(MSG_AWARENESS) {
        return Ok(Vec::new());
    }
    let mut body = Reader::new(r.bytes()?);
    let n = body.var_uint()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let client = body.var_uint()?;
        body.var_uint()?;
        let state = body.bytes()?;
        out.push((client, state != b"null"));
    }
    Ok(out)
}

/// Parses the head of one y-websocket frame.
pub fn parse_frame(frame: &[u8]) -> Result<Incoming<'_>, ParseError> {
    let mut r = Reader::new(frame);
    let kind = r.var_uint()?;
    if kind != u64::from(MSG_SYNC) {
        return Ok(Incoming::Other(kind));
    }
    let sub = r.var_uint()?;
    let payload = r.bytes()?;
    match sub {
        0 => Ok(Incoming::Step1(payload)),
        1 => Ok(Incoming::Step2(payload)),
        2 => Ok(Incoming::Update(payload)),
        other => Err(ParseError::UnknownSync(other)),
    }
}

/// The clocks one client contributed to an update: `start..end`.
///
/// `start` is `None` when the range came from the `yrs` fallback, which only reports the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRange {
    /// The yrs client id.
    pub client: u64,
    /// First clock in the update, when known.
    pub start: Option<u32>,
    /// One past the last clock in the update.
    pub end: u32,
}

/// Collects the per-client clock ranges of a v1 update into `out` (cleared first).
///
/// The hand-written parser understands GC, Skip and the item contents a text editor produces;
/// anything else falls back to a full `yrs` decode.
pub fn update_ranges(update: &[u8], out: &mut Vec<ClockRange>) -> Result<(), ParseError> {
    out.clear();
    match fast_ranges(update, out) {
        Ok(()) => Ok(()),
        Err(_) => {
            out.clear();
            let decoded = yrs::Update::decode_v1(update).map_err(|_| ParseError::BadUpdate)?;
            for (client, end) in decoded.state_vector().iter() {
                out.push(ClockRange {
                    client: client.get(),
                    start: None,
                    end: *end,
                });
            }
            Ok(())
        }
    }
}

/// Utf-16 length of a UTF-8 string given as bytes (what Yjs counts for string content).
fn utf16_len(s: &[u8]) -> Result<u64, ParseError> {
    if s.is_ascii() {
        return Ok(s.len() as u64);
    }
    let s = std::str::from_utf8(s).map_err(|_| ParseError::BadUpdate)?;
    Ok(s.chars().map(|c| c.len_utf16() as u64).sum())
}

fn fast_ranges(update: &[u8], out: &mut Vec<ClockRange>) -> Result<(), ParseError> {
    let mut r = Reader::new(update);
    let clients = r.var_uint()?;
    for _ in 0..clients {
        let blocks = r.var_uint()?;
        let client = r.var_uint()?;
        let start = r.var_uint()?;
        let mut len: u64 = 0;
        for _ in 0..blocks {
            let info = r.u8()?;
            let content = info & 0x1f;
            match content {
                0 | 10 => {
                    // GC / Skip
                    len += r.var_uint()?;
                    continue;
                }
                _ => {}
            }
            if info & 0x80 != 0 {
                r.var_uint()?;
                r.var_uint()?;
            }
            if info & 0x40 != 0 {
                r.var_uint()?;
                r.var_uint()?;
            }
            if info & 0xc0 == 0 {
                if r.var_uint()? == 1 {
                    r.bytes()?;
                } else {
                    r.var_uint()?;
                    r.var_uint()?;
                }
                if info & 0x20 != 0 {
                    r.bytes()?;
                }
            }
            len += match content {
                1 => r.var_uint()?, // Deleted
                2 => {
                    // JSON: len strings
                    let n = r.var_uint()?;
                    for _ in 0..n {
                        r.bytes()?;
                    }
                    n
                }
                3 | 5 => {
                    // Binary, Embed
                    r.bytes()?;
                    1
                }
                4 => utf16_len(r.bytes()?)?,
                6 => {
                    // Format: key, value
                    r.bytes()?;
                    r.bytes()?;
                    1
                }
                _ => return Err(ParseError::BadUpdate),
            };
        }
        let end = start + len;
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
            return Err(ParseError::Overflow);
        };
        out.push(ClockRange {
            client,
            start: Some(start),
            end,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, ReadTxn, Text, Transact};

    #[test]
    fn var_uint_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            1 << 20,
            u64::from(u32::MAX),
            1 << 53,
        ] {
            let mut buf = Vec::new();
            write_var_uint(&mut buf, v);
            assert_eq!(Reader::new(&buf).var_uint(), Ok(v));
        }
    }

    #[test]
    fn frames_parse() {
        assert_eq!(parse_frame(&STEP1_EMPTY), Ok(Incoming::Step1(&[0])));
        assert_eq!(parse_frame(&STEP2_EMPTY), Ok(Incoming::Step2(&[0, 0])));
        assert_eq!(parse_frame(&[1, 1, 0]), Ok(Incoming::Other(1)));
        assert_eq!(parse_frame(&[0, 2, 5, 1]), Err(ParseError::Truncated));
        let framed = frame_update(&[9, 9, 9]);
        assert_eq!(parse_frame(&framed), Ok(Incoming::Update(&[9, 9, 9])));
    }

    /// The fast parser must agree with yrs on real updates, merged ones included.
    #[test]
    fn ranges_match_yrs() {
        let a = yrs::Doc::with_client_id(7);
        let b = yrs::Doc::with_client_id(1_000_000);
        let ta = a.get_or_insert_text("text");
        let tb = b.get_or_insert_text("text");
        let mut updates = Vec::new();
        for i in 0..5u32 {
            let mut txn = a.transact_mut();
            ta.insert(&mut txn, i, "x");
            updates.push(txn.encode_update_v1());
        }
        {
            let mut txn = b.transact_mut();
            tb.insert(&mut txn, 0, "héllo😀");
            updates.push(txn.encode_update_v1());
        }
        let mut out = Vec::new();
        update_ranges(&updates[3], &mut out).expect("parse");
        assert_eq!(
            out,
            vec![ClockRange {
                client: 7,
                start: Some(3),
                end: 4
            }]
        );
        let merged = yrs::merge_updates_v1(&updates).expect("merge");
        update_ranges(&merged, &mut out).expect("parse merged");
        out.sort_by_key(|r| r.client);
        let sv = yrs::Update::decode_v1(&merged)
            .expect("decode")
            .state_vector();
        assert_eq!(out.len(), 2);
        for r in &out {
            assert_eq!(
                Some(&r.end),
                sv.iter().find(|(c, _)| c.get() == r.client).map(|x| x.1)
            );
            assert_eq!(r.start, Some(0));
        }
        // A doc that applied everything re-encodes it; the ranges still match.
        let c = yrs::Doc::with_client_id(3);
        {
            let mut txn = c.transact_mut();
            for u in &updates {
                txn.apply_update(yrs::Update::decode_v1(u).expect("decode"))
                    .expect("apply");
            }
        }
        let tc = c.get_or_insert_text("text");
        assert!(tc.get_string(&c.transact()).contains("héllo"));
        let full = c
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        update_ranges(&full, &mut out).expect("parse full");
        out.sort_by_key(|r| r.client);
        assert_eq!(out[0].end, 5);
        assert_eq!(out[1].end, 7); // "héllo😀" = 5 + 2 utf-16 units
    }

    #[test]
    fn awareness_round_trip() {
        let f = frame_awareness(77, 3, r#"{"user":"x"}"#);
        assert_eq!(awareness_entries(&f), Ok(vec![(77, true)]));
        let f = frame_awareness(1 << 40, 4, "null");
        assert_eq!(awareness_entries(&f), Ok(vec![(1 << 40, false)]));
        assert_eq!(awareness_entries(&STEP1_EMPTY), Ok(vec![]));
        assert!(awareness_entries(&[1, 5, 1]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for junk in [&[][..], &[5], &[1, 1, 200, 200, 200], &[0xff; 12]] {
            let _ = update_ranges(junk, &mut out);
        }
    }
}
