//! Hostile and broken input: each bad frame closes only the socket that sent it, with the
//! documented close code (server/src/close.rs), and counts it under its reason in
//! `tandem_connections_closed_total`. The document and the awareness table are untouched, the
//! well-behaved clients of the same room keep editing, and the server stays up.
//!
//! Every case runs inside one room that already holds content and an awareness state; after
//! each case [`Room::check_unharmed`] proves the room is exactly as it was and still live.

mod common;

use common::{
    Client, MASK, RawWs, TestServer, awareness_frame, client_frame, config, frame, op, put_var,
    text_update, ws_frame, ws_header,
};
use tandem::Config;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Transact, Update};

const ROOM: &str = "bad-input";
const A_STATE: &str = r#"{"user":{"name":"a"}}"#;
const CLOSED: &str = "tandem_connections_closed_total";

/// How an offending connection misbehaves.
enum Offence {
    /// A tungstenite client connects and sends these messages.
    Ws(Vec<Message>),
    /// A raw TCP client upgrades by hand, then writes these bytes verbatim.
    Raw(Vec<u8>),
}

/// A room with content and one awareness state, a writer `a` and a reader `c`.
struct Room {
    server: TestServer,
    url: String,
    a: Client,
    c: Client,
    a_id: u64,
    /// What the text must read: grows by one marker per case, written by `a`.
    text: String,
    /// Updates `c` has received so far.
    c_updates: usize,
}

impl Room {
    async fn open(config: Config) -> Room {
        let server = TestServer::start(config).await;
        let url = server.url(ROOM);
        let mut a = Client::join(&url).await;
        a.insert("text", 0, "hello").await;
        a.pump_until(|c| c.updates_received == 1).await;
        let a_id = a.doc.client_id().get();
        a.set_awareness(a_id, 1, A_STATE).await;
        a.pump_until(|c| c.awareness_state(a_id) == Some(A_STATE))
            .await;
        let c = Client::join(&url).await;
        assert_eq!(c.text("text"), "hello");
        assert_eq!(c.awareness_state(a_id), Some(A_STATE));
        Room {
            server,
            url,
            a,
            c,
            a_id,
            text: "hello".into(),
            c_updates: 0,
        }
    }

    async fn closed(&self, label: &str) -> f64 {
        self.server
            .metric(CLOSED, &format!("reason=\"{label}\""))
            .await
    }

    /// Runs one offence; returns the close code the offender received (`None`: the TCP
    /// connection ended without a close frame).
    async fn offend(&mut self, offence: Offence) -> Option<u16> {
        match offence {
            Offence::Ws(msgs) => {
                let mut bad = Client::connect(&self.url).await;
                for msg in msgs {
                    // The server may already have closed the socket: that is fine.
                    let _ = futures::SinkExt::send(&mut bad.ws, msg).await;
                }
                bad.expect_close().await
            }
            Offence::Raw(bytes) => {
                let mut bad = RawWs::connect(self.server.addr, &format!("/{ROOM}")).await;
                bad.write(&bytes).await;
                let code = bad.expect_close().await;
                if code.is_some() {
                    assert!(
                        bad.expect_eof().await,
                        "server kept the TCP connection open after its close frame"
                    );
                }
                code
            }
        }
    }

    /// Runs `offence`, expects close `code` counted under `label`, then checks the room.
    async fn case(&mut self, what: &str, offence: Offence, code: u16, label: &str) {
        let before = self.closed(label).await;
        let got = self.offend(offence).await;
        assert_eq!(got, Some(code), "{what}: close code");
        self.server
            .wait_metric(CLOSED, &format!("reason=\"{label}\""), before + 1.0)
            .await;
        self.check_unharmed(what).await;
    }

    /// The offender is gone, the document and awareness are exactly as before, the writer's
    /// next edit reaches the reader, and the server answers HTTP.
    async fn check_unharmed(&mut self, what: &str) {
        self.server.wait_metric("tandem_connections", "", 2.0).await;
        let mut d = Client::join(&self.url).await;
        assert_eq!(d.text("text"), self.text, "{what}: document text changed");
        assert_eq!(
            d.state_vector(),
            self.a.state_vector(),
            "{what}: document state changed"
        );
        assert_eq!(
            d.state(),
            self.a.state(),
            "{what}: document content changed"
        );
        let ids: Vec<u64> = d.awareness.keys().copied().collect();
        assert_eq!(ids, vec![self.a_id], "{what}: awareness table changed");
        assert_eq!(d.awareness_state(self.a_id), Some(A_STATE));
        d.close().await;

        let marker = format!(" [{}]", self.c_updates);
        self.a
            .insert("text", self.text.chars().count() as u32, &marker)
            .await;
        self.text.push_str(&marker);
        self.c_updates += 1;
        let (want, n) = (self.text.clone(), self.c_updates);
        self.c
            .pump_until(|c| c.updates_received == n && c.text("text") == want)
            .await;
        self.a.pump_until(|c| c.updates_received == n + 1).await;
        assert!(self.a.closed.is_none() && self.c.closed.is_none());
        let (status, _) = self.server.http_get("/healthz").await;
        assert_eq!(status, 200, "{what}: server not healthy");
    }
}

