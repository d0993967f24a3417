//! The y-websocket wire protocol: bytes in, [`Inbound`] messages out, and the encoders for
//! every frame the server sends.
//!
//! The envelope (message type, sync sub-type, length prefixes) is parsed here by hand rather
//! than with `yrs::sync::MessageReader`, for three reasons that matter on a server facing
//! untrusted peers:
//! - `MessageReader` treats a truncated message as "end of frame" and silently drops it; we must
//!   reject it.
//! - `yrs::ClientID::new` debug-asserts that ids fit in 53 bits, so decoding a hostile awareness
//!   payload through yrs can panic; we check the range ourselves.
//! - Awareness states are JSON that every JS peer will `JSON.parse`; one invalid state would
//!   break every other client in the room, so it is validated here.
//!
//! Updates and state vectors are still decoded by yrs (they are the CRDT's own format).
//! Nothing in this module knows about sockets, rooms or storage.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;

use crate::close::{Close, Malformed};
use yrs::StateVector;
use yrs::Update;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use tandem_wire::{
    MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, ReadError, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};

/// The lib0 cursor, shared with [`crate::update_check`].
pub(crate) use tandem_wire::Reader;

/// Largest client id a JS peer can produce (ids are JS numbers, 53 bits).
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// One decoded message from a client frame.
#[derive(Debug)]
pub enum Inbound {
    /// The client's state vector: it wants everything it lacks (answered with SyncStep2).
    SyncStep1(StateVector),
    /// An update to apply: both SyncStep2 and Update carry one, and are treated alike.
    Update(Update),
    /// Presence changes for one or more client ids, validated but not unpacked.
    Awareness(AwarenessUpdate),
    /// The client asks for every known awareness state.
    QueryAwareness,
}

/// One client's presence entry as carried on the wire, borrowed from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwarenessEntry<'a> {
    /// The Yjs client id (53-bit).
    pub client_id: u64,
    /// Lamport clock of this state; higher wins.
    pub clock: u32,
    /// The JSON state, or `None` for the literal `null` (the client left).
    pub state: Option<&'a str>,
}

/// An awareness message whose every entry was validated (ids, clocks, UTF-8, JSON) but that is
/// kept as its bytes. y-websocket clients echo every awareness change they receive, so an
/// honest client in a big room sends messages listing thousands of other users' entries, which
/// the room ignores; reading entries in place means those cost no allocation beyond the
/// message itself, and only the entries the room accepts are copied.
#[derive(Debug, Clone)]
pub struct AwarenessUpdate {
    payload: Bytes,
    count: usize,
}

impl AwarenessUpdate {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the message lists no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries, in order, borrowed from the message.
    pub fn entries(&self) -> impl Iterator<Item = AwarenessEntry<'_>> + '_ {
        let mut reader = Reader::new(&self.payload);
        // The count was read and every entry validated by `decode_awareness`; these reads
        // cannot fail, and if they somehow did the iteration would just end.
        let _ = reader.var_uint();
        (0..self.count).map_while(move |_| read_awareness_entry(&mut reader).ok())
    }
}
/// Why a frame was rejected; each maps to a WebSocket close code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame ended inside a message (truncated varint or length prefix).
    #[error("truncated message at byte {0}")]
    Truncated(usize),
    /// A varint longer than 64 bits.
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
    /// A message type this server does not speak.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// A sync sub-type other than step 1, step 2 or update.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// The payload is not a valid Yjs update or state vector.
    #[error("invalid Yjs payload: {0}")]
    InvalidUpdate(String),
    /// The awareness payload is malformed (bad id, bad JSON, bad UTF-8).
    #[error("invalid awareness payload: {0}")]
    InvalidAwareness(String),
    /// A frame with no message at all.
    #[error("empty frame")]
    Empty,
    /// An update holding values nested deeper than `--max-nesting-depth` (the payload is the
    /// limit). Such updates crash yrs' recursive decoder or every JavaScript client.
    #[error("update nested deeper than {0} levels")]
    NestingTooDeep(usize),
    /// More messages in one frame than `--max-messages-per-frame` (the payload is the limit).
    #[error("more than {0} messages in one frame")]
    TooManyMessages(usize),
}

