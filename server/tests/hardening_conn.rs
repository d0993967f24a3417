//! Connection hardening (issue 10, items 8, 10 and 11):
//!
//! - a client over its message rate is throttled (its socket is not read until the bucket
//!   refills, so TCP slows it down) instead of being closed; only a frame holding more
//!   messages than the whole burst is closed with 4429;
//! - a throttled connection is not mistaken for a dead one while its pongs wait unread;
//! - every server-initiated close reaches the client as a close frame, even when the client is
//!   in the middle of a burst and not reading (no reset, no 1006);
//! - a peer that stopped reading and never answers pings, in a busy room, is closed at the ping
//!   timeout while its writes are stuck, its awareness removal reaches the room, and the
//!   others lose nothing.

mod common;

use std::time::Duration;

use common::{
    Client, RawFrame, RawWs, TestServer, WAIT, awareness_frame, client_frame, config, frame, op,
};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, timeout};
use yrs::StateVector;
use yrs::updates::encoder::Encode;

const CLOSED: &str = "tandem_connections_closed_total";
const THROTTLED: &str = "tandem_connections_throttled_total";
const THROTTLED_SECONDS: &str = "tandem_connections_throttled_seconds_total";

fn closed(label: &str) -> String {
    format!("reason=\"{label}\"")
}

/// Reads frames until the close frame; returns it (panics if the connection ends first, as
/// it does after a reset).
async fn read_close(raw: &mut RawWs) -> RawFrame {
    loop {
        let frame = raw
            .read_frame()
            .await
            .expect("the connection ended (or was reset) before the close frame");
        if frame.opcode == op::CLOSE {
            return frame;
        }
    }
}

/// The reason text of a close frame.
fn close_reason(frame: &RawFrame) -> String {
    String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default()).into_owned()
}

/// After the close frame: reads to the end of the TCP stream; false if it ends in a reset.
async fn ends_cleanly(raw: &mut RawWs) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, raw.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                eprintln!("read after the close frame: {e}");
                return false;
            }
            Err(_) => panic!("the server kept the socket open after its close frame"),
        }
    }
}