/// A valid y-websocket update frame inserting `s` (from a client nobody else knows).
fn update_frame(s: &str) -> Vec<u8> {
    frame(0, Some(2), &text_update("text", s))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[tokio::test]
async fn random_bytes_close_only_the_sender() {
    let mut room = Room::open(config()).await;
    let labels = [
        "truncated",
        "bad_varint",
        "unknown_message_type",
        "unknown_sync_type",
        "invalid_update",
        "invalid_awareness",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..12 {
        let mut bytes = Vec::new();
        for _ in 0..(1 + round * 5) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push((seed >> 24) as u8);
        }
        let mut before = 0.0;
        for l in labels {
            before += room.closed(l).await;
        }
        let code = room
            .offend(Offence::Ws(vec![Message::binary(bytes.clone())]))
            .await;
        assert!(
            matches!(code, Some(1002 | 1003 | 1007)),
            "random frame {bytes:02x?} closed with {code:?}"
        );
        let mut after = 0.0;
        for l in labels {
            after += room.closed(l).await;
        }
        assert_eq!(after, before + 1.0, "one protocol rejection counted");
        room.check_unharmed(&format!("random frame {round}")).await;
    }
    room.server.stop().await;
}

#[tokio::test]
async fn truncated_and_malformed_varints_close_with_1002() {
    let mut room = Room::open(config()).await;
    let cases: [(&str, Vec<u8>, &str); 7] = [
        ("message type cut", vec![0x80], "truncated"),
        ("sync sub-type cut", vec![0x00, 0x82], "truncated"),
        ("length prefix cut", vec![0x00, 0x02, 0xff], "truncated"),
        (
            "payload shorter than its length",
            vec![0x00, 0x02, 0x05, 0x00, 0x00],
            "truncated",
        ),
        ("awareness length cut", vec![0x01, 0x85], "truncated"),
        ("varint longer than 64 bits", vec![0xff; 11], "bad_varint"),
        // All messages of a frame must be valid or none is used: the update must not land.
        (
            "valid update then a cut message",
            cat(&[&update_frame("EVIL"), &[0x00, 0x02, 0x85]]),
            "truncated",
        ),
    ];
    for (what, bytes, label) in cases {
        room.case(what, Offence::Ws(vec![Message::binary(bytes)]), 1002, label)
            .await;
    }
    room.server.stop().await;
}

#[tokio::test]
async fn unknown_message_types_close_with_1003() {
    let mut room = Room::open(config()).await;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("type 9", vec![9], "unknown_message_type"),
        (
            "type 300 (two-byte varint)",
            vec![0xac, 0x02],
            "unknown_message_type",
        ),
        ("sync sub-type 5", vec![0, 5, 0], "unknown_sync_type"),
        (
            "valid update then type 7",
            cat(&[&update_frame("EVIL"), &[7]]),
            "unknown_message_type",
        ),
    ];
    for (what, bytes, label) in cases {
        room.case(what, Offence::Ws(vec![Message::binary(bytes)]), 1003, label)
            .await;
    }
    room.server.stop().await;
}

/// An update that decodes but cannot be applied: an item whose parent is `parent`, an item
/// holding a string rather than a shared type (yrs: `UpdateError::InvalidParent`).
fn update_with_non_type_parent(parent_client: u64, parent_clock: u64) -> Vec<u8> {
    let mut u = Vec::new();
    put_var(&mut u, 1); // one client
    put_var(&mut u, 1); // one struct
    put_var(&mut u, 0x3bad_f00d); // its client id
    put_var(&mut u, 0); // starting clock
    u.push(4); // info: string content, no origins, no parent_sub
    put_var(&mut u, 0); // parent is an ID, not a root name
    put_var(&mut u, parent_client);
    put_var(&mut u, parent_clock);
    put_var(&mut u, 1); // content: varString "x"
    u.push(b'x');
    put_var(&mut u, 0); // empty delete set
    u
}