impl ProtocolError {
    /// Which kind of refusal this is, as the close catalogue names it.
    pub fn kind(&self) -> Malformed {
        match self {
            ProtocolError::Truncated(_) => Malformed::Truncated,
            ProtocolError::BadVarint(_) => Malformed::BadVarint,
            ProtocolError::UnknownMessageType(_) => Malformed::UnknownMessageType,
            ProtocolError::UnknownSyncType(_) => Malformed::UnknownSyncType,
            ProtocolError::InvalidUpdate(_) => Malformed::InvalidUpdate,
            ProtocolError::InvalidAwareness(_) => Malformed::InvalidAwareness,
            ProtocolError::Empty => Malformed::Empty,
            ProtocolError::NestingTooDeep(_) => Malformed::NestingTooDeep,
            ProtocolError::TooManyMessages(_) => Malformed::TooManyMessages,
        }
    }
}

impl From<&ProtocolError> for Close {
    /// The close a refused frame earns (code, reason and label live in [`crate::close`]).
    fn from(e: &ProtocolError) -> Close {
        Close::Malformed(e.kind())
    }
}

impl From<ReadError> for ProtocolError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated(at) => ProtocolError::Truncated(at),
            ReadError::BadVarint(at) => ProtocolError::BadVarint(at),
        }
    }
}

/// Limits applied while a frame is decoded (from `--max-messages-per-frame` and
/// `--max-nesting-depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most messages one frame may carry.
    pub max_messages: usize,
    /// Deepest nesting of values inside an update.
    pub max_nesting_depth: usize,
}

impl FrameLimits {
    /// The limits a server with `config` applies.
    pub fn from_config(config: &crate::config::Config) -> Self {
        FrameLimits {
            max_messages: config.max_messages_per_frame,
            max_nesting_depth: config.max_nesting_depth,
        }
    }
}

impl FrameLimits {
    /// The binary's defaults (a test in `config` keeps them equal to the flags' defaults).
    pub const DEFAULT: FrameLimits = FrameLimits {
        max_messages: 64,
        max_nesting_depth: 128,
    };
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits::DEFAULT
    }
}

/// [`decode_frame_with`] under the default limits.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Inbound>, ProtocolError> {
    decode_frame_with(frame, &FrameLimits::DEFAULT)
}

/// Decodes every message in one binary frame. A frame may carry several messages back to
/// back (older clients and some providers batch them); all must be valid or none is used.
/// Decoding stops at the first message past `limits.max_messages`, so a frame of millions of
/// one-byte messages costs nothing before it is refused.
pub fn decode_frame_with(
    frame: &[u8],
    limits: &FrameLimits,
) -> Result<Vec<Inbound>, ProtocolError> {
    let mut reader = Reader::new(frame);
    if reader.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let mut out = Vec::with_capacity(1);
    while !reader.is_empty() {
        if out.len() >= limits.max_messages {
            return Err(ProtocolError::TooManyMessages(limits.max_messages));
        }
        out.push(decode_message(&mut reader, limits)?);
    }
    Ok(out)
}

fn decode_message(reader: &mut Reader<'_>, limits: &FrameLimits) -> Result<Inbound, ProtocolError> {
    match reader.var_uint()? {
        MSG_SYNC => match reader.var_uint()? {
            SYNC_STEP1 => {
                let payload = reader.var_bytes()?;
                Ok(Inbound::SyncStep1(decode_state_vector(payload)?))
            }
            SYNC_STEP2 | SYNC_UPDATE => {
                let payload = reader.var_bytes()?;
                Ok(Inbound::Update(decode_update(
                    payload,
                    limits.max_nesting_depth,
                )?))
            }
            other => Err(ProtocolError::UnknownSyncType(other)),
        },
        MSG_AWARENESS => {
            let payload = reader.var_bytes()?;
            Ok(Inbound::Awareness(decode_awareness(payload)?))
        }
        MSG_QUERY_AWARENESS => Ok(Inbound::QueryAwareness),
        other => Err(ProtocolError::UnknownMessageType(other)),
    }
}

