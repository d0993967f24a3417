//! The HTTP fallback transport (`GET /api/v1/documents/{name}/sync` as Server-Sent Events,
//! `POST .../sync/{session}`): real servers on port 0, real HTTP, real y-websocket clients on
//! the same documents.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::sse::{Sse, SseEvent};
use common::{Client, Db, HttpResponse, TestServer, WAIT, config, frame, http_send, on_every_db};
use serde_json::json;
use tandem::Config;
use tandem::config::AuthMode;
use tokio::time::Instant;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

const SECRET: &str = "tandem-sync-tests-hs256-secret-0123456789";

fn token(sub: &str, docs: &[&str], access: &str) -> String {
    common::doc_token(SECRET, sub, docs, access)
}

fn token_config() -> Config {
    let mut c = config();
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c
}

/// A fallback client: a session's event stream, its POST path and a yrs document.
struct Session {
    addr: SocketAddr,
    sse: Sse,
    post: String,
    access: String,
    doc: Doc,
    synced: bool,
    updates: usize,
    /// Awareness entries seen: (client id, clock, state or None).
    awareness: Vec<(u64, u32, Option<String>)>,
}

impl Session {
    /// Opens a session on `doc` (`?token=` when `token` is given); panics unless it is 200.
    async fn open(addr: SocketAddr, doc: &str, token: Option<&str>) -> Session {
        let path = match token {
            Some(t) => format!("/api/v1/documents/{doc}/sync?token={t}"),
            None => format!("/api/v1/documents/{doc}/sync"),
        };
        let (response, mut sse) = Sse::open_with(addr, &path, &[]).await;
        assert_eq!(response.status, 200, "{:?}", response.headers);
        assert_eq!(
            response.header("content-type"),
            Some("text/event-stream"),
            "{:?}",
            response.headers
        );
        let hello = sse.next().await;
        assert_eq!(hello.event, "session", "the first event names the session");
        let hello = hello.json();
        let id = hello["session"].as_str().expect("session id");
        assert_eq!(id.len(), 32, "128 bits in hex");
        Session {
            addr,
            sse,
            post: hello["post"].as_str().expect("post path").to_owned(),
            access: hello["access"].as_str().expect("access").to_owned(),
            doc: Doc::new(),
            synced: false,
            updates: 0,
            awareness: Vec::new(),
        }
    }

    async fn post(&self, body: &[u8]) -> HttpResponse {
        post(self.addr, &self.post, body).await
    }

    /// Sends SyncStep1 and handles frames until the server's SyncStep2.
    async fn sync(&mut self) {
        let sv = self.doc.transact().state_vector().encode_v1();
        assert_eq!(self.post(&frame(0, Some(0), &sv)).await.status, 204);
        self.until(|s| s.synced).await;
    }

    async fn insert(&mut self, s: &str) {
        let update = {
            let text = self.doc.get_or_insert_text("t");
            let mut txn = self.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, s);
            txn.encode_update_v1()
        };
        assert_eq!(self.post(&frame(0, Some(2), &update)).await.status, 204);
    }

    fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("t");
        text.get_string(&self.doc.transact())
    }

    /// Handles the stream's frames until `cond` holds; panics on `event: close`.
    async fn until(&mut self, mut cond: impl FnMut(&Session) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "condition not reached in time");
            let event = self.sse.next().await;
            assert_eq!(event.event, "message", "unexpected {event:?}");
            self.handle(&STANDARD.decode(&event.data).expect("base64 frame"))
                .await;
        }
    }

    /// One frame from the server (each carries one message).
    async fn handle(&mut self, data: &[u8]) {
        let mut r = tandem_wire::Reader::new(data);
        match r.var_uint().expect("type") {
            0 => {
                let sub = r.var_uint().expect("sync type");
                let payload = r.var_bytes().expect("payload");
                if sub == 0 {
                    let sv = StateVector::decode_v1(payload).expect("state vector");
                    let diff = self.doc.transact().encode_state_as_update_v1(&sv);
                    assert_eq!(self.post(&frame(0, Some(1), &diff)).await.status, 204);
                    return;
                }
                let update = Update::decode_v1(payload).expect("update");
                self.doc.transact_mut().apply_update(update).expect("apply");
                if sub == 1 {
                    self.synced = true;
                } else {
                    self.updates += 1;
                }
            }
            1 => {
                let payload = r.var_bytes().expect("awareness");
                let mut a = tandem_wire::Reader::new(payload);
                for _ in 0..a.var_uint().expect("count") {
                    let id = a.var_uint().expect("id");
                    let clock = a.var_uint().expect("clock") as u32;
                    let state =
                        String::from_utf8(a.var_bytes().expect("state").to_vec()).expect("utf8");
                    self.awareness
                        .push((id, clock, (state != "null").then_some(state)));
                }
            }
            other => panic!("unexpected message type {other}"),
        }
    }

    /// Reads to the `close` event.
    async fn close_event(&mut self) -> SseEvent {
        self.sse.next_named("close").await
    }
}