#[tokio::test]
async fn invalid_yjs_payloads_close_with_1007() {
    let mut room = Room::open(config()).await;
    // The room-level rejection: yrs decodes it, then refuses to integrate it. Check that
    // premise on a copy of the document first, so this case cannot pass vacuously.
    let bad_parent = update_with_non_type_parent(room.a.doc.client_id().get(), 0);
    {
        let copy = yrs::Doc::new();
        let state = Update::decode_v1(&room.a.state()).expect("state");
        copy.transact_mut().apply_update(state).expect("copy");
        let bad = Update::decode_v1(&bad_parent).expect("the crafted update decodes");
        assert!(
            copy.transact_mut().apply_update(bad).is_err(),
            "premise: yrs refuses the crafted update"
        );
    }
    let garbage = [0xff, 0xff, 0xff];
    let cases: [(&str, Vec<u8>); 6] = [
        ("update: garbage", frame(0, Some(2), &garbage)),
        ("sync step 2: garbage", frame(0, Some(1), &garbage)),
        (
            "sync step 1: garbage state vector",
            frame(0, Some(0), &[0x05, 0x80]),
        ),
        ("update: cut in the middle", {
            let u = text_update("text", "a longer text to cut in half");
            frame(0, Some(2), &u[..u.len() / 2])
        }),
        (
            "valid update then an invalid one",
            cat(&[&update_frame("EVIL"), &frame(0, Some(2), &garbage)]),
        ),
        (
            "update with a parent that is not a type",
            frame(0, Some(2), &bad_parent),
        ),
    ];
    for (what, bytes) in cases {
        room.case(
            what,
            Offence::Ws(vec![Message::binary(bytes)]),
            1007,
            "invalid_update",
        )
        .await;
    }
    room.server.stop().await;
}