/// Decodes a Yjs v1 update from outside (a client or the admin API). The bytes are first
/// walked without recursion ([`crate::update_check`]) and refused if any value nests deeper
/// than `max_depth`; yrs' own recursive decoder never sees them otherwise. Errors and panics
/// inside yrs become an error too: yrs has debug assertions on some decoded values.
pub fn decode_update(payload: &[u8], max_depth: usize) -> Result<Update, ProtocolError> {
    check_update(payload, max_depth)?;
    guarded(|| Update::decode_v1(payload))
}

/// The walk of [`decode_update`] alone, for paths that hand the bytes to yrs another way.
pub fn check_update(payload: &[u8], max_depth: usize) -> Result<(), ProtocolError> {
    use crate::update_check::{CheckError, check_update_v1};
    check_update_v1(payload, max_depth).map_err(|e| match e {
        CheckError::TooDeep { limit } => ProtocolError::NestingTooDeep(limit),
        malformed @ CheckError::Malformed { .. } => {
            ProtocolError::InvalidUpdate(malformed.to_string())
        }
    })
}

/// Decodes an update read back from our own storage. Everything stored passed
/// [`decode_update`] when it arrived (or predates the nesting limit and was decoded then), so
/// it is not walked again: a document stored before a lower limit must stay loadable.
pub fn decode_stored_update(payload: &[u8]) -> Result<Update, ProtocolError> {
    guarded(|| Update::decode_v1(payload))
}

/// Decodes a state vector. Its announced entry count is checked against the payload first
/// (each entry takes at least two bytes), because yrs reserves room for that many entries
/// before reading them.
fn decode_state_vector(payload: &[u8]) -> Result<StateVector, ProtocolError> {
    let mut reader = Reader::new(payload);
    let count = reader.var_uint()?;
    if count > (reader.remaining() / 2) as u64 {
        return Err(ProtocolError::InvalidUpdate(
            "state vector announces more entries than it holds".into(),
        ));
    }
    guarded(|| StateVector::decode_v1(payload))
}

fn guarded<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, ProtocolError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ProtocolError::InvalidUpdate(e.to_string())),
        Err(_) => Err(ProtocolError::InvalidUpdate("undecodable".into())),
    }
}

/// Reads one awareness entry (client id, clock, state) and checks it: id within 53 bits, clock
/// within 32 bits, state UTF-8 and either `null` or valid JSON.
fn read_awareness_entry<'a>(reader: &mut Reader<'a>) -> Result<AwarenessEntry<'a>, ProtocolError> {
    let bad = |what: &str| ProtocolError::InvalidAwareness(what.to_string());
    let client_id = reader.var_uint()?;
    if client_id > MAX_CLIENT_ID {
        return Err(bad("client id above 2^53"));
    }
    let clock = u32::try_from(reader.var_uint()?).map_err(|_| bad("clock above 2^32"))?;
    let json = std::str::from_utf8(reader.var_bytes()?).map_err(|_| bad("state is not UTF-8"))?;
    let state = if json == "null" {
        None
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .map_err(|_| bad("state is not JSON"))?;
        Some(json)
    };
    Ok(AwarenessEntry {
        client_id,
        clock,
        state,
    })
}

