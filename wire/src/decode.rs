//! Strict decoding of client frames: bytes in, [`Inbound`] messages out, every message checked.
//!
//! The envelope (message type, sync sub-type, length prefixes) is parsed by hand rather than
//! with `yrs::sync::MessageReader`, for three reasons that matter on a server facing untrusted
//! peers:
//! - `MessageReader` treats a truncated message as "end of frame" and silently drops it; we must
//!   reject it.
//! - `yrs::ClientID::new` debug-asserts that ids fit in 53 bits, so decoding a hostile awareness
//!   payload through yrs can panic; we check the range ourselves.
//! - Awareness states are JSON that every JS peer will `JSON.parse`; one invalid state would
//!   break every other client in the room, so it is validated here.
//!
//! Updates and state vectors are still decoded by yrs (they are the CRDT's own format), after
//! the non-recursive walk of [`crate::update_check`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use yrs::StateVector;
use yrs::Update;
use yrs::updates::decoder::Decode;

use crate::{
    MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, ReadError, Reader, SYNC_STEP1, SYNC_STEP2,
    SYNC_UPDATE,
};

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

impl From<ReadError> for ProtocolError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated(at) => ProtocolError::Truncated(at),
            ReadError::BadVarint(at) => ProtocolError::BadVarint(at),
        }
    }
}

/// Limits applied while a frame is decoded (a server sets them from its options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most messages one frame may carry.
    pub max_messages: usize,
    /// Deepest nesting of values inside an update.
    pub max_nesting_depth: usize,
}

impl FrameLimits {
    /// Tandem's defaults (a test in the server keeps them equal to its flags' defaults).
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