#[tokio::test]
async fn invalid_awareness_closes_with_1007() {
    let mut room = Room::open(config()).await;
    let cases: [(&str, Vec<u8>); 6] = [
        ("state is not JSON", awareness_frame(&[(7001, 1, "{oops")])),
        ("state is empty", awareness_frame(&[(7002, 1, "")])),
        // All entries of a message must be valid or none is used: 7003 must not appear.
        (
            "valid entry then invalid JSON",
            awareness_frame(&[(7003, 1, r#"{"ok":true}"#), (7004, 1, "{\"a\":")]),
        ),
        (
            "client id above 2^53",
            awareness_frame(&[(1 << 60, 1, "{}")]),
        ),
        ("state is not UTF-8", {
            let mut inner = Vec::new();
            put_var(&mut inner, 1);
            put_var(&mut inner, 7005);
            put_var(&mut inner, 1);
            put_var(&mut inner, 2);
            inner.extend_from_slice(&[0xc3, 0x28]);
            frame(1, None, &inner)
        }),
        ("trailing bytes after the entries", {
            let mut inner = Vec::new();
            put_var(&mut inner, 0);
            inner.push(0x42);
            frame(1, None, &inner)
        }),
    ];
    for (what, bytes) in cases {
        room.case(
            what,
            Offence::Ws(vec![Message::binary(bytes)]),
            1007,
            "invalid_awareness",
        )
        .await;
    }
    // And a foreign id with invalid JSON is rejected as invalid, not silently refused.
    let a_id = room.a_id;
    room.case(
        "a's id with invalid JSON",
        Offence::Ws(vec![Message::binary(awareness_frame(&[(a_id, 9, "nope")]))]),
        1007,
        "invalid_awareness",
    )
    .await;
    room.server.stop().await;
}

#[tokio::test]
async fn text_frames_close_with_1003() {
    let mut room = Room::open(config()).await;
    room.case(
        "text frame",
        Offence::Ws(vec![Message::text("hello")]),
        1003,
        "text_frame",
    )
    .await;
    room.case(
        "empty text frame after a valid sync step 1",
        Offence::Ws(vec![
            Message::binary(frame(0, Some(0), &StateVector::default().encode_v1())),
            Message::text(""),
        ]),
        1003,
        "text_frame",
    )
    .await;
    room.server.stop().await;
}

#[tokio::test]
async fn messages_above_the_size_limit_close_with_1009() {
    const LIMIT: usize = 64 * 1024;
    let mut cfg = config();
    cfg.max_message_size = LIMIT;
    let mut room = Room::open(cfg).await;
    room.case(
        "one frame above the limit",
        Offence::Ws(vec![Message::binary(vec![0u8; LIMIT + 1])]),
        1009,
        "message_too_big",
    )
    .await;
    // Two fragments, each under the limit, that together exceed it.
    let half = vec![0u8; LIMIT / 2 + 16];
    room.case(
        "fragments adding up to more than the limit",
        Offence::Raw(cat(&[
            &ws_frame(false, 0, op::BINARY, Some(MASK), &half),
            &ws_frame(true, 0, op::CONTINUATION, Some(MASK), &half),
        ])),
        1009,
        "message_too_big",
    )
    .await;
    // Control: a valid update just under the limit is accepted and relayed.
    let big = "y".repeat(LIMIT - 100);
    let update = update_frame(&big);
    assert!(update.len() <= LIMIT);
    let mut e = Client::join(&room.url).await;
    e.send_raw(update).await;
    e.pump_until(|c| c.updates_received == 1 && c.text("text").contains(&big))
        .await;
    room.c.pump_until(|c| c.text("text").contains(&big)).await;
    room.server.stop().await;
}

/// Frames no conforming client library would send, written on a raw socket.
#[tokio::test]
async fn malformed_websocket_frames_close_with_1002() {
    let mut room = Room::open(config()).await;
    let payload = update_frame("EVIL");
    let masked = |op: u8, p: &[u8]| client_frame(op, p);
    let close_with = |code: u16| masked(op::CLOSE, &code.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "RSV1 set",
            ws_frame(true, 0b100, op::BINARY, Some(MASK), &payload),
        ),
        (
            "RSV2 set",
            ws_frame(true, 0b010, op::BINARY, Some(MASK), &payload),
        ),
        (
            "RSV3 set",
            ws_frame(true, 0b001, op::BINARY, Some(MASK), &payload),
        ),
        (
            "RSV1 on a ping",
            ws_frame(true, 0b100, op::PING, Some(MASK), b""),
        ),
        ("reserved data opcode 0x3", masked(0x3, &payload)),
        ("reserved data opcode 0x7", masked(0x7, &payload)),
        ("reserved control opcode 0xB", masked(0xB, b"")),
        ("reserved control opcode 0xF", masked(0xF, b"x")),
        (
            "ping with a 126-byte payload",
            masked(op::PING, &[0u8; 126]),
        ),
        (
            "pong with a 200-byte payload",
            masked(op::PONG, &[0u8; 200]),
        ),
        (
            "fragmented ping (FIN=0)",
            ws_frame(false, 0, op::PING, Some(MASK), b"p"),
        ),
        (
            "fragmented close (FIN=0)",
            ws_frame(false, 0, op::CLOSE, Some(MASK), &1000u16.to_be_bytes()),
        ),
        (
            "unmasked binary frame",
            ws_frame(true, 0, op::BINARY, None, &payload),
        ),
        ("unmasked ping", ws_frame(true, 0, op::PING, None, b"")),
        (
            "continuation with nothing to continue",
            masked(op::CONTINUATION, &payload),
        ),
        (
            "new data frame inside a fragmented message",
            cat(&[
                &ws_frame(false, 0, op::BINARY, Some(MASK), &payload[..3]),
                &masked(op::BINARY, &payload),
            ]),
        ),
        ("close with a 1-byte payload", masked(op::CLOSE, &[0x03])),
        (
            "close with code 1005 (no status; never on the wire)",
            close_with(1005),
        ),
        (
            "close with code 1006 (abnormal; never on the wire)",
            close_with(1006),
        ),
        ("close with code 999", close_with(999)),
        ("close with reserved code 1016", close_with(1016)),
        ("close with code 5000", close_with(5000)),
    ];
    for (what, bytes) in cases {
        room.case(what, Offence::Raw(bytes), 1002, "ws_protocol_error")
            .await;
    }
    // Control: a valid close frame is answered with the same code and is not a violation.
    room.case(
        "close with 1000",
        Offence::Raw(close_with(1000)),
        1000,
        "client_closed",
    )
    .await;
    room.case(
        "close with application code 4321",
        Offence::Raw(close_with(4321)),
        4321,
        "client_closed",
    )
    .await;
    room.server.stop().await;
}

#[tokio::test]
async fn absurd_frame_length_closes_with_a_code_and_the_server_stays_up() {
    let mut room = Room::open(config()).await;
    // A header announcing 2^62 payload bytes, and nothing after it.
    room.case(
        "64-bit length 2^62",
        Offence::Raw(ws_header(true, 0, op::BINARY, Some(MASK), 1 << 62)),
        1009,
        "message_too_big",
    )
    .await;
    // The largest length the 64-bit field may carry (its top bit must be 0).
    room.case(
        "64-bit length 2^63-1",
        Offence::Raw(ws_header(true, 0, op::BINARY, Some(MASK), (1 << 63) - 1)),
        1009,
        "message_too_big",
    )
    .await;
    room.server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let mut room = Room::open(config()).await;
    room.case(
        "text frame with invalid UTF-8",
        Offence::Raw(client_frame(op::TEXT, &[0x68, 0x69, 0xc3, 0x28, 0xff])),
        1007,
        "invalid_utf8",
    )
    .await;
    room.server.stop().await;
}