/// Validates an awareness payload entry by entry without keeping anything, then keeps the
/// payload as one buffer (see [`AwarenessUpdate`]).
fn decode_awareness(payload: &[u8]) -> Result<AwarenessUpdate, ProtocolError> {
    let mut reader = Reader::new(payload);
    let count = reader.var_uint()?;
    let mut seen: usize = 0;
    for _ in 0..count {
        read_awareness_entry(&mut reader)?;
        seen += 1;
    }
    if !reader.is_empty() {
        return Err(ProtocolError::InvalidAwareness("trailing bytes".into()));
    }
    Ok(AwarenessUpdate {
        payload: Bytes::copy_from_slice(payload),
        count: seen,
    })
}

/// `[0][0][state vector]`: the server's SyncStep1, sent on join.
pub fn encode_sync_step1(sv: &StateVector) -> Bytes {
    Bytes::from(tandem_wire::sync_step1(&sv.encode_v1()))
}

/// `[0][1][update]`: the answer to a client's SyncStep1.
pub fn encode_sync_step2(update: &[u8]) -> Bytes {
    Bytes::from(tandem_wire::sync_step2(update))
}

/// `[0][2][update]`: an update relayed to the room.
pub fn encode_update(update: &[u8]) -> Bytes {
    Bytes::from(tandem_wire::update(update))
}

/// `[1][varUint8Array(n × (id, clock, json))]`: presence states (or removals as `null`).
pub fn encode_awareness<'a>(
    entries: impl ExactSizeIterator<Item = (u64, u32, Option<&'a str>)>,
) -> Bytes {
    Bytes::from(tandem_wire::awareness(entries))
}

