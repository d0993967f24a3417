//! Token mode, through the server: refused upgrades (401/403, no document byte before a 101),
//! document grants and prefixes, the token in `Sec-WebSocket-Protocol`, read-only access,
//! authors in the log, EdDSA keys, expiry (4401), revocation (4403) and the admin API, and the
//! connection limits (429, throttling and 4429, 4408, 4409, origins).
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped.

mod common;

use common::on_every_db;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Client, Db, HttpResponse, RawWs, TestServer, WAIT, WS_KEY, awareness_frame, config, eventually,
    frame, http_request,
};
use crdt_store::{LogRow, Store};
use futures::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tandem::Config;
use tandem::config::{AuthMode, ReadOnlyAwareness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::{Text, Transact};

/// HS256 secret of the servers under test (at least 32 bytes).
const SECRET: &str = "tandem-auth-tests-hs256-secret-0123456789";
/// Another valid-looking secret: tokens signed with it must not verify.
const OTHER_SECRET: &str = "an-entirely-different-secret-0123456789ab";
/// Admin bearer token.
const ADMIN_TOKEN: &str = "admin-bearer-for-tests-7f3a9c";
/// Document content no refused client may ever see.
const CONTENT: &str = "CONFIDENTIAL-DOCUMENT-CONTENT";

/// A fixed Ed25519 test keypair (PKCS#8 / SPKI PEM), generated with `openssl genpkey`.
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDrV3P6G3GXH+sUPCo5OUBA2SC5MiYtY8H+C2Nl3Q6Cg
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAVTHkCVtEhlcOOII73OAAiBIso8dlSfNHSYO7Tu4vGmo=
-----END PUBLIC KEY-----
";
/// An Ed25519 key the server does not know.
const ED_OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDLINsZb5+JckVN9PPVcW4uhWeIaiMN7kgJlkOqSy/dt
-----END PRIVATE KEY-----
";

const REFUSED: &str = "tandem_upgrades_refused_total";
const CLOSED: &str = "tandem_connections_closed_total";
const RO_REFUSED: &str = "tandem_readonly_updates_refused_total";

// ---------------------------------------------------------------------------------------------
// Databases

/// Token mode with the HS256 secret and the admin API on, storing in `db`.
fn token_config(db: &Db) -> Config {
    let mut c = config();
    c.database_url = Some(db.url.clone());
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN_TOKEN.into());
    c
}

/// Log rows of document `name`, oldest first.
async fn log_rows(store: &Store, name: &str) -> Vec<LogRow> {
    let doc_id = store.create_document(name).await.expect("load");
    store
        .log_page(doc_id, 0, 10_000, false)
        .await
        .expect("log page")
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims for `sub`, valid for an hour, with a unique token id.
fn claims(sub: &str, docs: &[&str], access: &str) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let jti = format!("{sub}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    json!({
        "sub": sub, "name": sub, "docs": docs, "access": access,
        "exp": now() + 3600, "iat": now() - 1, "jti": jti,
    })
}

fn hs_with(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

/// A token signed with the servers' secret.
fn hs(claims: &Value) -> String {
    hs_with(SECRET, claims)
}

fn ed(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).expect("ed25519 key");
    encode(&Header::new(Algorithm::EdDSA), claims, &key).expect("encode")
}

// ---------------------------------------------------------------------------------------------
// Clients

fn with_token(url: &str, token: &str) -> String {
    format!("{url}?token={token}")
}

/// Connects with `token` in the query and completes the sync handshake.
async fn join(server: &TestServer, room: &str, token: &str) -> Client {
    Client::join(&with_token(&server.url(room), token)).await
}

/// Appends `s` to root text `text` and waits for the echo, i.e. until the server has made the
/// update durable and relayed it.
async fn write(c: &mut Client, s: &str) {
    let before = c.updates_received;
    let len = u32::try_from(c.text("text").len()).expect("len");
    c.insert("text", len, s).await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// Waits until the room has handled everything `c` sent before: the room answers a query
/// awareness (message type 3) in order with the sender's other messages.
async fn barrier(c: &mut Client) {
    let before = c.awareness_frames;
    c.send_raw(vec![3]).await;
    c.pump_until(|c| c.awareness_frames > before).await;
}

/// Sends a WebSocket upgrade for `path` by hand with `extra` headers, and returns the response
/// with every byte that followed it (until the server closed or went quiet) as the body.
async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    loop {
        let head_done = buf.windows(4).any(|w| w == b"\r\n\r\n");
        let wait = if head_done {
            Duration::from_millis(300)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let mut chunk = [0u8; 16 * 1024];
        match timeout(wait, s.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                assert!(head_done, "no response to the upgrade within {WAIT:?}");
                break;
            }
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    HttpResponse::from_head(&buf[..end], buf[end + 4..].to_vec())
}

/// The upgrade was refused with `status` before any WebSocket byte: no 101, no accept header,
/// and the body is exactly the short `reason` (no token, secret or document content).
fn assert_refused(r: &HttpResponse, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.header("sec-websocket-accept").is_none(), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.body), reason, "{r:?}");
    let all = format!("{:?}", r.headers);
    for secret in [SECRET, ADMIN_TOKEN, CONTENT] {
        assert!(!all.contains(secret), "response leaks {secret:?}: {r:?}");
    }
}

