//! WebSocket close codes Tandem sends, and why. Documented in README's "Close codes" table;
//! keep the two in step.

/// Normal closure.
pub(crate) const NORMAL: u16 = 1000;
/// The server is shutting down; reconnect elsewhere or later.
pub(crate) const GOING_AWAY: u16 = 1001;
/// Broken WebSocket framing or a malformed y-websocket envelope (truncated, bad varint).
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// Data we do not accept: text frames, unknown message types.
pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
/// Well-framed but invalid payload: not a Yjs update, invalid awareness JSON, bad UTF-8.
pub(crate) const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: too many messages in one frame, awareness limits, the pending-update
/// limit, writing another connection's client id. y-websocket reconnects and resyncs.
pub(crate) const POLICY_VIOLATION: u16 = 1008;
/// A frame or message above the configured size limit.
pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
/// The server hit an internal error handling this document; reconnecting resyncs.
pub(crate) const INTERNAL_ERROR: u16 = 1011;
/// A temporary condition (e.g. storage backlog full); retry later.
pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
/// An administrator closed the connection (it may reconnect; revoke a token to keep it out).
pub(crate) const DISCONNECTED: u16 = 4000;
/// The client did not read its frames fast enough; its queue overflowed. Reconnect and resync.
pub(crate) const SLOW_CONSUMER: u16 = 4001;
/// No frame (not even a pong) arrived within the ping timeout.
pub(crate) const PING_TIMEOUT: u16 = 4002;
/// The document could not be loaded from storage; nothing was served. Retry later.
pub(crate) const LOAD_FAILED: u16 = 4003;
/// The connection's token expired; get a new token and reconnect.
pub(crate) const TOKEN_EXPIRED: u16 = 4401;
/// The connection's token (or its user) was revoked.
pub(crate) const REVOKED: u16 = 4403;
/// The document was deleted by an administrator. Permanent: the name is refused from now on, so
/// do not reconnect (and do not resend the old content elsewhere under this name).
pub(crate) const DOCUMENT_DELETED: u16 = 4410;
/// No message arrived within the handshake timeout after the upgrade.
pub(crate) const HANDSHAKE_TIMEOUT: u16 = 4408;
/// No message (pongs aside) arrived within the idle timeout.
pub(crate) const IDLE_TIMEOUT: u16 = 4409;
/// Rate abuse: one frame held more messages than the whole `--message-burst`. (A connection
/// merely above its message rate is throttled, not closed.) Final for y-websocket 3.
pub(crate) const RATE_LIMITED: u16 = 4429;

/// Why a frame's y-websocket content was refused while decoding (see
/// [`crate::protocol::ProtocolError`]); one [`Close::Malformed`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The frame ended inside a message.
    Truncated,
    /// A varint longer than 64 bits.
    BadVarint,
    /// A message type this server does not speak.
    UnknownMessageType,
    /// A sync sub-type other than step 1, step 2 or update.
    UnknownSyncType,
    /// Not a valid Yjs update or state vector.
    InvalidUpdate,
    /// Bad awareness id, clock, UTF-8 or JSON.
    InvalidAwareness,
    /// A frame with no message.
    Empty,
    /// An update nested deeper than `--max-nesting-depth`.
    NestingTooDeep,
    /// More messages in one frame than `--max-messages-per-frame`.
    TooManyMessages,
}

impl Malformed {
    /// Every kind, for [`Close::ALL`].
    pub const ALL: [Malformed; 9] = [
        Malformed::Truncated,
        Malformed::BadVarint,
        Malformed::UnknownMessageType,
        Malformed::UnknownSyncType,
        Malformed::InvalidUpdate,
        Malformed::InvalidAwareness,
        Malformed::Empty,
        Malformed::NestingTooDeep,
        Malformed::TooManyMessages,
    ];

    /// The metric label (also used for `tandem_updates_refused_total`).
    pub const fn label(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::BadVarint => "bad_varint",
            Malformed::UnknownMessageType => "unknown_message_type",
            Malformed::UnknownSyncType => "unknown_sync_type",
            Malformed::InvalidUpdate => "invalid_update",
            Malformed::InvalidAwareness => "invalid_awareness",
            Malformed::Empty => "empty_frame",
            Malformed::NestingTooDeep => "nesting_too_deep",
            Malformed::TooManyMessages => "too_many_messages",
        }
    }
}

