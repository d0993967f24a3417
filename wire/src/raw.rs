//! Builders for messages a well-behaved client never sends, for hostile-input tests and the
//! soak's misbehaving clients: any type and sub-type, truncated, with lying lengths or
//! overlong varints. Each returns the message's bytes as they go into one binary frame.

use crate::{put_var_bytes, put_var_uint};

/// `[kind][sub?][varUint8Array(payload)]`, whatever `kind` and `sub` are.
pub fn message(kind: u64, sub: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    put_var_uint(&mut out, kind);
    if let Some(sub) = sub {
        put_var_uint(&mut out, sub);
    }
    put_var_bytes(&mut out, payload);
    out
}

/// An awareness message from `(client id, clock, state)` entries, the state written as given
/// (so it may be invalid JSON, or `"null"`).
pub fn awareness(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    crate::awareness(
        entries
            .iter()
            .map(|(id, clock, json)| (*id, *clock, Some(*json))),
    )
}

/// `message` cut to its first `len` bytes (a message ending inside a varint or payload).
pub fn truncated(message: &[u8], len: usize) -> Vec<u8> {
    message[..len.min(message.len())].to_vec()
}

/// A varint of eleven continuation bytes: longer than any 64-bit value.
pub fn overlong_varint() -> Vec<u8> {
    vec![0xff; 11]
}

/// A sync message whose length prefix announces `announced` bytes but carries `payload`.
pub fn lying_length(sub: u64, announced: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    put_var_uint(&mut out, crate::MSG_SYNC);
    put_var_uint(&mut out, sub);
    put_var_uint(&mut out, announced);
    out.extend_from_slice(payload);
    out
}

/// `count` messages back to back in one frame.
pub fn repeated(message: &[u8], count: usize) -> Vec<u8> {
    message.repeat(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReadError, Reader};

    #[test]
    fn hostile_builders_break_where_they_say() {
        let m = message(0, Some(2), &[1, 2, 3]);
        assert_eq!(m, [0, 2, 3, 1, 2, 3]);
        let cut = truncated(&m, 4);
        let mut r = Reader::new(&cut);
        r.var_uint().ok();
        r.var_uint().ok();
        assert_eq!(r.var_bytes(), Err(ReadError::Truncated(2)));
        let lie = lying_length(2, 1000, &[1]);
        let mut r = Reader::new(&lie);
        r.skip(2).ok();
        assert_eq!(r.var_bytes(), Err(ReadError::Truncated(2)));
        assert_eq!(repeated(&[3], 4), [3, 3, 3, 3]);
        assert_eq!(awareness(&[(1, 2, "{")]), [1, 5, 1, 1, 2, 1, b'{']);
    }
}
