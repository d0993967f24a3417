//! WebSocket close codes Tandem sends, and why. Documented in README's "Close codes" table;
//! keep the two in step.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is shutting down; reconnect elsewhere or later.
pub const GOING_AWAY: u16 = 1001;
/// Broken WebSocket framing or a malformed y-websocket envelope (truncated, bad varint).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Data we do not accept: text frames, unknown message types.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Well-framed but invalid payload: not a Yjs update, invalid awareness JSON, bad UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: too many messages in one frame, awareness limits, the pending-update
/// limit, writing another connection's client id. y-websocket reconnects and resyncs.
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame or message above the configured size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server hit an internal error handling this document; reconnecting resyncs.
pub const INTERNAL_ERROR: u16 = 1011;
/// A temporary condition (e.g. storage backlog full); retry later.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// An administrator closed the connection (it may reconnect; revoke a token to keep it out).
pub const DISCONNECTED: u16 = 4000;
/// The client did not read its frames fast enough; its queue overflowed. Reconnect and resync.
pub const SLOW_CONSUMER: u16 = 4001;
/// No frame (not even a pong) arrived within the ping timeout.
pub const PING_TIMEOUT: u16 = 4002;
/// The document could not be loaded from storage; nothing was served. Retry later.
pub const LOAD_FAILED: u16 = 4003;
/// The connection's token expired; get a new token and reconnect.
pub const TOKEN_EXPIRED: u16 = 4401;
/// The connection's token (or its user) was revoked.
pub const REVOKED: u16 = 4403;
/// The document was deleted by an administrator. Permanent: the name is refused from now on, so
/// do not reconnect (and do not resend the old content elsewhere under this name).
pub const DOCUMENT_DELETED: u16 = 4410;
/// No message arrived within the handshake timeout after the upgrade.
pub const HANDSHAKE_TIMEOUT: u16 = 4408;
/// No message (pongs aside) arrived within the idle timeout.
pub const IDLE_TIMEOUT: u16 = 4409;
/// Rate abuse: one frame held more messages than the whole `--message-burst`. (A connection
/// merely above its message rate is throttled, not closed.) Final for y-websocket 3.
pub const RATE_LIMITED: u16 = 4429;