/// Every way Tandem closes a WebSocket connection: the one catalogue of close code, reason text
/// (sent in the close frame, at most 123 bytes) and `tandem_connections_closed_total` label.
/// README's "Close codes" table documents the codes; a test keeps the two in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client closed the socket itself (or a write to it failed).
    ClientClosed,
    /// A WebSocket protocol violation: an invalid close code from the client (tungstenite
    /// answers it with 1002 and hands us 1002), or broken framing.
    WsProtocolError,
    /// The TCP connection failed or ended without a close frame.
    IoError,
    /// A message above `--max-message-size`.
    MessageTooBig,
    /// A frame above the frame size limit.
    FrameTooBig,
    /// A text frame carried invalid UTF-8.
    InvalidUtf8,
    /// Nothing arrived within the ping timeout.
    PingTimeout,
    /// The client sent a text frame.
    TextFrame,
    /// The token's `exp` passed while connected.
    TokenExpired,
    /// No message within the handshake timeout.
    HandshakeTimeout,
    /// No message within the idle timeout.
    IdleTimeout,
    /// One frame held more messages than the whole burst allowance of the message rate (a
    /// rate that is merely exceeded only slows the connection down).
    RateLimited,
    /// The document could not be opened.
    LoadFailed,
    /// The outgoing queue overflowed.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// An administrator deleted the document (permanent: do not reconnect).
    Deleted,
    /// The document failed in a way that needs a reload.
    Internal,
    /// yrs refused an update the decoder let through.
    InvalidUpdate,
    /// The storage backlog is full.
    BacklogFull,
    /// The connection announced more awareness client ids, or more bytes of awareness state,
    /// than one connection may own.
    AwarenessLimit,
    /// The update adds new clocks for a Yjs client id another live connection owns (or one
    /// reserved for its user after it left).
    ForeignClientId,
    /// Too many updates waiting for missing dependencies (`--max-pending-bytes`).
    PendingTooLarge,
    /// An administrator disconnected the connection.
    Disconnected,
    /// The connection's token or user was revoked.
    Revoked,
    /// A frame's y-websocket content could not be decoded.
    Malformed(Malformed),
}

impl Close {
    /// Every close the server can send (for the README check and the metrics' label list).
    pub const ALL: [Close; 33] = {
        let mut all = [Close::ClientClosed; 33];
        let fixed = [
            Close::ClientClosed,
            Close::WsProtocolError,
            Close::IoError,
            Close::MessageTooBig,
            Close::FrameTooBig,
            Close::InvalidUtf8,
            Close::PingTimeout,
            Close::TextFrame,
            Close::TokenExpired,
            Close::HandshakeTimeout,
            Close::IdleTimeout,
            Close::RateLimited,
            Close::LoadFailed,
            Close::SlowConsumer,
            Close::Shutdown,
            Close::Deleted,
            Close::Internal,
            Close::InvalidUpdate,
            Close::BacklogFull,
            Close::AwarenessLimit,
            Close::ForeignClientId,
            Close::PendingTooLarge,
            Close::Disconnected,
            Close::Revoked,
        ];
        let mut i = 0;
        while i < fixed.len() {
            all[i] = fixed[i];
            i += 1;
        }
        let mut j = 0;
        while j < Malformed::ALL.len() {
            all[i + j] = Close::Malformed(Malformed::ALL[j]);
            j += 1;
        }
        all
    };

    /// The WebSocket close code.
    pub const fn code(self) -> u16 {
        match self {
            Close::ClientClosed => NORMAL,
            Close::WsProtocolError | Close::IoError => PROTOCOL_ERROR,
            Close::MessageTooBig | Close::FrameTooBig => MESSAGE_TOO_BIG,
            Close::InvalidUtf8 | Close::InvalidUpdate => INVALID_PAYLOAD,
            Close::PingTimeout => PING_TIMEOUT,
            Close::TextFrame => UNSUPPORTED_DATA,
            Close::TokenExpired => TOKEN_EXPIRED,
            Close::HandshakeTimeout => HANDSHAKE_TIMEOUT,
            Close::IdleTimeout => IDLE_TIMEOUT,
            Close::RateLimited => RATE_LIMITED,
            Close::LoadFailed => LOAD_FAILED,
            Close::SlowConsumer => SLOW_CONSUMER,
            Close::Shutdown => GOING_AWAY,
            Close::Deleted => DOCUMENT_DELETED,
            Close::Internal => INTERNAL_ERROR,
            Close::BacklogFull => TRY_AGAIN_LATER,
            Close::AwarenessLimit | Close::ForeignClientId | Close::PendingTooLarge => {
                POLICY_VIOLATION
            }
            Close::Disconnected => DISCONNECTED,
            Close::Revoked => REVOKED,
            // 1003 for things we do not speak, 1007 for payloads that are well-framed but
            // invalid, 1002 for broken framing, 1008 for the per-frame message limit.
            Close::Malformed(m) => match m {
                Malformed::UnknownMessageType | Malformed::UnknownSyncType => UNSUPPORTED_DATA,
                Malformed::InvalidUpdate
                | Malformed::InvalidAwareness
                | Malformed::NestingTooDeep => INVALID_PAYLOAD,
                Malformed::TooManyMessages => POLICY_VIOLATION,
                Malformed::Truncated | Malformed::BadVarint | Malformed::Empty => PROTOCOL_ERROR,
            },
        }
    }

