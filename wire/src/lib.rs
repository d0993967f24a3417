//! The y-websocket wire format, written once for the server, its tests and the load generator:
//! lib0 varints, a strict [`Reader`] that reports where input broke, and the builders of every
//! message (plus deliberately broken ones in [`raw`], for hostile-input tests).
//!
//! A y-websocket message is `[varUint type][type-specific body]`; sync messages are
//! `[0][varUint sub-type][varUint8Array payload]`, awareness messages `[1][varUint8Array
//! (count, then per entry: client id, clock, JSON state as a varString)]`. A WebSocket frame may
//! carry several messages back to back. [`decode`] is the server's strict decoder (yrs decodes the
//! updates it carries, after the [`update_check`] walk); nothing here knows about sockets.

pub mod decode;
pub mod hocuspocus;
pub mod raw;
pub mod update_check;

/// Top-level message type: document sync.
pub const MSG_SYNC: u64 = 0;
/// Top-level message type: awareness (presence) update.
pub const MSG_AWARENESS: u64 = 1;
/// Top-level message type: auth (server → client only).
pub const MSG_AUTH: u64 = 2;
/// Top-level message type: request for all awareness states.
pub const MSG_QUERY_AWARENESS: u64 = 3;

/// Sync sub-type: SyncStep1 (a state vector).
pub const SYNC_STEP1: u64 = 0;
/// Sync sub-type: SyncStep2 (the update answering a state vector).
pub const SYNC_STEP2: u64 = 1;
/// Sync sub-type: an incremental update.
pub const SYNC_UPDATE: u64 = 2;

/// Auth sub-type: permission denied (followed by a reason string).
pub const AUTH_PERMISSION_DENIED: u64 = 0;

/// SyncStep1 carrying an empty state vector (`varUint8Array([0])`).
pub const STEP1_EMPTY: [u8; 4] = [MSG_SYNC as u8, SYNC_STEP1 as u8, 1, 0];
/// SyncStep2 carrying an empty update (no structs, empty delete set).
pub const STEP2_EMPTY: [u8; 5] = [MSG_SYNC as u8, SYNC_STEP2 as u8, 2, 0, 0];

/// Why a [`Reader`] could not read a value; the offset is where the value started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The input ended inside a value (varint or length-prefixed bytes).
    #[error("truncated message at byte {0}")]
    Truncated(usize),
    /// A varint longer than 64 bits.
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
}

/// A cursor over a lib0-encoded buffer that reports where it failed. Strict: a truncated value
/// is an error, never "the end of the input".
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Where the next read starts.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// One raw byte.
    pub fn u8(&mut self) -> Result<u8, ReadError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(ReadError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(byte)
    }

    /// Skips `n` raw bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Truncated(self.pos));
        }
        self.pos += n;
        Ok(())
    }

    /// lib0 varUint: 7 bits per byte, low group first, high bit = more follows.
    pub fn var_uint(&mut self) -> Result<u64, ReadError> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ReadError::Truncated(start));
            };
            self.pos += 1;
            if shift >= 64 || (shift == 63 && byte & 0x7f > 1) {
                return Err(ReadError::BadVarint(start));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// lib0 varUint8Array: varUint length, then that many bytes.
    pub fn var_bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let start = self.pos;
        let len = self.var_uint()?;
        let remaining = self.remaining();
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= remaining)
            .ok_or(ReadError::Truncated(start))?;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }
}

/// Appends `value` as a lib0 varUint.
pub fn put_var_uint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes `value` takes as a lib0 varUint.
pub fn var_uint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Appends `bytes` as a lib0 varUint8Array (varUint length, then the bytes).
pub fn put_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `[0][sub][varUint8Array(payload)]`: a sync message.
pub fn sync_message(sub: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + var_uint_len(payload.len() as u64) + payload.len());
    put_var_uint(&mut out, MSG_SYNC);
    put_var_uint(&mut out, sub);
    put_var_bytes(&mut out, payload);
    out
}

/// `[0][0][state vector]`: SyncStep1 around an encoded state vector.
pub fn sync_step1(state_vector: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP1, state_vector)
}

/// `[0][1][update]`: SyncStep2 around an encoded update.
pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP2, update)
}

/// `[0][2][update]`: an incremental update.
pub fn update(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_UPDATE, update)
}

/// `[1][varUint8Array(n × (id, clock, json))]`: presence states, `None` (the JSON `null`)
/// announcing that a client left.
pub fn awareness<'a>(
    entries: impl ExactSizeIterator<Item = (u64, u32, Option<&'a str>)>,
) -> Vec<u8> {
    let mut inner = Vec::new();
    put_var_uint(&mut inner, entries.len() as u64);
    for (client_id, clock, state) in entries {
        put_var_uint(&mut inner, client_id);
        put_var_uint(&mut inner, u64::from(clock));
        put_var_bytes(&mut inner, state.unwrap_or("null").as_bytes());
    }
    let mut out = Vec::with_capacity(1 + var_uint_len(inner.len() as u64) + inner.len());
    put_var_uint(&mut out, MSG_AWARENESS);
    put_var_bytes(&mut out, &inner);
    out
}

/// `[3]`: asks for every known awareness state.
pub fn query_awareness() -> Vec<u8> {
    vec![MSG_QUERY_AWARENESS as u8]
}

/// `[2][0][reason]`: permission denied, as the y-websocket client understands it.
pub fn permission_denied(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + reason.len());
    put_var_uint(&mut out, MSG_AUTH);
    put_var_uint(&mut out, AUTH_PERMISSION_DENIED);
    put_var_bytes(&mut out, reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, 1 << 53, u64::MAX] {
            let mut buf = Vec::new();
            put_var_uint(&mut buf, v);
            assert_eq!(buf.len(), var_uint_len(v));
            assert_eq!(Reader::new(&buf).var_uint(), Ok(v));
        }
    }

    #[test]
    fn overlong_and_truncated_varints_are_errors() {
        assert_eq!(
            Reader::new(&raw::overlong_varint()).var_uint(),
            Err(ReadError::BadVarint(0))
        );
        // 2^64 exactly: ten bytes, the last carrying a bit past 64.
        let mut past = vec![0x80u8; 9];
        past.push(0x02);
        assert_eq!(Reader::new(&past).var_uint(), Err(ReadError::BadVarint(0)));
        assert_eq!(
            Reader::new(&[0x80, 0x80]).var_uint(),
            Err(ReadError::Truncated(0))
        );
        assert_eq!(
            Reader::new(&[5, 1, 2]).var_bytes(),
            Err(ReadError::Truncated(0))
        );
    }

    #[test]
    fn layouts() {
        assert_eq!(permission_denied("no"), [2, 0, 2, b'n', b'o']);
        assert_eq!(sync_step1(&[0]), STEP1_EMPTY);
        assert_eq!(sync_step2(&[0, 0]), STEP2_EMPTY);
        assert_eq!(update(&[9, 9]), [0, 2, 2, 9, 9]);
        assert_eq!(
            awareness([(7, 1, Some("{}")), (8, 2, None)].into_iter()),
            [
                1, 13, 2, 7, 1, 2, b'{', b'}', 8, 2, 4, b'n', b'u', b'l', b'l'
            ]
        );
    }
}
