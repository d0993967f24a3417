//! The Hocuspocus envelope (`@hocuspocus/provider` 4.x), written once for the server and its
//! tests: every frame is `[varString document][varUint type][body]`, where the body of the sync,
//! awareness and query-awareness types is the y-websocket message of the same type minus its
//! type byte. Two frames have no envelope: a bare `[9]` (ping) and `[10]` (pong).

use crate::{ReadError, Reader, put_var_bytes, put_var_uint};

/// Sync (as y-websocket's type 0).
pub const SYNC: u64 = 0;
/// Awareness (as y-websocket's type 1).
pub const AWARENESS: u64 = 1;
/// Authentication: `[0][token][version]` from the client, `[1][reason]` (denied) or
/// `[2][scope]` (authenticated) from the server.
pub const AUTH: u64 = 2;
/// Asks for every awareness state (as y-websocket's type 3).
pub const QUERY_AWARENESS: u64 = 3;
/// Sync, from a Hocuspocus server to another: accepted like [`SYNC`].
pub const SYNC_REPLY: u64 = 4;
/// An application string, routed by the application.
pub const STATELESS: u64 = 5;
/// Client: "detach this document"; server: "this document is closed" with a reason.
pub const CLOSE: u64 = 7;
/// Server: the update the client sent was applied (`1`) or refused (`0`).
pub const SYNC_STATUS: u64 = 8;
/// A bare one-byte frame: ping.
pub const PING: u8 = 9;
/// A bare one-byte frame: pong (the provider answers a [`PING`] with it).
pub const PONG: u8 = 10;

/// Auth sub-type: a token, from the client.
pub const AUTH_TOKEN: u64 = 0;
/// Auth sub-type: permission denied with a reason, from the server.
pub const AUTH_DENIED: u64 = 1;
/// Auth sub-type: authenticated with a scope, from the server.
pub const AUTH_OK: u64 = 2;

/// The scope the server reports for a writer.
pub const SCOPE_READ_WRITE: &str = "read-write";
/// The scope the server reports for a reader.
pub const SCOPE_READONLY: &str = "readonly";

/// Why an envelope could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A varint or length ran past the end, or a varint was too long.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The document name is not UTF-8.
    #[error("document name is not UTF-8")]
    NotUtf8,
}

/// One frame's envelope: the routing key, the message type, and where the body starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The routing key: the document name, or `name\0session` from a provider with
    /// `sessionAwareness`.
    pub key: &'a str,
    /// The message type.
    pub kind: u64,
    /// Offset of the type's first byte in the frame.
    pub type_at: usize,
    /// The bytes after the type.
    pub body: &'a [u8],
}

/// Reads a frame's envelope (everything but the bare ping and pong).
pub fn envelope(frame: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let mut r = Reader::new(frame);
    let key = std::str::from_utf8(r.var_bytes()?).map_err(|_| EnvelopeError::NotUtf8)?;
    let type_at = r.pos();
    let kind = r.var_uint()?;
    let body = &frame[r.pos()..];
    Ok(Envelope {
        key,
        kind,
        type_at,
        body,
    })
}

/// The document name in a routing key (`name\0session` → `name`).
pub fn document_of(key: &str) -> &str {
    key.split_once('\0').map_or(key, |(name, _)| name)
}

/// The routing-key prefix every frame for `key` starts with.
pub fn prefix(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    put_var_bytes(&mut out, key.as_bytes());
    out
}

/// `[key][type][body]`: a frame around a body that is already encoded.
pub fn frame(key: &str, kind: u64, body: &[u8]) -> Vec<u8> {
    let mut out = prefix(key);
    put_var_uint(&mut out, kind);
    out.extend_from_slice(body);
    out
}

/// `[key][payload]`: a y-websocket message (type byte included) for document `key`.
pub fn wrap(key: &str, message: &[u8]) -> Vec<u8> {
    let mut out = prefix(key);
    out.extend_from_slice(message);
    out
}