/// One WebSocket frame holding `n` awareness messages (each a whole y-websocket message) for
/// client id `id`, with clocks from `clock`.
fn awareness_messages(id: u64, clock: u32, n: u32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| awareness_frame(&[(id, clock + i, r#"{"user":"many"}"#)]))
        .collect()
}

/// Item 10: a program applying many small transactions back to back, as fast as TCP takes
/// them, far above the message rate. It used to be closed with 4429 (final for y-websocket 3:
/// no reconnect). Now it is slowed down to the rate and loses nothing; it is never closed, not
/// even by the ping timeout while it is throttled and does not read its pings.
#[tokio::test]
async fn a_fast_honest_writer_is_throttled_not_closed_and_loses_nothing() {
    let mut cfg = config();
    cfg.max_messages_per_sec = 400;
    cfg.message_burst = 40;
    cfg.ping_interval = Duration::from_millis(100);
    cfg.ping_timeout = Duration::from_secs(1);
    let server = TestServer::start(cfg).await;
    let url = server.url("fast-writer");
    let mut writer = Client::join(&url).await;
    let mut reader = Client::join(&url).await;

    // 1,200 transactions of 200 characters, one frame each, without reading in between:
    // three seconds' worth at the rate.
    // The reader reads meanwhile (it answers pings); the writer does not.
    const EDITS: usize = 1200;
    let started = Instant::now();
    let write = async {
        for i in 0..EDITS {
            let chunk = format!("{:>200}", i);
            writer.insert("text", (i * 200) as u32, &chunk).await;
        }
    };
    let read = reader.pump_until(|c| c.text("text").len() == EDITS * 200);
    tokio::join!(write, read);
    // Every edit reached the reader; each is echoed to the writer.
    assert_eq!(reader.text("text"), writer.text("text"));
    writer.pump_until(|c| c.updates_received == EDITS).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "1,200 messages at 400/s (burst 40) went through in {took:?}: not throttled"
    );
    assert!(
        writer.closed.is_none(),
        "writer closed: {:?}",
        writer.closed
    );
    assert!(
        reader.closed.is_none(),
        "reader closed: {:?}",
        reader.closed
    );
    assert!(server.metric(THROTTLED, "").await >= 1.0);
    assert!(server.metric(THROTTLED_SECONDS, "").await >= 1.0);
    assert_eq!(server.metric(CLOSED, &closed("rate_limited")).await, 0.0);
    assert_eq!(server.metric(CLOSED, &closed("ping_timeout")).await, 0.0);

    // Still a normal connection afterwards.
    writer.insert("text", 0, "!").await;
    reader.pump_until(|c| c.text("text").starts_with('!')).await;
    server.stop().await;
}

/// Item 10, liveness: a pause longer than the ping timeout (a full burst in one frame repays
/// over `burst / rate` seconds). The client answers every ping at once, but its pongs wait
/// unread behind the pause; the server must not count that as silence.
#[tokio::test]
async fn a_throttle_pause_longer_than_the_ping_timeout_does_not_close() {
    let mut cfg = config();
    cfg.max_messages_per_sec = 4;
    cfg.message_burst = 10;
    cfg.ping_interval = Duration::from_millis(100);
    cfg.ping_timeout = Duration::from_millis(600);
    let server = TestServer::start(cfg).await;
    let url = server.url("long-pause");
    let mut observer = Client::join(&url).await;
    let mut client = Client::join(&url).await;
    let id = 4242;
    // Join took 1 token, 9 left: the first frame goes 1 into debt (250 ms), the second,
    // after it, 10 (2.5 s), the third waits for that.
    for n in 0..3 {
        client
            .send_raw(awareness_messages(id, 1 + n * 10, 10))
            .await;
    }
    let started = Instant::now();
    // Both read (and so answer pings) all along.
    tokio::join!(
        client.pump_for(Duration::from_secs(3)),
        observer.pump_for(Duration::from_secs(3))
    );
    assert!(client.closed.is_none(), "closed: {:?}", client.closed);
    // All 30 messages went through, in order, the last one after the pauses.
    observer
        .pump_until(|c| c.awareness.get(&id).map(|(clock, _)| *clock) == Some(30))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "no pause: {:?}",
        started.elapsed()
    );
    assert!(server.metric(THROTTLED_SECONDS, "").await >= 2.0);
    assert_eq!(server.metric(CLOSED, &closed("ping_timeout")).await, 0.0);
    client.insert("text", 0, "alive").await;
    observer.pump_until(|c| c.text("text") == "alive").await;
    server.stop().await;
}

/// Item 10, the one case closed: a single frame holding more messages than the whole burst.
/// It was received and decoded in full before the limiter saw it, so pausing afterwards
/// cannot bring its cost back to the rate.
#[tokio::test]
async fn a_frame_above_the_burst_is_closed_with_4429_and_the_room_goes_on() {
    let mut cfg = config();
    cfg.max_messages_per_sec = 10;
    cfg.message_burst = 10;
    let server = TestServer::start(cfg).await;
    let url = server.url("abuse");
    let mut writer = Client::join(&url).await;
    let mut reader = Client::join(&url).await;

    let mut raw = RawWs::connect(server.addr, "/abuse").await;
    raw.write(&client_frame(op::BINARY, &awareness_messages(999, 1, 11)))
        .await;
    let close = read_close(&mut raw).await;
    assert_eq!(close.close_code(), Some(4429));
    assert!(
        close_reason(&close).contains("burst"),
        "reason: {}",
        close_reason(&close)
    );
    assert!(ends_cleanly(&mut raw).await, "reset after the close frame");
    server
        .wait_metric(CLOSED, &closed("rate_limited"), 1.0)
        .await;
    // The abusive frame reached nobody.
    reader.pump_for(Duration::from_millis(200)).await;
    assert!(!reader.awareness.contains_key(&999));
    writer.insert("text", 0, "unharmed").await;
    reader.pump_until(|c| c.text("text") == "unharmed").await;
    assert!(writer.closed.is_none() && reader.closed.is_none());
    server.stop().await;
}

/// Item 11: a client writes a long burst without reading while the server has megabytes
/// queued for it, and is closed in the middle of the burst. The server used to drop the socket
/// with the rest of the burst unread: the kernel then sends a reset and discards what it had
/// not sent yet, close frame included, and the client saw 1006. Now it reads the close frame
/// with its code and reason, and then a clean end of stream.
#[tokio::test]
async fn a_close_in_the_middle_of_a_burst_reaches_the_client() {
    let cases: [(&str, Vec<u8>, u16, &str, &str); 2] = [
        (
            "text frame",
            client_frame(op::TEXT, b"hello"),
            1003,
            "text frames are not supported",
            "text_frame",
        ),
        (
            // Burst 200 (below): the 150 SyncStep1 fit in it, so nothing is throttled before.
            "frame above the burst",
            client_frame(op::BINARY, &awareness_messages(31, 1, 250)),
            4429,
            "burst",
            "rate_limited",
        ),
    ];
    for (what, offence, code, reason, label) in cases {
        let mut cfg = config();
        cfg.max_messages_per_sec = 200;
        cfg.message_burst = 200;
        // 4429 needs a frame above the burst, so frames may carry more messages than it.
        cfg.max_messages_per_frame = 1000;
        let server = TestServer::start(cfg).await;
        let url = server.url("burst");
        // A 64 KB document: every SyncStep1 below is answered with all of it.
        let mut writer = Client::join(&url).await;
        writer.insert("text", 0, &"x".repeat(64 * 1024)).await;
        writer.pump_until(|c| c.updates_received == 1).await;

        let mut raw = RawWs::connect_with_rcvbuf(server.addr, "/burst", 4096).await;
        let step1 = client_frame(
            op::BINARY,
            &frame(0, Some(0), &StateVector::default().encode_v1()),
        );
        let filler = client_frame(op::BINARY, &awareness_frame(&[(30, 1, "{}")]));
        let mut burst = Vec::new();
        // ~10 MB of answers queued for a client that does not read ...
        for _ in 0..150 {
            burst.extend_from_slice(&step1);
        }
        // ... the offence ...
        burst.extend_from_slice(&offence);
        // ... and 2,000 frames after it that the server will never handle.
        for _ in 0..2000 {
            burst.extend_from_slice(&filler);
        }
        // The server keeps reading while its writes are stuck, so the whole burst goes out.
        timeout(WAIT, raw.write(&burst))
            .await
            .unwrap_or_else(|_| panic!("{what}: the server stopped reading the burst"));
        // Let the server reach the offence and start closing before anything is read.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let close = read_close(&mut raw).await;
        assert_eq!(close.close_code(), Some(code), "{what}: close code");
        assert!(
            close_reason(&close).contains(reason),
            "{what}: reason {:?}",
            close_reason(&close)
        );
        assert!(
            ends_cleanly(&mut raw).await,
            "{what}: reset after the close frame"
        );
        server.wait_metric(CLOSED, &closed(label), 1.0).await;
        // The room is unharmed.
        let mut reader = Client::join(&url).await;
        assert_eq!(reader.text("text").len(), 64 * 1024, "{what}");
        writer.insert("text", 0, "ok").await;
        reader
            .pump_until(|c| c.text("text").starts_with("ok"))
            .await;
        server.stop().await;
    }
}

/// Which deadline should close the silent peer in [`silent_peer_in_a_busy_room`].
#[derive(Debug, Clone, Copy)]
enum Deadline {
    PingTimeout,
    Idle,
    TokenExpiry,
}

/// Item 8, connection half: a peer that announced its awareness, then stopped reading and
/// never answers pings, in a room where someone types continuously. Its writes get stuck
/// (its TCP window is closed) and the server used to wait on them alone, so no deadline fired
/// and it was not closed at all. Now it is closed at the ping timeout, the room removes its
/// awareness at once, and the typist's edits keep reaching a third client.
#[tokio::test]
async fn a_silent_peer_that_stopped_reading_in_a_busy_room_is_closed_at_the_ping_timeout() {
    silent_peer_in_a_busy_room(Deadline::PingTimeout).await;
}

/// Item 8: the idle timeout fires too while the write to the peer is stuck.
#[tokio::test]
async fn a_peer_whose_writes_are_stuck_is_closed_at_the_idle_timeout() {
    silent_peer_in_a_busy_room(Deadline::Idle).await;
}

/// Item 8: and so does the token's expiry.
#[tokio::test]
async fn a_peer_whose_writes_are_stuck_is_closed_when_its_token_expires() {
    silent_peer_in_a_busy_room(Deadline::TokenExpiry).await;
}

const SECRET: &str = "tandem-hardening-conn-hs256-secret-0123456789";

/// An HS256 token for every document, expiring `exp_in` seconds from now.
fn token(sub: &str, exp_in: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "sub": sub, "docs": ["*"], "access": "rw", "exp": now + exp_in, "iat": now - 1,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

async fn silent_peer_in_a_busy_room(deadline: Deadline) {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_millis(200);
    cfg.ping_timeout = Duration::from_secs(60);
    let (label, query, window) = match deadline {
        Deadline::PingTimeout => {
            cfg.ping_timeout = Duration::from_secs(2);
            ("ping_timeout", String::new(), Duration::from_secs(2))
        }
        Deadline::Idle => {
            cfg.idle_timeout = Duration::from_secs(2);
            ("idle_timeout", String::new(), Duration::from_secs(2))
        }
        Deadline::TokenExpiry => {
            cfg.auth = tandem::config::AuthMode::Token;
            cfg.jwt_secret = Some(SECRET.into());
            // `exp` in 1 s, plus the server's 5 s of clock-skew leeway.
            let query = format!("?token={}", token("silent", 1));
            ("token_expired", query, Duration::from_secs(6))
        }
    };
    let server = TestServer::start(cfg).await;
    let url = format!("{}?token={}", server.url("busy"), token("user", 3600));
    let mut typist = Client::join(&url).await;
    let mut observer = Client::join(&url).await;
    let observer_id = observer.doc.client_id().get();

    let path = format!("/busy{query}");
    let mut silent = RawWs::connect_with_rcvbuf(server.addr, &path, 4096).await;
    silent
        .write(&client_frame(
            op::BINARY,
            &awareness_frame(&[(777, 1, r#"{"user":"silent"}"#)]),
        ))
        .await;
    observer
        .pump_until(|c| c.awareness_state(777).is_some())
        .await;
    // From here on `silent` neither reads nor answers pings.

    // Fill the silent peer's path first (~6 MB: more than its TCP buffers hold), so the
    // server's write to it is stuck when the deadline passes; then type continuously. The
    // observer renews its awareness, so that the idle timeout does not concern it.
    let started = Instant::now();
    let mut len = 0u32;
    let mut clock = 0;
    for i in 0..48 {
        let chunk = format!("{i:>8}").repeat(16 * 1024);
        typist.insert("text", len, &chunk).await;
        len += chunk.len() as u32;
        clock += 1;
        observer.set_awareness(observer_id, clock, "{}").await;
        typist.pump_for(Duration::from_millis(5)).await;
        observer.pump_for(Duration::from_millis(5)).await;
    }
    let removed_at = loop {
        typist.insert("text", len, "k").await;
        len += 1;
        clock += 1;
        observer.set_awareness(observer_id, clock, "{}").await;
        typist.pump_for(Duration::from_millis(20)).await;
        observer.pump_for(Duration::from_millis(20)).await;
        if observer.awareness_state(777).is_none() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < window + WAIT,
            "{deadline:?}: the silent peer's awareness was never removed"
        );
    };
    assert_eq!(
        server.metric(CLOSED, &closed(label)).await,
        1.0,
        "{deadline:?}: closed for another reason"
    );
    // The removal reached the observer as such (a null state).
    assert!(matches!(observer.awareness.get(&777), Some((_, None))));
    eprintln!("{deadline:?}: awareness removed {removed_at:?} after the silence began");

    // The typist's edits, before and after, all reach the observer.
    typist.insert("text", len, " end").await;
    let want = typist.text("text");
    observer
        .pump_until(|c| c.text("text").len() == want.len())
        .await;
    assert_eq!(observer.text("text"), want);
    assert!(typist.closed.is_none() && observer.closed.is_none());
    server.wait_metric("tandem_connections", "", 2.0).await;
    server.stop().await;
}
