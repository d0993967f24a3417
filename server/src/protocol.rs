//! The y-websocket wire protocol as the server uses it: the strict decoder of
//! [`tandem_wire::decode`] (re-exported), the encoders of every frame the server sends (as shared
//! `Bytes`), and the link from decoding errors to the close catalogue. Nothing in this module
//! knows about sockets, rooms or storage.

use bytes::Bytes;
use yrs::StateVector;
use yrs::updates::encoder::Encode;

use crate::close::{Close, Malformed};

pub use tandem_wire::decode::{
    AwarenessEntry, AwarenessUpdate, FrameLimits, Inbound, ProtocolError, check_update,
    decode_frame, decode_frame_with, decode_stored_update, decode_update,
};

/// The limits a server with `config` applies (`--max-messages-per-frame`,
/// `--max-nesting-depth`).
pub fn frame_limits(config: &crate::config::Config) -> FrameLimits {
    FrameLimits {
        max_messages: config.max_messages_per_frame,
        max_nesting_depth: config.max_nesting_depth,
    }
}

/// Which kind of refusal a decoding error is, as the close catalogue names it.
pub fn malformed(e: &ProtocolError) -> Malformed {
    match e {
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

impl From<&ProtocolError> for Close {
    /// The close a refused frame earns (code, reason and label live in [`crate::close`]).
    fn from(e: &ProtocolError) -> Close {
        Close::Malformed(malformed(e))
    }
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