/// `[key][2][0][token][version]`: the provider's authentication message.
pub fn auth_token(key: &str, token: &str, version: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_var_uint(&mut body, AUTH_TOKEN);
    put_var_bytes(&mut body, token.as_bytes());
    put_var_bytes(&mut body, version.as_bytes());
    frame(key, AUTH, &body)
}

/// `[key][2][2][scope]`: authenticated.
pub fn authenticated(key: &str, scope: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_var_uint(&mut body, AUTH_OK);
    put_var_bytes(&mut body, scope.as_bytes());
    frame(key, AUTH, &body)
}

/// `[key][2][1][reason]`: permission denied.
pub fn permission_denied(key: &str, reason: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_var_uint(&mut body, AUTH_DENIED);
    put_var_bytes(&mut body, reason.as_bytes());
    frame(key, AUTH, &body)
}

/// `[key][7][reason]` from the server: the document is closed (the provider reads only a
/// reason string).
pub fn closed(key: &str, reason: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_var_bytes(&mut body, reason.as_bytes());
    frame(key, CLOSE, &body)
}

/// `[key][7]` from the client: detach.
pub fn detach(key: &str) -> Vec<u8> {
    frame(key, CLOSE, &[])
}

/// `[8][applied]`, without the routing key: a sync-status body (the server's room adds the key
/// when it queues it).
pub fn sync_status(applied: bool) -> Vec<u8> {
    vec![SYNC_STATUS as u8, u8::from(applied)]
}

/// `[key][5][payload]`: a stateless message.
pub fn stateless(key: &str, payload: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_var_bytes(&mut body, payload.as_bytes());
    frame(key, STATELESS, &body)
}

/// Reads an auth body's token (`[0][token]...`); `None` when it is not a token message.
pub fn read_token(body: &[u8]) -> Result<Option<&str>, EnvelopeError> {
    let mut r = Reader::new(body);
    if r.var_uint()? != AUTH_TOKEN {
        return Ok(None);
    }
    let token = std::str::from_utf8(r.var_bytes()?).map_err(|_| EnvelopeError::NotUtf8)?;
    Ok(Some(token))
}

/// Reads an auth reply: `Ok(scope)` or `Err(reason)`; `None` if it is neither.
pub fn read_auth_reply(body: &[u8]) -> Option<Result<String, String>> {
    let mut r = Reader::new(body);
    let sub = r.var_uint().ok()?;
    let text = String::from_utf8(r.var_bytes().ok()?.to_vec()).ok()?;
    match sub {
        AUTH_OK => Some(Ok(text)),
        AUTH_DENIED => Some(Err(text)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let f = auth_token("doc", "tok", "4.8.0");
        let e = envelope(&f).expect("envelope");
        assert_eq!((e.key, e.kind, e.type_at), ("doc", AUTH, 4));
        assert_eq!(read_token(e.body), Ok(Some("tok")));
        let f = wrap("a\0s1", &crate::update(&[1, 2]));
        let e = envelope(&f).expect("envelope");
        assert_eq!(document_of(e.key), "a");
        assert_eq!(e.kind, SYNC);
        assert_eq!(e.body, [2, 2, 1, 2]);
    }

    #[test]
    fn layouts() {
        assert_eq!(authenticated("d", "readonly")[..4], [1, b'd', 2, 2]);
        assert_eq!(closed("d", "x"), [1, b'd', 7, 1, b'x']);
        assert_eq!(sync_status(true), [8, 1]);
        let denied = permission_denied("d", "no");
        let e = envelope(&denied).expect("envelope");
        assert_eq!(read_auth_reply(e.body), Some(Err("no".into())));
    }

    #[test]
    fn broken_envelopes_are_errors() {
        assert!(envelope(&[5, b'a']).is_err());
        assert!(envelope(&[1, 0xff, 0]).is_err());
        assert!(envelope(&[1, b'a']).is_err());
        assert!(envelope(&[]).is_err());
    }
}