    /// The reason text sent in the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Close::ClientClosed => "",
            Close::WsProtocolError => "websocket protocol violation",
            Close::IoError => "connection error",
            Close::MessageTooBig => "message too big",
            Close::FrameTooBig => "frame too big",
            Close::InvalidUtf8 => "invalid UTF-8",
            Close::PingTimeout => "ping timeout",
            Close::TextFrame => "text frames are not supported; send binary y-websocket messages",
            Close::TokenExpired => "token expired",
            Close::HandshakeTimeout => "handshake timeout: send SyncStep1",
            Close::IdleTimeout => "idle timeout",
            Close::RateLimited => {
                "rate abuse: more messages in one frame than the message burst allows"
            }
            Close::LoadFailed => "document unavailable, retry later",
            Close::SlowConsumer => "too slow: outgoing queue full, reconnect to resync",
            Close::Shutdown => "server shutting down",
            Close::Deleted => "document deleted",
            Close::Internal => "internal error, reconnect to resync",
            Close::InvalidUpdate => "invalid update",
            Close::BacklogFull => "storage backlog full, retry later",
            Close::AwarenessLimit => {
                "awareness limit: too many client ids or state bytes for one connection"
            }
            Close::ForeignClientId => {
                "update writes a client id owned by another connection; reconnect to resync"
            }
            Close::PendingTooLarge => {
                "too many updates with missing dependencies (--max-pending-bytes); reconnect to resync"
            }
            Close::Disconnected => "disconnected by an administrator",
            Close::Revoked => "token revoked",
            // The label, or for a limit, which option set it.
            Close::Malformed(Malformed::NestingTooDeep) => {
                "update nested too deep (--max-nesting-depth)"
            }
            Close::Malformed(Malformed::TooManyMessages) => {
                "too many messages in one frame (--max-messages-per-frame)"
            }
            Close::Malformed(m) => m.label(),
        }
    }

    /// The label for the `tandem_connections_closed_total` metric.
    pub const fn label(self) -> &'static str {
        match self {
            Close::ClientClosed => "client_closed",
            Close::WsProtocolError => "ws_protocol_error",
            Close::IoError => "io_error",
            Close::MessageTooBig | Close::FrameTooBig => "message_too_big",
            Close::InvalidUtf8 => "invalid_utf8",
            Close::PingTimeout => "ping_timeout",
            Close::TextFrame => "text_frame",
            Close::TokenExpired => "token_expired",
            Close::HandshakeTimeout => "handshake_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::RateLimited => "rate_limited",
            Close::LoadFailed => "load_failed",
            Close::SlowConsumer => "slow_consumer",
            Close::Shutdown => "shutdown",
            Close::Deleted => "document_deleted",
            Close::Internal => "internal_error",
            Close::InvalidUpdate => "invalid_update",
            Close::BacklogFull => "backlog_full",
            Close::AwarenessLimit => "awareness_limit",
            Close::ForeignClientId => "foreign_client_id",
            Close::PendingTooLarge => "pending_too_large",
            Close::Disconnected => "admin_disconnect",
            Close::Revoked => "revoked",
            Close::Malformed(m) => m.label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The codes in README.md's "### Close codes" table.
    fn readme_codes() -> BTreeSet<u16> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("### Close codes")
            .nth(1)
            .expect("README has a \"### Close codes\" section");
        let section = section.split("\n#").next().unwrap_or(section);
        section
            .lines()
            .filter_map(|line| line.strip_prefix('|'))
            .filter_map(|row| row.split('|').next())
            .filter_map(|cell| cell.trim().parse::<u16>().ok())
            .collect()
    }

    #[test]
    fn readme_table_lists_exactly_the_codes_the_catalogue_sends() {
        let documented = readme_codes();
        assert!(documented.len() >= 10, "table not parsed: {documented:?}");
        let sent: BTreeSet<u16> = Close::ALL.iter().map(|c| c.code()).collect();
        let undocumented: Vec<_> = sent.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "sent but not in README: {undocumented:?}"
        );
        let unknown: Vec<_> = documented.difference(&sent).collect();
        assert!(unknown.is_empty(), "in README but never sent: {unknown:?}");
    }

    #[test]
    fn catalogue_lists_every_close_once_with_a_short_reason() {
        let all: BTreeSet<String> = Close::ALL.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(all.len(), Close::ALL.len(), "a close is listed twice");
        for close in Close::ALL {
            assert!(close.reason().len() <= 123, "{close:?}: reason too long");
            assert!(!close.label().is_empty(), "{close:?}: no label");
        }
    }
}
