//! What nodes tell each other through Redis, and its byte layout.
//!
//! Every message starts with a tag byte and the sending node's id (8 bytes, big-endian), so a
//! node recognises (and ignores) its own messages. Updates and awareness, the hot path, are
//! binary: `[tag][node][seq: 8 bytes][Yjs update]` and `[tag][node][y-websocket awareness
//! frame]`, on the document's channel. Control messages (rare) carry JSON after the header,
//! on the cluster's control channel. Decoding never panics: a malformed message is an error
//! the caller counts and drops (a node is trusted, but a Redis shared with others is not).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Identifies a node for the life of its process (random at start).
pub(crate) type NodeId = u64;

const TAG_UPDATE: u8 = 1;
const TAG_AWARENESS: u8 = 2;
const TAG_CONTROL: u8 = 3;
const HEADER: usize = 1 + 8;

/// A message on a document's channel or the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// Log row `seq` of the channel's document, durable in Postgres.
    Update {
        /// Sender.
        node: NodeId,
        /// Its sequence number in the log.
        seq: i64,
        /// The Yjs update (v1).
        update: Bytes,
    },
    /// An awareness change of clients connected to `node` (a whole y-websocket frame).
    Awareness {
        /// Sender.
        node: NodeId,
        /// `[1][awareness update]`.
        frame: Bytes,
    },
    /// Something for every node.
    Control {
        /// Sender.
        node: NodeId,
        /// What.
        control: Control,
    },
}

/// Cluster-wide events and administrative actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Control {
    /// The sender is alive (every heartbeat interval).
    Alive,
    /// The sender is shutting down: its clients' awareness goes now.
    Bye,
    /// Log rows `after + 1 ..= upto` of `doc` became durable (wakes change feeds).
    Durable {
        /// Document.
        doc: String,
        /// Watermark before.
        after: i64,
        /// Watermark now.
        upto: i64,
    },
    /// `doc` was restored (its change `seq` restored `restored_to`).
    Restored {
        /// Document.
        doc: String,
        /// The restore's change.
        seq: i64,
        /// Point restored to.
        restored_to: i64,
        /// Who.
        author: String,
    },
    /// `doc` was deleted: close its connections with 4410, refuse it from now on.
    Deleted {
        /// Document.
        doc: String,
    },
    /// Close `doc`'s connections (of `user` only, if given) with 4000.
    Disconnect {
        /// Document.
        doc: String,
        /// Token subject.
        user: Option<String>,
    },
    /// A token id or a user was revoked at `at_ms` (Unix milliseconds).
    Revoked {
        /// Token id.
        token_id: Option<String>,
        /// User.
        user: Option<String>,
        /// When.
        at_ms: u64,
    },
    /// A revocation was lifted.
    Lifted {
        /// Token id.
        token_id: Option<String>,
        /// User.
        user: Option<String>,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Shorter than its header.
    #[error("message too short")]
    Truncated,
    /// Unknown tag byte.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A control message's JSON is invalid.
    #[error("invalid control message: {0}")]
    Control(String),
}

impl Message {
    /// The bytes published to Redis.
    pub(crate) fn encode(&self) -> Bytes {
        let (tag, node) = match self {
            Message::Update { node, .. } => (TAG_UPDATE, *node),
            Message::Awareness { node, .. } => (TAG_AWARENESS, *node),
            Message::Control { node, .. } => (TAG_CONTROL, *node),
        };
        let mut out = BytesMut::with_capacity(HEADER + 64);
        out.put_u8(tag);
        out.put_u64(node);
        match self {
            Message::Update { seq, update, .. } => {
                out.put_i64(*seq);
                out.extend_from_slice(update);
            }
            Message::Awareness { frame, .. } => out.extend_from_slice(frame),
            Message::Control { control, .. } => {
                // Serialising an enum of strings and integers cannot fail.
                out.extend_from_slice(&serde_json::to_vec(control).unwrap_or_default());
            }
        }
        out.freeze()
    }

    /// Reads a message published by [`Message::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() < HEADER {
            return Err(DecodeError::Truncated);
        }
        let tag = bytes[0];
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[1..HEADER]);
        let node = u64::from_be_bytes(id);
        let body = &bytes[HEADER..];
        match tag {
            TAG_UPDATE => {
                if body.len() < 8 {
                    return Err(DecodeError::Truncated);
                }
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&body[..8]);
                Ok(Message::Update {
                    node,
                    seq: i64::from_be_bytes(seq),
                    update: Bytes::copy_from_slice(&body[8..]),
                })
            }
            TAG_AWARENESS => Ok(Message::Awareness {
                node,
                frame: Bytes::copy_from_slice(body),
            }),
            TAG_CONTROL => serde_json::from_slice(body)
                .map(|control| Message::Control { node, control })
                .map_err(|e| DecodeError::Control(e.to_string())),
            other => Err(DecodeError::UnknownTag(other)),
        }
    }

    /// The node that sent it.
    pub(crate) fn node(&self) -> NodeId {
        match self {
            Message::Update { node, .. }
            | Message::Awareness { node, .. }
            | Message::Control { node, .. } => *node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let cases = vec![
            Message::Update {
                node: 7,
                seq: 42,
                update: Bytes::from_static(&[1, 2, 3]),
            },
            Message::Awareness {
                node: u64::MAX,
                frame: Bytes::from_static(&[1, 0]),
            },
            Message::Control {
                node: 1,
                control: Control::Deleted { doc: "a/b".into() },
            },
            Message::Control {
                node: 1,
                control: Control::Revoked {
                    token_id: None,
                    user: Some("ada".into()),
                    at_ms: 5,
                },
            },
        ];
        for m in cases {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Message::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Message::decode(&[1; 12]), Err(DecodeError::Truncated));
        assert_eq!(Message::decode(&[9; 9]), Err(DecodeError::UnknownTag(9)));
        assert!(matches!(
            Message::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0, b'{']),
            Err(DecodeError::Control(_))
        ));
    }
}
