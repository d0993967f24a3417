//! Connection and document lifecycle: slow readers, idle unloading, graceful shutdown, ping
//! timeouts, the close handshake, and the plain HTTP surface.
//!
//! Servers here store documents in a throwaway SQLite file (see `TestServer::start`).

mod common;

use std::time::Duration;

use common::{
    Client, RawWs, TestServer, awareness_frame, client_frame, config, http_request, op,
    upgrade_request,
};
use tokio::time::Instant;

const CLOSED: &str = "tandem_connections_closed_total";

fn closed_label(label: &str) -> String {
    format!("reason=\"{label}\"")
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_with_4001_and_nobody_else_loses_a_frame() {
    let mut cfg = config();
    cfg.outbox_frames = 16;
    // Filling the slow client's socket buffers takes a few hundred updates in a burst.
    cfg.max_messages_per_sec = 0;
    let server = TestServer::start(cfg).await;
    let url = server.url("slow");
    let mut writer = Client::join(&url).await;
    let mut reader = Client::join(&url).await;
    // The slow client: a tiny receive window, and it never reads after the handshake. Its
    // awareness state tells us the moment the room drops it.
    let mut slow = RawWs::connect_with_rcvbuf(server.addr, "/slow", 4096).await;
    let slow_state = r#"{"slow":true}"#;
    slow.write(&client_frame(
        op::BINARY,
        &awareness_frame(&[(999, 1, slow_state)]),
    ))
    .await;
    reader
        .pump_until(|c| c.awareness_state(999) == Some(slow_state))
        .await;

    // Updates of 8 KiB, one at a time (each waits for its echo, so the readers' queues never
    // hold more than a frame or two), until the room drops the slow client.
    let chunk = "z".repeat(8 * 1024);
    let mut sent = 0usize;
    while reader.awareness.get(&999) != Some(&(1, None)) {
        assert!(sent < 2_000, "the slow client was never dropped");
        writer.insert("text", 0, &chunk).await;
        sent += 1;
        writer.pump_until(|c| c.updates_received == sent).await;
        reader.pump_until(|c| c.updates_received == sent).await;
    }
    // The room let go of it; the connection is closed with 4001 (its close frame queues
    // behind everything the socket already holds, so read all of that first).
    assert_eq!(
        slow.expect_close().await,
        Some(4001),
        "slow client close code"
    );
    server
        .wait_metric(CLOSED, &closed_label("slow_consumer"), 1.0)
        .await;
    server.wait_metric("tandem_connections", "", 2.0).await;

    // The others lost nothing and keep going (paced as above: a burst of more than
    // `outbox_frames` updates would overflow even a reading client's 16-frame queue).
    for i in 0..20 {
        writer.insert("text", 0, &format!("<{i}>")).await;
        sent += 1;
        writer.pump_until(|c| c.updates_received == sent).await;
        reader.pump_until(|c| c.updates_received == sent).await;
    }
    assert_eq!(reader.text("text"), writer.text("text"));
    assert_eq!(reader.state_vector(), writer.state_vector());
    assert!(writer.closed.is_none() && reader.closed.is_none());
    server.stop().await;
}

#[tokio::test]
async fn idle_documents_unload_and_load_again() {
    let unload_after = Duration::from_millis(200);
    let mut cfg = config();
    cfg.unload_after = unload_after;
    let server = TestServer::start(cfg).await;
    let url = server.url("idle");
    let mut a = Client::join(&url).await;
    a.insert("text", 0, "before").await;
    a.pump_until(|c| c.updates_received == 1).await;
    server.wait_metric("tandem_documents_open", "", 1.0).await;

    // Not while someone is connected: stay well past the grace period.
    a.pump_for(unload_after * 3).await;
    assert_eq!(server.metric("tandem_documents_open", "").await, 1.0);
    assert_eq!(
        server.metric("tandem_documents_unloaded_total", "").await,
        0.0
    );
    a.insert("text", 0, "still here ").await;
    a.pump_until(|c| c.updates_received == 2).await;

    let text = a.text("text");
    a.close().await;
    server.wait_metric("tandem_documents_open", "", 0.0).await;
    server
        .wait_metric("tandem_documents_unloaded_total", "", 1.0)
        .await;

    // Loaded again from storage, with everything it had.
    let mut b = Client::join(&url).await;
    server.wait_metric("tandem_documents_open", "", 1.0).await;
    server
        .wait_metric("tandem_documents_loaded_total", "", 2.0)
        .await;
    assert_eq!(b.text("text"), text);
    assert_eq!(b.state_vector(), a.state_vector());
    let mut c = Client::join(&url).await;
    b.insert("text", 0, "after ").await;
    b.pump_until(|x| x.updates_received == 1).await;
    c.pump_until(|x| x.text("text") == format!("after {text}"))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn joining_while_the_document_unloads_always_works() {
    // With a 1 ms grace period every leave races the next join.
    let mut cfg = config();
    cfg.unload_after = Duration::from_millis(1);
    let server = TestServer::start(cfg).await;
    let url = server.url("flapping");
    // Every other round waits for the unload; the rounds in between join right after the
    // last client left, racing the room's removal.
    // Each joiner must find every earlier round's edit, wherever the document was.
    let mut expected = String::new();
    for i in 0..40 {
        let mut c = Client::join(&url).await;
        assert_eq!(c.text("text"), expected, "round {i}");
        c.insert("text", 0, &format!("{i},")).await;
        expected = format!("{i},{expected}");
        c.pump_until(|x| x.updates_received == 1).await;
        if i % 4 < 2 {
            c.close().await;
        } else {
            drop(c);
        }
        if i % 2 == 0 {
            server.wait_metric("tandem_documents_open", "", 0.0).await;
        }
    }
    server.wait_metric("tandem_documents_open", "", 0.0).await;
    let loaded = server.metric("tandem_documents_loaded_total", "").await;
    let unloaded = server.metric("tandem_documents_unloaded_total", "").await;
    assert!(loaded >= 21.0, "loaded {loaded} times");
    assert_eq!(loaded, unloaded);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_socket_with_1001() {
    let mut cfg = config();
    cfg.shutdown_timeout = Duration::from_secs(5);
    let server = TestServer::start(cfg).await;
    let addr = server.addr;
    let mut a = Client::join(&server.url("one")).await;
    let mut b = Client::join(&server.url("one")).await;
    let mut c = Client::join(&server.url("two")).await;
    let mut raw = RawWs::connect(addr, "/three").await;
    a.insert("text", 0, "x").await;
    a.pump_until(|x| x.updates_received == 1).await;

    let (took, ca, cb, cc, craw) = tokio::join!(
        server.stop_timed(),
        a.expect_close(),
        b.expect_close(),
        c.expect_close(),
        raw.expect_close(),
    );
    assert_eq!(
        [ca, cb, cc, craw],
        [Some(1001); 4],
        "every socket gets 1001"
    );
    // With only well-behaved clients nothing needs the deadline.
    assert!(took < Duration::from_secs(5), "serve took {took:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting connections after serve returned"
    );
}

#[tokio::test]
async fn graceful_shutdown_returns_within_the_timeout_despite_stuck_peers() {
    let timeout = Duration::from_secs(1);
    let mut cfg = config();
    cfg.shutdown_timeout = timeout;
    let server = TestServer::start(cfg).await;
    let addr = server.addr;
    let mut good = Client::join(&server.url("doc")).await;
    // A WebSocket that never reads, and an HTTP request that never finishes.
    let _deaf = RawWs::connect_with_rcvbuf(addr, "/doc", 4096).await;
    let mut half = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    server.wait_metric("tandem_connections", "", 2.0).await;

    let (took, code) = tokio::join!(server.stop_timed(), good.expect_close());
    assert_eq!(code, Some(1001));
    assert!(
        took < timeout + Duration::from_secs(1),
        "serve returned after {took:?}, timeout {timeout:?}"
    );
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_and_its_awareness_removed() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_millis(100);
    cfg.ping_timeout = Duration::from_millis(500);
    let server = TestServer::start(cfg).await;
    let url = server.url("pings");
    // The observer reads all the time, so its client library answers every ping.
    let mut observer = Client::join(&url).await;
    let mut silent = RawWs::connect(server.addr, "/pings").await;
    silent
        .write(&client_frame(
            op::BINARY,
            &awareness_frame(&[(777, 3, r#"{"name":"silent"}"#)]),
        ))
        .await;
    observer
        .pump_until(|c| c.awareness_state(777).is_some())
        .await;
    let t = Instant::now();
    observer
        .pump_until(|c| c.awareness.get(&777) == Some(&(3, None)))
        .await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "removed {took:?} after the last frame"
    );

    // The silent client was pinged, then closed with 4002.
    let mut pings = 0;
    let code = loop {
        let frame = silent.read_frame().await.expect("close frame before EOF");
        match frame.opcode {
            op::PING => pings += 1,
            op::CLOSE => break frame.close_code(),
            _ => {}
        }
    };
    assert_eq!(code, Some(4002));
    assert!(pings >= 2, "only {pings} pings before the timeout");
    server
        .wait_metric(CLOSED, &closed_label("ping_timeout"), 1.0)
        .await;

    // The observer, answering pings, outlives several timeouts and still works.
    observer.pump_for(Duration::from_millis(1500)).await;
    assert!(observer.closed.is_none(), "{:?}", observer.closed);
    observer.insert("text", 0, "alive").await;
    observer.pump_until(|c| c.updates_received == 1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_raw_client_that_answers_pings_stays_connected() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_millis(100);
    cfg.ping_timeout = Duration::from_millis(500);
    let server = TestServer::start(cfg).await;
    let mut raw = RawWs::connect(server.addr, "/pongs").await;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pongs = 0;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(frame) = tokio::time::timeout(left, raw.read_frame()).await else {
            break;
        };
        let frame = frame.expect("connection ended");
        assert_ne!(
            frame.opcode,
            op::CLOSE,
            "closed with {:?}",
            frame.close_code()
        );
        if frame.opcode == op::PING {
            raw.write(&client_frame(op::PONG, &frame.payload)).await;
            pongs += 1;
        }
    }
    assert!(
        pongs >= 5,
        "only {pongs} pings in 1.5 s at a 100 ms interval"
    );
    assert_eq!(server.metric(CLOSED, "").await, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn the_close_handshake_is_answered_and_counted() {
    let server = TestServer::start(config()).await;
    let url = server.url("bye");
    let mut a = Client::join(&url).await;
    assert_eq!(a.close().await, Some(1000), "a clean close is echoed");
    server
        .wait_metric(CLOSED, &closed_label("client_closed"), 1.0)
        .await;

    let mut raw = RawWs::connect(server.addr, "/bye").await;
    let mut payload = 4100u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"tab closed");
    raw.write(&client_frame(op::CLOSE, &payload)).await;
    assert_eq!(raw.expect_close().await, Some(4100));
    assert!(
        raw.expect_eof().await,
        "server closes TCP after the handshake"
    );
    server
        .wait_metric(CLOSED, &closed_label("client_closed"), 2.0)
        .await;

    // A connection that just vanishes is a lost connection, not a protocol violation.
    let b = Client::join(&url).await;
    drop(b);
    server
        .wait_metric(CLOSED, &closed_label("io_error"), 1.0)
        .await;
    assert_eq!(
        server
            .metric(CLOSED, &closed_label("ws_protocol_error"))
            .await,
        0.0
    );
    server.wait_metric("tandem_connections", "", 0.0).await;
    server.stop().await;
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let server = TestServer::start(config()).await;
    let (status, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    let mut a = Client::join(&server.url("m")).await;
    a.insert("text", 0, "counted").await;
    a.pump_until(|c| c.updates_received == 1).await;

    let response = http_request(
        server.addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        ),
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        response.header("content-type")
    );
    let body = String::from_utf8(response.body).expect("utf8");
    for name in [
        "tandem_connections ",
        "tandem_documents_open ",
        "tandem_messages_in_total ",
        "tandem_update_apply_seconds_bucket{",
        "tandem_update_apply_seconds_count ",
        "tandem_update_apply_seconds_sum ",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name:?}:\n{body}"
        );
    }
    assert_eq!(server.metric("tandem_connections", "").await, 1.0);
    assert_eq!(server.metric("tandem_documents_open", "").await, 1.0);
    // SyncStep1, SyncStep2 (answer to the server's step 1) and the update.
    assert!(server.metric("tandem_messages_in_total", "").await >= 3.0);
    assert!(server.metric("tandem_update_apply_seconds_count", "").await >= 1.0);
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_upgrades_without_a_name_are_400() {
    let mut cfg = config();
    cfg.max_name_len = 16;
    // `/` is the Hocuspocus endpoint by default; moved away, it is an empty y-websocket name.
    cfg.hocuspocus_path = "/hocuspocus".into();
    let server = TestServer::start(cfg).await;
    for path in ["/nope", "/api/v1/nothing", "/healthz/extra", "/metricsx"] {
        let (status, _) = server.http_get(path).await;
        assert_eq!(status, 404, "GET {path}");
    }
    let addr = server.addr;
    for (path, why) in [
        ("/", "empty name"),
        ("/?room=x", "empty name with a query"),
        ("/aaaaaaaaaaaaaaaaa", "name above max_name_len"),
        ("/a%00b", "control character"),
        ("/%ff%fe", "not UTF-8 after decoding"),
    ] {
        let response = http_request(addr, &upgrade_request(addr, path)).await;
        assert_eq!(response.status, 400, "upgrade to {path} ({why})");
        assert!(!response.body.is_empty(), "a 400 says why");
    }
    // The longest allowed name works, and the server is fine after all that.
    let mut c = Client::join(&server.url("aaaaaaaaaaaaaaaa")).await;
    c.insert("text", 0, "ok").await;
    c.pump_until(|x| x.updates_received == 1).await;
    let (status, _) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_dropped_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server kept a half-sent request open for 5 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}