/// `[2][0][reason]`: permission denied, as the y-websocket client understands it.
pub fn encode_permission_denied(reason: &str) -> Bytes {
    Bytes::from(tandem_wire::permission_denied(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

    fn text_update(s: &str) -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.push(&mut txn, s);
        txn.encode_update_v1()
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let frame = tandem_wire::raw::overlong_varint();
        assert_eq!(
            decode_frame(&frame).err(),
            Some(ProtocolError::BadVarint(0))
        );
    }

    #[test]
    fn update_frame_round_trips() {
        let update = text_update("hello");
        let frame = encode_update(&update);
        let mut msgs = decode_frame(&frame).expect("valid frame");
        assert_eq!(msgs.len(), 1);
        let Some(Inbound::Update(u)) = msgs.pop() else {
            panic!("expected one update");
        };
        let doc = Doc::new();
        doc.transact_mut().apply_update(u).expect("applies");
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()), "hello");
    }

    #[test]
    fn several_messages_in_one_frame() {
        let mut frame = encode_sync_step1(&StateVector::default()).to_vec();
        frame.extend_from_slice(&encode_awareness([(7, 1, Some("{\"a\":1}"))].into_iter()));
        frame.push(3);
        let msgs = decode_frame(&frame).expect("valid frame");
        assert!(matches!(msgs[0], Inbound::SyncStep1(_)));
        assert_eq!(
            msgs.get(1)
                .map(|m| matches!(m, Inbound::Awareness(e) if e.entries().next().map(|e| e.client_id) == Some(7))),
            Some(true)
        );
        assert!(matches!(msgs[2], Inbound::QueryAwareness));
    }

    #[test]
    fn truncation_is_an_error_not_the_end() {
        let frame = encode_update(&text_update("hello"));
        for cut in 1..frame.len() {
            assert!(
                decode_frame(&frame[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn rejects_unknown_types_and_bad_payloads() {
        assert_eq!(
            decode_frame(&[9]).err(),
            Some(ProtocolError::UnknownMessageType(9))
        );
        assert_eq!(
            decode_frame(&[0, 5, 0]).err(),
            Some(ProtocolError::UnknownSyncType(5))
        );
        assert!(matches!(
            decode_frame(&[0, 2, 3, 0xff, 0xff, 0xff]),
            Err(ProtocolError::InvalidUpdate(_))
        ));
        assert_eq!(decode_frame(&[]).err(), Some(ProtocolError::Empty));
    }

    #[test]
    fn awareness_validation() {
        let ok = encode_awareness([(1, 2, Some("{\"user\":\"x\"}")), (3, 4, None)].into_iter());
        let msgs = decode_frame(&ok).expect("valid");
        let Inbound::Awareness(entries) = &msgs[0] else {
            panic!("expected awareness");
        };
        let entries: Vec<_> = entries.entries().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].state, Some("{\"user\":\"x\"}"));
        assert_eq!(entries[1].state, None);
        let bad_json = encode_awareness([(1, 2, Some("{oops"))].into_iter());
        assert!(matches!(
            decode_frame(&bad_json),
            Err(ProtocolError::InvalidAwareness(_))
        ));
        let big_id = encode_awareness([(1 << 60, 2, Some("{}"))].into_iter());
        assert!(matches!(
            decode_frame(&big_id),
            Err(ProtocolError::InvalidAwareness(_))
        ));
    }

    #[test]
    fn hostile_update_bytes_never_panic() {
        // A cheap deterministic fuzz over random and mutated inputs.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let base = encode_update(&text_update("some text to mutate")).to_vec();
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut frame = if round % 2 == 0 {
                base.clone()
            } else {
                (0..(seed % 64) as usize)
                    .map(|i| (seed >> (i % 8)) as u8)
                    .collect()
            };
            if !frame.is_empty() {
                let at = (seed as usize) % frame.len();
                frame[at] ^= (seed >> 32) as u8;
            }
            let _ = decode_frame(&frame);
        }
    }

    #[test]
    fn messages_per_frame_are_capped_while_decoding() {
        let limits = FrameLimits {
            max_messages: 64,
            max_nesting_depth: 128,
        };
        assert_eq!(
            decode_frame_with(&[3; 64], &limits).map(|m| m.len()),
            Ok(64)
        );
        let err = decode_frame_with(&[3; 65], &limits).err();
        assert_eq!(err, Some(ProtocolError::TooManyMessages(64)));
        assert_eq!(
            err.map(|e| Close::from(&e).code()),
            Some(crate::close::POLICY_VIOLATION)
        );
        // 16 MiB of query-awareness: refused at message 65 (quickly, holding 64).
        let huge = vec![3u8; 16 << 20];
        assert_eq!(
            decode_frame_with(&huge, &limits).err(),
            Some(ProtocolError::TooManyMessages(64))
        );
    }

    #[test]
    fn deep_updates_are_refused_with_1007() {
        // One Any struct under root "a" holding 8,000 nested arrays.
        let mut update = vec![1, 1, 7, 0, 8, 1, 1, b'a', 1];
        for _ in 0..8_000 {
            update.extend_from_slice(&[117, 1]);
        }
        update.extend_from_slice(&[126, 0]);
        let err = decode_frame(&encode_update(&update)).err();
        assert_eq!(err, Some(ProtocolError::NestingTooDeep(128)));
        assert_eq!(
            err.map(|e| Close::from(&e).code()),
            Some(close_code_invalid())
        );
    }

    fn close_code_invalid() -> u16 {
        crate::close::INVALID_PAYLOAD
    }

    #[test]
    fn lying_state_vector_counts_are_refused() {
        // Announces 2^31 entries in a 6-byte payload.
        let frame = [0, 0, 6, 0x80, 0x80, 0x80, 0x80, 0x08, 0];
        assert!(matches!(
            decode_frame(&frame),
            Err(ProtocolError::InvalidUpdate(_))
        ));
    }

    #[test]
    fn permission_denied_layout() {
        assert_eq!(&encode_permission_denied("no")[..], &[2, 0, 2, b'n', b'o']);
    }

    #[test]
    fn sync_step2_from_state() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        text.push(&mut doc.transact_mut(), "abc");
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let frame = encode_sync_step2(&update);
        assert_eq!(frame[0..2], [0, 1]);
        assert!(matches!(
            decode_frame(&frame).expect("valid")[0],
            Inbound::Update(_)
        ));
    }
}