/// Sends one admin API request; returns the status, the JSON body and the raw response.
async fn admin(
    addr: SocketAddr,
    method: &str,
    bearer: Option<&str>,
    body: &Value,
) -> (u16, Value, HttpResponse) {
    let body = body.to_string();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} /api/v1/admin/revocations HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{auth}\r\n\
         {body}",
        body.len()
    );
    let r = http_request(addr, &req).await;
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json, r)
}

// ---------------------------------------------------------------------------------------------
// Refusals: no unauthorized read

#[tokio::test]
async fn refused_upgrades_get_401_or_403_and_not_a_byte_of_the_document() {
    on_every_db!(
        "refused_upgrades_get_401_or_403_and_not_a_byte_of_the_document",
        refusals
    );
}

async fn refusals(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let room = "secret-plan";
    let mut owner = join(&server, room, &hs(&claims("owner", &[room], "rw"))).await;
    write(&mut owner, CONTENT).await;

    let path = format!("/{room}");
    let good = claims("mallory", &[room], "rw");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 600);
    let mut no_docs = good.clone();
    no_docs.as_object_mut().expect("object").remove("docs");
    // Claims granting the room, signed with another secret, grafted onto the signature of a
    // genuine token for another document: the signature covers the claims.
    let genuine_other = hs(&claims("mallory", &["other-doc"], "rw"));
    let forged = hs_with(OTHER_SECRET, &good);
    let (forged_body, _) = forged.rsplit_once('.').expect("jwt");
    let (_, genuine_sig) = genuine_other.rsplit_once('.').expect("jwt");
    let grafted = format!("{forged_body}.{genuine_sig}");
    // `alg: none` with the genuine claims and no signature.
    let payload = hs(&good).split('.').nth(1).expect("payload").to_string();
    let alg_none = format!("eyJhbGciOiJub25lIn0.{payload}.");

    let q = |t: &str| format!("{path}?token={t}");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no token", path.clone(), 401, "missing token"),
        ("empty token", q(""), 401, "missing token"),
        ("garbage", q("garbage"), 401, "malformed token"),
        (
            "jwt-shaped garbage",
            q("abc.def.ghi"),
            401,
            "malformed token",
        ),
        (
            "claims without docs",
            q(&hs(&no_docs)),
            401,
            "malformed token",
        ),
        ("alg none", q(&alg_none), 401, "malformed token"),
        (
            "other secret",
            q(&hs_with(OTHER_SECRET, &good)),
            401,
            "invalid token signature",
        ),
        (
            "grafted signature",
            q(&grafted),
            401,
            "invalid token signature",
        ),
        ("expired", q(&hs(&expired)), 401, "token expired"),
        (
            "wrong document",
            q(&genuine_other),
            403,
            "token does not grant this document",
        ),
    ];
    for (what, path, status, reason) in &cases {
        let r = raw_upgrade(server.addr, path, &[]).await;
        assert!(r.status != 101, "{what}: upgraded");
        assert_refused(&r, *status, reason);
    }
    for (label, n) in [
        ("missing", 2.0),
        ("malformed", 4.0),
        ("bad_signature", 2.0),
        ("expired", 1.0),
        ("wrong_document", 1.0),
    ] {
        let labels = format!("reason=\"{label}\"");
        server.wait_metric(REFUSED, &labels, n).await;
    }

    // A client library sees the refusal as an HTTP error with the status, never a socket.
    match connect_async(server.url(room)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
            let body = response.body().clone().unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&body), "missing token");
        }
        Err(e) => panic!("expected an HTTP 401, got {e}"),
        Ok(_) => panic!("upgraded without a token"),
    }
    // The owner was never disturbed.
    write(&mut owner, "!").await;
    assert_eq!(owner.text("text"), format!("{CONTENT}!"));
    server.stop().await;
}

#[tokio::test]
async fn prefix_grants_cover_names_under_the_prefix_only() {
    on_every_db!(
        "prefix_grants_cover_names_under_the_prefix_only",
        prefix_grants
    );
}