async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    let headers = [("Content-Type", "application/octet-stream")];
    http_send(addr, "POST", path, &headers, body).await
}

fn reason(r: &HttpResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error body");
    assert_eq!(v["status"], r.status);
    v["reason"].as_str().expect("reason").to_owned()
}

#[tokio::test]
async fn sessions_sync_with_each_other_and_with_websocket_clients() {
    on_every_db!(
        "sessions_sync_with_each_other_and_with_websocket_clients",
        two_sessions_and_a_socket
    );
}

async fn two_sessions_and_a_socket(db: &Db) {
    let mut cfg = config();
    cfg.database_url = Some(db.url.clone());
    let server = TestServer::start(cfg).await;
    let addr = server.addr;
    let mut a = Session::open(addr, "team%2Fnotes", None).await;
    assert_eq!(a.access, "rw");
    assert_eq!(a.post.split('/').nth(4), Some("team%2Fnotes"));
    a.sync().await;
    a.insert("from sse a. ").await;
    // The echo of its own update is the acknowledgement, as over a socket.
    a.until(|s| s.updates >= 1).await;

    let mut ws = Client::join(&server.url("team/notes")).await;
    assert_eq!(
        ws.text("t"),
        "from sse a. ",
        "the socket sees the session's edit"
    );
    ws.insert("t", 12, "from ws. ").await;
    a.until(|s| s.text().ends_with("from ws. ")).await;

    let mut b = Session::open(addr, "team%2Fnotes", None).await;
    b.sync().await;
    assert_eq!(b.text(), "from sse a. from ws. ");
    b.insert("from sse b.").await;
    a.until(|s| s.text().ends_with("from sse b.")).await;
    ws.pump_until(|c| c.text("t").ends_with("from sse b."))
        .await;
    assert_eq!(a.text(), b.text());
    assert_eq!(ws.text("t"), b.text());

    // Several messages in one POST are handled in order.
    let id = 4242;
    let mut body = frame(0, Some(0), &StateVector::default().encode_v1());
    body.extend(common::awareness_frame(&[(id, 1, "{\"user\":\"b\"}")]));
    assert_eq!(b.post(&body).await.status, 204);
    ws.pump_until(|c| c.awareness.contains_key(&id)).await;

    // The stream going away ends the session: its awareness is removed at once.
    drop(b);
    ws.pump_until(|c| c.awareness.get(&id).is_some_and(|(_, s)| s.is_none()))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_checked_like_an_upgrade_and_read_only_sessions_cannot_write() {
    let server = TestServer::start(token_config()).await;
    let addr = server.addr;
    let path = "/api/v1/documents/doc/sync";
    let (r, _) = Sse::open_with(addr, path, &[]).await;
    assert_eq!(r.status, 401, "no token");
    let other = token("ada", &["other"], "rw");
    let (status, _) = Sse::open(addr, path, &other, None).await;
    assert_eq!(status, 403, "a token for another document");

    let rw = token("ada", &["doc"], "rw");
    let ro = token("bob", &["doc"], "ro");
    // A bearer header works as well as ?token=.
    let (status, mut sse) = Sse::open(addr, path, &rw, None).await;
    assert_eq!(status, 200);
    assert_eq!(sse.next().await.json()["access"], "rw");
    let mut reader = Session::open(addr, "doc", Some(&ro)).await;
    assert_eq!(reader.access, "ro");
    reader.sync().await;
    reader.insert("not allowed").await;

    let mut writer = Client::join(&format!("{}?token={rw}", server.url("doc"))).await;
    writer.insert("t", 0, "allowed").await;
    // The writer's update reaches the reader; the reader's own was not relayed (no echo).
    reader.until(|s| s.updates >= 1).await;
    assert_eq!(reader.updates, 1);
    writer.pump_for(Duration::from_millis(200)).await;
    assert_eq!(
        writer.text("t"),
        "allowed",
        "the read-only edit went nowhere"
    );
    server
        .wait_metric("tandem_readonly_updates_refused_total", "", 1.0)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_close_the_session_with_the_catalogue_code() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;

    let mut s = Session::open(addr, "bad", None).await;
    // A sync message cut short: 1002, like a WebSocket frame.
    let r = s.post(&[0, 0, 5, 1]).await;
    assert_eq!(r.status, 400);
    assert_eq!(reason(&r), "session closed: 1002 truncated");
    let close = s.close_event().await.json();
    assert_eq!(close, json!({"code": 1002, "reason": "truncated"}));
    assert!(s.sse.ends().await, "the stream ends after its close event");
    let r = s.post(&frame(0, Some(0), &[0])).await;
    assert_eq!(r.status, 410, "a closed session");
    assert_eq!(reason(&r), "session closed: 1002 truncated");

    // An update yrs refuses is found by the room: the close still comes on the stream.
    let mut s = Session::open(addr, "bad", None).await;
    assert_eq!(s.post(&frame(0, Some(2), &[1, 1, 1])).await.status, 400);
    let close = s.close_event().await.json();
    assert_eq!(close["code"], 1007);

    // An unknown message type: 1003.
    let mut s = Session::open(addr, "bad", None).await;
    let r = s.post(&[9]).await;
    assert_eq!(r.status, 400);
    assert_eq!(s.close_event().await.json()["code"], 1003);

    // The document is untouched and still served.
    let mut ok = Session::open(addr, "bad", None).await;
    ok.sync().await;
    assert_eq!(ok.text(), "");
    server.stop().await;
}

#[tokio::test]
async fn unknown_sessions_are_404_and_limits_apply() {
    let mut cfg = config();
    cfg.max_message_size = 1024;
    cfg.max_conns_per_doc = 1;
    let server = TestServer::start(cfg).await;
    let addr = server.addr;
    let s = Session::open(addr, "doc", None).await;
    let id = s.post.rsplit('/').next().expect("id").to_owned();
    for path in [
        "/api/v1/documents/doc/sync/00000000000000000000000000000000".to_string(),
        "/api/v1/documents/doc/sync/not-a-session".to_string(),
        format!("/api/v1/documents/other/sync/{id}"),
    ] {
        let r = post(addr, &path, &frame(0, Some(0), &[0])).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(reason(&r), "no such session");
    }
    // The per-document connection limit counts sessions as connections.
    let (r, _) = Sse::open_with(addr, "/api/v1/documents/doc/sync", &[]).await;
    assert_eq!(r.status, 429);
    let mut s = s;
    let r = s.post(&vec![0; 2048]).await;
    assert_eq!(r.status, 413, "above --max-message-size");
    assert_eq!(s.close_event().await.json()["code"], 1009);
    server.stop().await;
}

#[tokio::test]
async fn a_session_without_messages_is_closed_at_the_handshake_timeout() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_millis(600);
    cfg.ping_interval = Duration::from_millis(100);
    let server = TestServer::start(cfg).await;
    let (_, mut sse) = Sse::open_with(server.addr, "/api/v1/documents/quiet/sync", &[]).await;
    let started = Instant::now();
    let close = sse.next_named("close").await.json();
    assert_eq!(close["code"], 4408, "{close}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(sse.ends().await);
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_sync_endpoints() {
    let server = TestServer::start(config()).await;
    let (status, body) = server.http_get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let paths = &doc["paths"];
    let open = &paths["/api/v1/documents/{name}/sync"]["get"];
    assert_eq!(open["operationId"], "openSyncSession");
    let post = &paths["/api/v1/documents/{name}/sync/{session}"]["post"];
    assert_eq!(post["operationId"], "postSyncMessages");
    assert_eq!(
        post["security"],
        json!([]),
        "the session id authorizes a POST"
    );
    server.stop().await;
}

#[tokio::test]
async fn revoking_the_user_closes_the_session_with_4403() {
    let mut cfg = token_config();
    cfg.admin_token = Some("sync-tests-admin".into());
    let server = TestServer::start(cfg).await;
    let ada = token("ada", &["doc"], "rw");
    let mut s = Session::open(server.addr, "doc", Some(&ada)).await;
    s.sync().await;
    let r = http_send(
        server.addr,
        "POST",
        "/api/v1/admin/revocations",
        &[
            ("Authorization", "Bearer sync-tests-admin"),
            ("Content-Type", "application/json"),
        ],
        br#"{"user": "ada"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let close = s.close_event().await.json();
    assert_eq!(close, json!({"code": 4403, "reason": "token revoked"}));
    let r = s.post(&frame(0, Some(0), &[0])).await;
    assert_eq!(r.status, 410);
    assert_eq!(reason(&r), "session closed: 4403 token revoked");
    server.stop().await;
}

#[tokio::test]
async fn allowed_origins_apply_when_a_request_carries_an_origin() {
    let mut cfg = config();
    cfg.allowed_origins = vec!["https://ok.example".into()];
    let server = TestServer::start(cfg).await;
    let addr = server.addr;
    let path = "/api/v1/documents/doc/sync";
    let (r, _) = Sse::open_with(addr, path, &[("Origin", "https://evil.example")]).await;
    assert_eq!(r.status, 403);
    let (r, _) = Sse::open_with(addr, path, &[("Origin", "https://ok.example")]).await;
    assert_eq!(r.status, 200);
    // A same-origin GET from a browser carries no Origin.
    let mut s = Session::open(addr, "doc", None).await;
    let headers = [("Origin", "https://evil.example")];
    let r = http_send(addr, "POST", &s.post, &headers, &frame(0, Some(0), &[0])).await;
    assert_eq!(r.status, 403, "a POST from another origin");
    let headers = [("Origin", "https://ok.example")];
    let sv = frame(0, Some(0), &[0]);
    let r = http_send(addr, "POST", &s.post, &headers, &sv).await;
    assert_eq!(r.status, 204);
    s.until(|s| s.synced).await;
    server.stop().await;
}
