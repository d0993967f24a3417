//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the stable test that replays
//! their committed corpora (`tests/fuzz_corpus.rs`). Each feeds untrusted bytes through the
//! same steps the server takes, with `catch_unwind` exactly where the server has it: what
//! must never happen is a crash the server could not contain (a stack overflow, an abort, an
//! allocation failure, a hang) or a broken invariant (asserted here).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use crate::pending;
use crate::presence::Presence;
use crate::protocol::{self, FrameLimits, Inbound};
use crate::update_check::check_update_v1;

/// Small limits, so the fuzzer reaches them quickly.
const LIMITS: FrameLimits = FrameLimits {
    max_messages: 8,
    max_nesting_depth: 16,
};
/// Pending bound of the admission targets.
const MAX_PENDING: u64 = 4096;

/// A document with some content by another client, for updates to build on.
fn seeded_doc() -> Doc {
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("t");
    text.push(&mut doc.transact_mut(), "hello world");
    doc
}

/// Whatever the room relays or stores must pass the server's own walk (so JavaScript clients
/// and a later load can decode it) and decode in yrs.
fn assert_relayable(update: &[u8]) {
    if let Err(e) = check_update_v1(update, LIMITS.max_nesting_depth) {
        panic!("the server would relay an update its own walk refuses: {e}");
    }
    if let Err(e) = protocol::decode_stored_update(update) {
        panic!("the server would relay an update yrs cannot decode: {e}");
    }
}

/// `protocol::decode_frame_with`, including the update walk.
pub fn frame_decode(data: &[u8]) {
    if let Ok(msgs) = protocol::decode_frame_with(data, &LIMITS) {
        assert!(!msgs.is_empty() && msgs.len() <= LIMITS.max_messages);
    }
}

/// Decode, walk and apply every update of a frame into a document the way a room does
/// (pending bound included), then encode the state as a snapshot would.
pub fn update_admission(data: &[u8]) {
    let Ok(msgs) = protocol::decode_frame_with(data, &LIMITS) else {
        return;
    };
    let doc = seeded_doc();
    let mut held = pending::Held::default();
    let mut pending_bytes = 0;
    for msg in msgs {
        match msg {
            Inbound::Update(update) => {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    pending::integrate(&doc, &mut held, update, pending_bytes, MAX_PENDING)
                }));
                match outcome {
                    Ok(Ok(integrated)) => {
                        assert!(integrated.pending_bytes <= MAX_PENDING);
                        pending_bytes = integrated.pending_bytes;
                        if let Some(changed) = integrated.changed {
                            assert_relayable(&changed);
                        }
                    }
                    Ok(Err(_)) => {}
                    // The room retires a document whose update made yrs panic.
                    Err(_) => return,
                }
            }
            Inbound::SyncStep1(sv) => {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    doc.transact().encode_state_as_update_v1(&sv)
                }));
            }
            Inbound::Awareness(_) | Inbound::QueryAwareness => {}
        }
    }
    let state = catch_unwind(AssertUnwindSafe(|| {
        let txn = doc.transact();
        (
            txn.encode_state_as_update_v1(&StateVector::default()),
            txn.state_vector().encode_v1(),
        )
    }));
    if let Ok((state, _)) = state {
        assert_relayable(&state);
    }
}

/// Awareness frames into a presence table, as the room applies them from two connections.
pub fn awareness(data: &[u8]) {
    let Ok(msgs) = protocol::decode_frame_with(data, &LIMITS) else {
        return;
    };
    let now = Instant::now();
    let limits = crate::presence::Limits {
        ids_per_conn: 8,
        bytes_per_conn: 64 * 1024,
    };
    let mut presence = Presence::new(Duration::from_secs(30), limits);
    presence.join(0, Some("a"), now);
    presence.join(1, None, now);
    for (i, msg) in msgs.into_iter().enumerate() {
        let conn = (i % 2) as u64;
        match msg {
            Inbound::Awareness(update) => {
                let applied = presence.apply(conn, &update, now);
                let frame = protocol::encode_awareness(
                    applied
                        .changes
                        .iter()
                        .map(|(id, clock, state)| (*id, *clock, state.as_deref())),
                );
                // What the room broadcasts decodes again.
                if protocol::decode_frame(&frame).is_err() {
                    panic!("the server would broadcast an awareness frame it refuses");
                }
            }
            Inbound::QueryAwareness => {
                let _ = presence.live();
            }
            Inbound::SyncStep1(_) | Inbound::Update(_) => {}
        }
    }
    presence.remove_conn(0, now);
    // A later joiner may take back what the first connection held; the rules must not panic.
    presence.join(2, Some("a"), now);
    let _ = presence.may_write(2, &[1, 2, 3], now);
    presence.wrote(2, &[1, 2, 3], now);
    presence.expire(now + Duration::from_secs(60));
}

/// The admin import: the walk, then `mode=merge` (decode and apply like a client's update)
/// and `mode=replace` (rebuild a document from the body and restore the current one to it).
pub fn admin_import(data: &[u8]) {
    if protocol::check_update(data, LIMITS.max_nesting_depth).is_err() {
        return;
    }
    if let Ok(update) = protocol::decode_update(data, LIMITS.max_nesting_depth) {
        let doc = seeded_doc();
        if let Ok(Ok(integrated)) = catch_unwind(AssertUnwindSafe(|| {
            pending::integrate(&doc, &mut pending::Held::default(), update, 0, MAX_PENDING)
        })) && let Some(changed) = integrated.changed
        {
            assert_relayable(&changed);
        }
    }
    if let Ok(target) = crate::history::reconstruct(Some(data), std::iter::empty(), false) {
        let current = seeded_doc();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            crate::history::restore::restore_into(&current, &target)
        }));
    }
}