async fn prefix_grants(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let team = hs(&claims("teammate", &["team/*", "notes"], "rw"));
    for room in ["team/x", "team/deeper/still", "notes"] {
        let mut c = join(&server, room, &team).await;
        write(&mut c, room).await;
        assert_eq!(c.text("text"), room);
    }
    for room in ["teamx", "team", "other/team/x", "notes/2", "note"] {
        let r = raw_upgrade(server.addr, &format!("/{room}?token={team}"), &[]).await;
        assert_refused(&r, 403, "token does not grant this document");
    }
    // `*` alone grants every document.
    let everything = hs(&claims("root", &["*"], "rw"));
    let mut c = join(&server, "anything/at/all", &everything).await;
    write(&mut c, "ok").await;
    server.stop().await;
}

#[tokio::test]
async fn token_in_sec_websocket_protocol_is_accepted_and_a_protocol_selected() {
    on_every_db!(
        "token_in_sec_websocket_protocol_is_accepted_and_a_protocol_selected",
        protocol_token
    );
}

async fn protocol_token(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let room = "proto-doc";
    let token = hs(&claims("ada", &[room], "rw"));

    // `new WebSocket(url, [token])`: the server must select the token itself, or the client
    // fails the handshake (it offered a protocol and got none back).
    let mut req = server.url(room).into_client_request().expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", token.parse().expect("header"));
    let (ws, response) = connect_async(req).await.expect("upgrade with the token");
    let selected = response.headers().get("sec-websocket-protocol");
    assert_eq!(selected.and_then(|v| v.to_str().ok()), Some(token.as_str()));
    let mut a = Client::from_ws(ws);
    a.sync().await;
    write(&mut a, "via protocol").await;

    // `new WebSocket(url, ["tandem", token])`: "tandem" is selected, the token not echoed.
    let mut req = server.url(room).into_client_request().expect("request");
    let offered = format!("tandem, {token}");
    req.headers_mut()
        .insert("sec-websocket-protocol", offered.parse().expect("header"));
    let (ws, response) = connect_async(req)
        .await
        .expect("upgrade with tandem + token");
    let selected = response.headers().get("sec-websocket-protocol");
    assert_eq!(selected.and_then(|v| v.to_str().ok()), Some("tandem"));
    let mut b = Client::from_ws(ws);
    b.sync().await;
    assert_eq!(b.text("text"), "via protocol");

    // A bad token in the protocol header is refused like one in the query.
    let bad = hs_with(OTHER_SECRET, &claims("ada", &[room], "rw"));
    let path = format!("/{room}");
    let r = raw_upgrade(server.addr, &path, &[("Sec-WebSocket-Protocol", &bad)]).await;
    assert_refused(&r, 401, "invalid token signature");
    let other = hs(&claims("ada", &["elsewhere"], "rw"));
    let offered = format!("tandem, {other}");
    let r = raw_upgrade(server.addr, &path, &[("Sec-WebSocket-Protocol", &offered)]).await;
    assert_refused(&r, 403, "token does not grant this document");
    // Protocols that are not JWT-shaped are not tokens.
    let r = raw_upgrade(server.addr, &path, &[("Sec-WebSocket-Protocol", "tandem")]).await;
    assert_refused(&r, 401, "missing token");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Access levels and authors

#[tokio::test]
async fn read_only_writes_are_not_relayed_or_logged_and_the_reader_stays_connected() {
    on_every_db!(
        "read_only_writes_are_not_relayed_or_logged_and_the_reader_stays_connected",
        read_only_writes
    );
}

async fn read_only_writes(db: &Db) {
    let store = db.store().await;
    let server = TestServer::start(token_config(db)).await;
    let room = "ro-doc";
    let mut writer = join(&server, room, &hs(&claims("alice", &[room], "rw"))).await;
    write(&mut writer, "hello").await;
    let mut reader = join(&server, room, &hs(&claims("rita", &[room], "ro"))).await;
    assert_eq!(reader.text("text"), "hello");
    // Joining sent the reader's (empty) SyncStep2; that is not a write.
    barrier(&mut reader).await;
    assert_eq!(server.metric(RO_REFUSED, "").await, 0.0);
    let rows_before = log_rows(&store, room).await.len();
    assert_eq!(rows_before, 1);

    let before = reader.updates_received;
    reader.insert("text", 0, "EVIL").await;
    server.wait_metric(RO_REFUSED, "", 1.0).await;
    barrier(&mut reader).await;
    assert_eq!(
        reader.updates_received, before,
        "the refused update was echoed"
    );

    // The writer's next update is durable once it is echoed; the reader's never was logged.
    write(&mut writer, " world").await;
    assert_eq!(writer.text("text"), "hello world");
    let rows = log_rows(&store, room).await;
    assert_eq!(rows.len(), rows_before + 1, "{rows:?}");
    assert!(rows.iter().all(|r| r.author.as_deref() == Some("alice")));

    // The reader is still connected and still receives writes.
    reader
        .pump_until(|c| c.text("text").contains("world"))
        .await;
    assert!(reader.closed.is_none());
    // A late joiner sees only what was accepted.
    let mut late = join(&server, room, &hs(&claims("lee", &[room], "ro"))).await;
    assert_eq!(late.text("text"), "hello world");
    barrier(&mut late).await;
    assert_eq!(server.metric(RO_REFUSED, "").await, 1.0);

    // A reader reconnecting with a synced document that saw deletions answers SyncStep1 with
    // the whole delete set: nothing new, so not counted either.
    let before = late.updates_received;
    let delete = {
        // The root type is fetched before the transaction: yrs deadlocks otherwise.
        let text = writer.doc.get_or_insert_text("text");
        let mut txn = writer.doc.transact_mut();
        text.remove_range(&mut txn, 0, 1);
        txn.encode_update_v1()
    };
    writer.send_raw(frame(0, Some(2), &delete)).await;
    late.pump_until(|c| c.updates_received > before).await;
    assert_eq!(late.text("text"), "ello world");
    late.close().await;
    let url = with_token(&server.url(room), &hs(&claims("lee", &[room], "ro")));
    let (ws, _) = connect_async(&url).await.expect("reconnect");
    let mut again = Client::from_ws(ws);
    again.doc = std::mem::take(&mut late.doc);
    again.sync().await;
    barrier(&mut again).await;
    assert_eq!(server.metric(RO_REFUSED, "").await, 1.0);
    // Nothing was refused before the upgrade.
    assert_eq!(server.metric(REFUSED, "").await, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn read_only_awareness_is_relayed_by_default() {
    on_every_db!(
        "read_only_awareness_is_relayed_by_default",
        read_only_awareness_relayed
    );
}

async fn read_only_awareness_relayed(db: &Db) {
    read_only_awareness(db, ReadOnlyAwareness::Relay).await;
}

#[tokio::test]
async fn read_only_awareness_is_dropped_with_readonly_awareness_drop() {
    on_every_db!(
        "read_only_awareness_is_dropped_with_readonly_awareness_drop",
        read_only_awareness_dropped
    );
}

async fn read_only_awareness_dropped(db: &Db) {
    read_only_awareness(db, ReadOnlyAwareness::Drop).await;
}

async fn read_only_awareness(db: &Db, mode: ReadOnlyAwareness) {
    let mut config = token_config(db);
    config.readonly_awareness = mode;
    let server = TestServer::start(config).await;
    let room = "ro-awareness";
    let mut writer = join(&server, room, &hs(&claims("alice", &[room], "rw"))).await;
    let mut reader = join(&server, room, &hs(&claims("rita", &[room], "ro"))).await;
    let (ws, rs) = (r#"{"user":"alice"}"#, r#"{"user":"rita"}"#);

    reader.set_awareness(201, 1, rs).await;
    // Handled once the reader's later query is answered.
    barrier(&mut reader).await;
    writer.set_awareness(101, 1, ws).await;
    writer
        .pump_until(|c| c.awareness_state(101) == Some(ws))
        .await;
    // The reader always sees the writer's presence.
    reader
        .pump_until(|c| c.awareness_state(101) == Some(ws))
        .await;
    match mode {
        ReadOnlyAwareness::Relay => {
            assert_eq!(writer.awareness_state(201), Some(rs));
            assert_eq!(reader.awareness_state(201), Some(rs));
        }
        ReadOnlyAwareness::Drop => {
            assert!(
                !writer.awareness.contains_key(&201),
                "{:?}",
                writer.awareness
            );
            assert!(
                !reader.awareness.contains_key(&201),
                "{:?}",
                reader.awareness
            );
            // Nor is it handed to joiners.
            let mut late = join(&server, room, &hs(&claims("lee", &[room], "rw"))).await;
            barrier(&mut late).await;
            assert_eq!(late.awareness_state(101), Some(ws));
            assert!(!late.awareness.contains_key(&201), "{:?}", late.awareness);
        }
    }
    assert!(reader.closed.is_none());
    server.stop().await;
}

#[tokio::test]
async fn read_write_updates_are_logged_with_the_token_sub_as_author() {
    on_every_db!(
        "read_write_updates_are_logged_with_the_token_sub_as_author",
        authors
    );
}

async fn authors(db: &Db) {
    let store = db.store().await;
    let server = TestServer::start(token_config(db)).await;
    let room = "authored";
    let mut alice = join(&server, room, &hs(&claims("alice", &[room], "rw"))).await;
    let mut bob = join(&server, room, &hs(&claims("bob", &["auth*"], "rw"))).await;
    write(&mut alice, "a1").await;
    write(&mut alice, "a2").await;
    bob.pump_until(|c| c.text("text") == "a1a2").await;
    write(&mut bob, "b1").await;
    alice.pump_until(|c| c.text("text") == "a1a2b1").await;
    let authors: Vec<Option<String>> = log_rows(&store, room)
        .await
        .into_iter()
        .map(|r| r.author)
        .collect();
    let expected = ["alice", "alice", "bob"].map(|s| Some(s.to_string()));
    assert_eq!(authors, expected);
    server.stop().await;
}

#[tokio::test]
async fn eddsa_public_key_verifies_tokens() {
    on_every_db!("eddsa_public_key_verifies_tokens", eddsa);
}

async fn eddsa(db: &Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("jwt.pub.pem");
    std::fs::write(&key_file, ED_PUBLIC).expect("write key");
    let mut config = token_config(db);
    config.jwt_secret = None;
    config.jwt_public_key_file = Some(key_file);
    let store = db.store().await;
    let server = TestServer::start(config).await;
    let room = "ed-doc";

    let mut c = join(
        &server,
        room,
        &ed(ED_PRIVATE, &claims("edna", &[room], "rw")),
    )
    .await;
    write(&mut c, "signed with ed25519").await;
    let rows = log_rows(&store, room).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].author.as_deref(), Some("edna"));

    let path = |t: &str| format!("/{room}?token={t}");
    let foreign = ed(ED_OTHER_PRIVATE, &claims("edna", &[room], "rw"));
    let r = raw_upgrade(server.addr, &path(&foreign), &[]).await;
    assert_refused(&r, 401, "invalid token signature");
    // No HS256 secret is configured: an HS256 token, whatever its key, is not accepted.
    let hs256 = hs(&claims("edna", &[room], "rw"));
    let r = raw_upgrade(server.addr, &path(&hs256), &[]).await;
    assert_refused(&r, 401, "invalid token signature");
    let wrong_doc = ed(ED_PRIVATE, &claims("edna", &["other"], "rw"));
    let r = raw_upgrade(server.addr, &path(&wrong_doc), &[]).await;
    assert_refused(&r, 403, "token does not grant this document");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Expiry and revocation

#[tokio::test]
async fn token_expiry_closes_a_live_connection_with_4401() {
    on_every_db!("token_expiry_closes_a_live_connection_with_4401", expiry);
}

async fn expiry(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let room = "expiring";
    // The server tolerates 5 s of clock skew on `exp`, at connect and while connected alike:
    // a token whose `exp` was 3 s ago is good for 1 to 2 s more.
    let mut short = claims("sam", &[room], "rw");
    short["exp"] = json!(now() - 3);
    let token = hs(&short);
    let started = Instant::now();
    let mut c = join(&server, room, &token).await;
    write(&mut c, "before expiry").await;
    let mut other = join(&server, room, &hs(&claims("olga", &[room], "rw"))).await;

    assert_eq!(c.expect_close().await, Some(4401));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed early: {after:?}"
    );
    assert!(after < Duration::from_secs(4), "closed late: {after:?}");
    server
        .wait_metric(CLOSED, "reason=\"token_expired\"", 1.0)
        .await;
    // Once it closed, the token gets no new connection: refused before the upgrade, not
    // upgraded and then closed again.
    let r = raw_upgrade(server.addr, &format!("/{room}?token={token}"), &[]).await;
    assert_refused(&r, 401, "token expired");
    // Others are unaffected.
    write(&mut other, " after").await;
    assert_eq!(other.text("text"), "before expiry after");
    server.stop().await;
}

#[tokio::test]
async fn revoking_a_token_id_closes_its_connections_at_once_and_refuses_it_until_lifted() {
    on_every_db!(
        "revoking_a_token_id_closes_its_connections_at_once_and_refuses_it_until_lifted",
        revoke_token
    );
}

async fn revoke_token(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let room = "revocable";
    let victim_claims = claims("vic", &[room], "rw");
    let jti = victim_claims["jti"].as_str().expect("jti").to_string();
    let victim_token = hs(&victim_claims);
    let mut victim = join(&server, room, &victim_token).await;
    // Same user, another token: revoking a token id leaves it alone.
    let mut sibling = join(&server, room, &hs(&claims("vic", &[room], "rw"))).await;
    let mut bystander = join(&server, room, &hs(&claims("bea", &[room], "rw"))).await;
    write(&mut victim, "v").await;

    let started = Instant::now();
    let (status, body, _) = admin(
        server.addr,
        "POST",
        Some(ADMIN_TOKEN),
        &json!({ "token_id": jti }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "revoked": true, "connections_closed": 1 }));
    assert_eq!(victim.expect_close().await, Some(4403));
    assert!(started.elapsed() < Duration::from_secs(2), "not at once");
    server.wait_metric(CLOSED, "reason=\"revoked\"", 1.0).await;

    write(&mut sibling, "s").await;
    write(&mut bystander, "b").await;
    assert!(sibling.closed.is_none() && bystander.closed.is_none());

    let path = format!("/{room}?token={victim_token}");
    let r = raw_upgrade(server.addr, &path, &[]).await;
    assert_refused(&r, 401, "token revoked");
    server.wait_metric(REFUSED, "reason=\"revoked\"", 1.0).await;

    let (status, body, _) = admin(
        server.addr,
        "DELETE",
        Some(ADMIN_TOKEN),
        &json!({ "token_id": jti }),
    )
    .await;
    assert_eq!((status, body), (200, json!({ "lifted": true })));
    let mut back = join(&server, room, &victim_token).await;
    let mut letters: Vec<char> = back.text("text").chars().collect();
    letters.sort_unstable();
    assert_eq!(letters, ['b', 's', 'v']);
    write(&mut back, "!").await;
    let (status, body, _) = admin(
        server.addr,
        "DELETE",
        Some(ADMIN_TOKEN),
        &json!({ "token_id": jti }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["status"], 404);
    server.stop().await;
}

#[tokio::test]
async fn revoking_a_user_closes_all_its_connections_and_refuses_its_older_tokens() {
    on_every_db!(
        "revoking_a_user_closes_all_its_connections_and_refuses_its_older_tokens",
        revoke_user
    );
}

async fn revoke_user(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let old_token = hs(&claims("ursula", &["u/*"], "rw"));
    let mut u1 = join(&server, "u/one", &old_token).await;
    let mut u2 = join(&server, "u/two", &hs(&claims("ursula", &["u/*"], "ro"))).await;
    let mut other = join(&server, "u/one", &hs(&claims("otto", &["u/*"], "rw"))).await;

    let (status, body, _) = admin(
        server.addr,
        "POST",
        Some(ADMIN_TOKEN),
        &json!({ "user": "ursula" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connections_closed"], 2);
    assert_eq!(u1.expect_close().await, Some(4403));
    assert_eq!(u2.expect_close().await, Some(4403));
    write(&mut other, "still here").await;

    let r = raw_upgrade(server.addr, &format!("/u/one?token={old_token}"), &[]).await;
    assert_refused(&r, 401, "token revoked");
    // A token issued after the revocation is accepted.
    let mut fresh = claims("ursula", &["u/*"], "rw");
    fresh["iat"] = json!(now() + 1);
    let mut again = join(&server, "u/one", &hs(&fresh)).await;
    assert_eq!(again.text("text"), "still here");
    write(&mut again, "!").await;

    let (status, _, _) = admin(
        server.addr,
        "DELETE",
        Some(ADMIN_TOKEN),
        &json!({ "user": "ursula" }),
    )
    .await;
    assert_eq!(status, 200);
    join(&server, "u/one", &old_token).await;
    server.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_bearer_token_and_is_off_without_one() {
    on_every_db!(
        "admin_api_needs_the_bearer_token_and_is_off_without_one",
        admin_auth
    );
}

async fn admin_auth(db: &Db) {
    let server = TestServer::start(token_config(db)).await;
    let room = "admin-doc";
    let c = claims("carl", &[room], "rw");
    let jti = c["jti"].as_str().expect("jti").to_string();
    let token = hs(&c);
    let mut carl = join(&server, room, &token).await;
    let revoke = json!({ "token_id": jti });
    for bearer in [None, Some("wrong"), Some(""), Some(&ADMIN_TOKEN[..10])] {
        for method in ["POST", "DELETE"] {
            let (status, body, raw) = admin(server.addr, method, bearer, &revoke).await;
            assert_eq!(status, 401, "{method} {bearer:?}: {body}");
            assert_eq!(
                body,
                json!({ "status": 401, "reason": "missing or invalid admin token" })
            );
            assert_eq!(raw.header("www-authenticate"), Some("Bearer"));
            let text = String::from_utf8_lossy(&raw.body);
            assert!(!text.contains(ADMIN_TOKEN));
        }
    }
    // Another scheme carrying the right secret is still not a bearer token.
    let body = revoke.to_string();
    let req = format!(
        "POST /api/v1/admin/revocations HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    assert_eq!(http_request(server.addr, &req).await.status, 401);
    // None of that revoked anything.
    write(&mut carl, "alive").await;
    join(&server, room, &token).await;
    // Right token, bad body: 400 JSON.
    let (status, body, _) = admin(server.addr, "POST", Some(ADMIN_TOKEN), &json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], 400);
    server.stop().await;

    // Without an admin token configured the API does not exist, whatever is presented.
    let mut config = token_config(db);
    config.admin_token = None;
    let server = TestServer::start(config).await;
    for bearer in [None, Some(ADMIN_TOKEN), Some("")] {
        let (status, body, _) = admin(server.addr, "POST", bearer, &revoke).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["status"], 404);
    }
    join(&server, room, &token).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn per_document_limit_refuses_the_third_connection_with_429() {
    on_every_db!(
        "per_document_limit_refuses_the_third_connection_with_429",
        per_doc_limit
    );
}

async fn per_doc_limit(db: &Db) {
    let mut config = token_config(db);
    config.max_conns_per_doc = 2;
    let server = TestServer::start(config).await;
    let token = hs(&claims("pat", &["*"], "rw"));
    let mut a = join(&server, "crowded", &token).await;
    let _b = join(&server, "crowded", &token).await;
    let r = raw_upgrade(server.addr, &format!("/crowded?token={token}"), &[]).await;
    assert_refused(&r, 429, "too many connections to this document");
    server
        .wait_metric(REFUSED, "reason=\"per_doc_limit\"", 1.0)
        .await;
    // Another document is not affected.
    let _c = join(&server, "roomy", &token).await;
    // A place frees when a connection ends.
    a.close().await;
    let url = with_token(&server.url("crowded"), &token);
    eventually("a freed place is reusable", || async {
        connect_async(&url).await.is_ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn per_address_limit_refuses_the_third_connection_with_429() {
    on_every_db!(
        "per_address_limit_refuses_the_third_connection_with_429",
        per_addr_limit
    );
}

async fn per_addr_limit(db: &Db) {
    let mut config = token_config(db);
    config.max_conns_per_ip = 2;
    let server = TestServer::start(config).await;
    let token = hs(&claims("pat", &["*"], "rw"));
    // Every test client is 127.0.0.1, whatever the document.
    let mut a = join(&server, "one", &token).await;
    let _b = join(&server, "two", &token).await;
    let r = raw_upgrade(server.addr, &format!("/three?token={token}"), &[]).await;
    assert_refused(&r, 429, "too many connections from this address");
    server
        .wait_metric(REFUSED, "reason=\"per_addr_limit\"", 1.0)
        .await;
    // Plain HTTP is not limited.
    assert_eq!(server.http_get("/healthz").await.0, 200);
    a.close().await;
    let url = with_token(&server.url("three"), &token);
    eventually("a freed place is reusable", || async {
        connect_async(&url).await.is_ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn message_flood_is_throttled_and_only_a_frame_above_the_burst_closes_with_4429() {
    on_every_db!(
        "message_flood_is_throttled_and_only_a_frame_above_the_burst_closes_with_4429",
        flood
    );
}

/// A connection above its message rate used to be closed with 4429 (final for y-websocket 3);
/// now it is throttled (not read until its budget refills) and loses nothing. Only one frame
/// holding more messages than the whole burst is closed with 4429.
async fn flood(db: &Db) {
    let mut config = token_config(db);
    config.max_messages_per_sec = 25;
    config.message_burst = 25;
    let server = TestServer::start(config).await;
    let room = "flooded";
    let token = hs(&claims("fred", &[room], "rw"));
    let mut calm = join(&server, room, &token).await;
    let mut flooder = join(&server, room, &token).await;
    // Twice the burst, back to back: the second half is throttled to 25/s, not refused.
    for clock in 1..=50 {
        let msg = Message::binary(awareness_frame(&[(777, clock, "{}")]));
        flooder.ws.send(msg).await.expect("flooder still connected");
    }
    calm.pump_until(|c| c.awareness.get(&777).map(|(clock, _)| *clock) == Some(50))
        .await;
    assert!(
        server
            .metric("tandem_connections_throttled_total", "")
            .await
            >= 1.0
    );
    flooder.pump_for(Duration::from_millis(100)).await;
    assert!(flooder.closed.is_none(), "{:?}", flooder.closed);

    // One frame of 26 messages (> burst 25) is abuse: 4429.
    let abusive: Vec<u8> = (51..=76)
        .flat_map(|clock| awareness_frame(&[(777, clock, "{}")]))
        .collect();
    flooder
        .ws
        .send(Message::binary(abusive))
        .await
        .expect("send");
    assert_eq!(flooder.expect_close().await, Some(4429));
    server
        .wait_metric(CLOSED, "reason=\"rate_limited\"", 1.0)
        .await;
    // The calm client in the same room is unaffected.
    write(&mut calm, "still").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    write(&mut calm, " working").await;
    assert_eq!(calm.text("text"), "still working");
    assert!(calm.closed.is_none());
    server.stop().await;
}

#[tokio::test]
async fn silent_client_after_the_upgrade_is_closed_with_4408() {
    on_every_db!(
        "silent_client_after_the_upgrade_is_closed_with_4408",
        handshake_timeout
    );
}

async fn handshake_timeout(db: &Db) {
    let mut config = token_config(db);
    config.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let room = "patient";
    let token = hs(&claims("sid", &[room], "rw"));
    // A client that syncs at once is not affected.
    let mut prompt = join(&server, room, &token).await;
    let started = Instant::now();
    let mut silent = RawWs::connect(server.addr, &format!("/{room}?token={token}")).await;
    assert_eq!(silent.expect_close().await, Some(4408));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(250),
        "closed early: {after:?}"
    );
    server
        .wait_metric(CLOSED, "reason=\"handshake_timeout\"", 1.0)
        .await;
    write(&mut prompt, "fine").await;
    server.stop().await;
}

#[tokio::test]
async fn idle_client_is_closed_with_4409_though_pongs_flow() {
    on_every_db!(
        "idle_client_is_closed_with_4409_though_pongs_flow",
        idle_timeout
    );
}

async fn idle_timeout(db: &Db) {
    let mut config = token_config(db);
    config.idle_timeout = Duration::from_millis(500);
    config.ping_interval = Duration::from_millis(100);
    config.ping_timeout = Duration::from_secs(3);
    let server = TestServer::start(config).await;
    let room = "idle";
    let token = hs(&claims("ida", &[room], "rw"));
    let mut c = join(&server, room, &token).await;
    // Messages keep it open well past the idle timeout.
    let started = Instant::now();
    let mut last_sent = started;
    for clock in 1..=6 {
        c.set_awareness(55, clock, "{}").await;
        last_sent = Instant::now();
        c.pump_for(Duration::from_millis(200)).await;
        assert!(c.closed.is_none(), "closed while active: {:?}", c.closed);
    }
    assert!(started.elapsed() >= Duration::from_millis(1000));
    // Then silence: only pongs (answered while reading) go out, and they do not count.
    assert_eq!(c.expect_close().await, Some(4409));
    let after = last_sent.elapsed();
    assert!(
        after >= Duration::from_millis(450),
        "closed early: {after:?}"
    );
    assert!(
        after < Duration::from_secs(3),
        "not the idle timeout: {after:?}"
    );
    server
        .wait_metric(CLOSED, "reason=\"idle_timeout\"", 1.0)
        .await;
    assert_eq!(server.metric(CLOSED, "reason=\"ping_timeout\"").await, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn allowed_origins_refuse_other_origins_with_403() {
    on_every_db!("allowed_origins_refuse_other_origins_with_403", origins);
}

async fn origins(db: &Db) {
    let mut config = token_config(db);
    config.allowed_origins = vec!["https://ok.example".into()];
    let server = TestServer::start(config).await;
    let room = "origin-doc";
    let token = hs(&claims("otis", &[room], "rw"));
    let path = format!("/{room}?token={token}");
    for origin in [
        Some("https://evil.example"),
        Some("https://ok.example.evil"),
        Some("http://ok.example"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let r = raw_upgrade(server.addr, &path, &headers).await;
        assert_refused(&r, 403, "origin not allowed");
    }
    server.wait_metric(REFUSED, "reason=\"origin\"", 4.0).await;
    // The origin is checked before the token: a bad origin learns nothing about the token.
    let r = raw_upgrade(
        server.addr,
        &format!("/{room}?token=garbage"),
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_refused(&r, 403, "origin not allowed");

    let mut req = with_token(&server.url(room), &token)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", "https://ok.example".parse().expect("header"));
    let (ws, _) = connect_async(req).await.expect("allowed origin upgrades");
    let mut c = Client::from_ws(ws);
    c.sync().await;
    write(&mut c, "from ok.example").await;
    server.stop().await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    on_every_db!("revocations_survive_a_restart", revocations_persist);
}

async fn revocations_persist(db: &Db) {
    let room = "persisted-revocation";
    let token_claims = claims("keeper", &[room], "rw");
    let jti = token_claims["jti"].as_str().expect("jti").to_string();
    let token = hs(&token_claims);
    let user_token = hs(&claims("gone-user", &[room], "rw"));

    let server = TestServer::start(token_config(db)).await;
    for body in [json!({ "token_id": jti }), json!({ "user": "gone-user" })] {
        let (status, reply, _) = admin(server.addr, "POST", Some(ADMIN_TOKEN), &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    server.stop().await;

    // A fresh process on the same database still refuses both.
    let server = TestServer::start(token_config(db)).await;
    let r = raw_upgrade(server.addr, &format!("/{room}?token={token}"), &[]).await;
    assert_refused(&r, 401, "token revoked");
    let r = raw_upgrade(server.addr, &format!("/{room}?token={user_token}"), &[]).await;
    assert_refused(&r, 401, "token revoked");
    // Lifting is stored too.
    let (status, reply, _) = admin(
        server.addr,
        "DELETE",
        Some(ADMIN_TOKEN),
        &json!({ "token_id": jti }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    server.stop().await;
    let server = TestServer::start(token_config(db)).await;
    let mut c = join(&server, room, &token).await;
    write(&mut c, "back").await;
    server.stop().await;
}
