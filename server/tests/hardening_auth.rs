//! Hardening of who may open what (issue 10, items 7 and 9), through real servers on port 0:
//!
//! - token claims at the edges: `nbf` in the future, a `crit` header, `aud` with and without
//!   `--jwt-audience`, `exp` / `iat` near `u64::MAX` (a panic before): each is refused before
//!   the upgrade with 401 and its own reason, counted in `tandem_upgrades_refused_total`, and
//!   the server keeps serving everyone else;
//! - `--allowed-origins` entries with spaces are trimmed (`'a, b'` admits `b`), empty or
//!   malformed entries stop the start-up with a clear error;
//! - distinct URL paths are distinct documents: `/a%2Fb` is not `/a/b`, and a grant of
//!   `team/*` does not open `/team%2Fsecret` (a proxy rule guarding `/team/` could not be
//!   bypassed that way either).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, HttpResponse, TestServer, config, http_request};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tandem::Config;
use tandem::config::AuthMode;

const SECRET: &str = "tandem-hardening-auth-hs256-secret-012345";
const REFUSED: &str = "tandem_upgrades_refused_total";
const CONTENT: &str = "only-for-the-team";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token_config() -> Config {
    let mut c = config();
    c.database_url = Some("memory".into());
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c
}

fn sign(header: Header, claims: &Value) -> String {
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode token")
}

/// A read-write token for `docs`, with `extra` claims merged in.
fn token_with(docs: &[&str], extra: Value) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut claims = json!({
        "sub": "u", "docs": docs, "access": "rw", "exp": now() + 3600,
        "jti": format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    sign(Header::new(Algorithm::HS256), &claims)
}

/// A raw upgrade of `path` with extra header lines (each ending in `\r\n`).
async fn upgrade(server: &TestServer, path: &str, headers: &str) -> HttpResponse {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n",
        server.addr,
        common::WS_KEY
    );
    http_request(server.addr, &request).await
}

fn body(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Asserts a refusal with `status` and a body containing `reason`.
fn assert_refused(r: &HttpResponse, status: u16, reason: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", body(r));
    assert!(
        body(r).contains(reason),
        "{what}: expected {reason:?} in {:?}",
        body(r)
    );
}

/// The server still serves: a valid client writes and another reads it back.
async fn still_serves(server: &TestServer, doc: &str) {
    let (status, _) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    let url = |t: String| format!("ws://{}/{doc}?token={t}", server.addr);
    let mut a = Client::join(&url(token_with(&[doc], json!({})))).await;
    a.insert("text", 0, "still here").await;
    a.pump_until(|c| c.updates_received == 1).await;
    let b = Client::join(&url(token_with(&[doc], json!({})))).await;
    assert_eq!(b.text("text"), "still here");
}

#[tokio::test]
async fn token_edge_cases_get_their_own_401_and_the_server_stays_up() {
    let server = TestServer::start(token_config()).await;
    let doc = "d";
    let path = |t: &str| format!("/{doc}?token={t}");

    // nbf in the future (beyond the 5 s leeway) is refused; within the leeway it is accepted.
    let later = token_with(&[doc], json!({ "nbf": now() + 120 }));
    let r = upgrade(&server, &path(&later), "").await;
    assert_refused(&r, 401, "token not yet valid", "nbf in 2 minutes");
    let skewed = token_with(&[doc], json!({ "nbf": now() + 2 }));
    assert_eq!(upgrade(&server, &path(&skewed), "").await.status, 101);

    // A header with critical extensions nobody here implements.
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["b64".into()]);
    header.extras.insert("b64", false);
    let crit = sign(
        header,
        &json!({"docs": [doc], "access": "rw", "exp": now() + 60}),
    );
    let r = upgrade(&server, &path(&crit), "").await;
    assert_refused(&r, 401, "critical header", "crit header");

    // Without --jwt-audience an aud claim is not checked (it used to be refused as a bad
    // signature).
    let aud = token_with(&[doc], json!({ "aud": "https://idp.example/other" }));
    assert_eq!(upgrade(&server, &path(&aud), "").await.status, 101);

    // Times near u64::MAX: a panic of the request before; now a 401 with a reason.
    for (what, extra) in [
        ("exp u64::MAX", json!({ "exp": u64::MAX })),
        ("exp u64::MAX - 1", json!({ "exp": u64::MAX - 1 })),
        ("iat u64::MAX", json!({ "iat": u64::MAX })),
        ("exp beyond 9999", json!({ "exp": 253_402_300_800u64 })),
    ] {
        let t = token_with(&[doc], extra);
        let r = upgrade(&server, &path(&t), "").await;
        assert_refused(&r, 401, "token time claim out of range", what);
    }

    for (label, n) in [
        ("not_yet_valid", 1.0),
        ("critical_header", 1.0),
        ("time_out_of_range", 4.0),
    ] {
        server
            .wait_metric(REFUSED, &format!("reason=\"{label}\""), n)
            .await;
    }
    still_serves(&server, doc).await;
    server.stop().await;
}

#[tokio::test]
async fn jwt_audience_when_set_must_match() {
    let mut c = token_config();
    c.jwt_audience = Some("tandem-prod".into());
    let server = TestServer::start(c).await;
    let doc = "aud-doc";
    let path = |t: &str| format!("/{doc}?token={t}");

    let right = token_with(&[doc], json!({ "aud": "tandem-prod" }));
    assert_eq!(upgrade(&server, &path(&right), "").await.status, 101);
    let among = token_with(&[doc], json!({ "aud": ["billing", "tandem-prod"] }));
    assert_eq!(upgrade(&server, &path(&among), "").await.status, 101);

    let other = token_with(&[doc], json!({ "aud": "billing" }));
    let r = upgrade(&server, &path(&other), "").await;
    assert_refused(&r, 401, "token audience does not match", "other aud");
    let none = token_with(&[doc], json!({}));
    let r = upgrade(&server, &path(&none), "").await;
    assert_refused(&r, 401, "token audience does not match", "no aud");
    server
        .wait_metric(REFUSED, "reason=\"wrong_audience\"", 2.0)
        .await;
    // Not reported as a signature problem any more.
    assert_eq!(
        server.metric(REFUSED, "reason=\"bad_signature\"").await,
        0.0
    );
    server.stop().await;
}

#[tokio::test]
async fn allowed_origins_are_trimmed_and_other_origins_refused() {
    let mut c = config();
    c.database_url = Some("memory".into());
    // As `--allowed-origins 'https://a.example, https://b.example'` splits it.
    c.allowed_origins = vec!["https://a.example".into(), " https://b.example".into()];
    let server = TestServer::start(c).await;
    for origin in [
        "https://a.example",
        "https://b.example",
        "https://B.example",
    ] {
        let r = upgrade(&server, "/o", &format!("Origin: {origin}\r\n")).await;
        assert_eq!(r.status, 101, "{origin}: {}", body(&r));
    }
    for origin in ["https://c.example", "https://a.example.evil", ""] {
        let header = if origin.is_empty() {
            String::new()
        } else {
            format!("Origin: {origin}\r\n")
        };
        let r = upgrade(&server, "/o", &header).await;
        assert_refused(&r, 403, "origin not allowed", origin);
    }
    server.wait_metric(REFUSED, "reason=\"origin\"", 3.0).await;
    server.stop().await;
}

#[tokio::test]
async fn an_empty_or_malformed_origin_is_a_start_up_error() {
    // Through the library: a configuration built in code is checked like the command line.
    for bad in ["", "https://a.example/", "a.example"] {
        let mut c = config();
        c.database_url = Some("memory".into());
        c.allowed_origins = vec!["https://ok.example".into(), bad.into()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let err = tandem::serve(listener, c, async {})
            .await
            .expect_err(bad)
            .to_string();
        assert!(err.contains("--allowed-origins"), "{bad:?}: {err}");
    }
    // Through the binary: a clear message and a non-zero exit, before listening.
    for bad in [
        "https://a.example,",
        "https://a.example,,https://b.example",
        "nope",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env("NO_COLOR", "1")
            .env_remove("DATABASE_URL")
            .args([
                "--addr",
                "127.0.0.1:0",
                "--database-url",
                "memory",
                "--allowed-origins",
                bad,
            ])
            .output()
            .expect("run tandem");
        assert!(!out.status.success(), "{bad:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--allowed-origins") && stderr.contains("origin"),
            "{bad:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_wholly_empty_origin_setting_means_any_origin() {
    // `TANDEM_ALLOWED_ORIGINS=` as container environments write it: off, as documented.
    let mut c = config();
    c.database_url = Some("memory".into());
    c.allowed_origins = vec![String::new()];
    let server = TestServer::start(c).await;
    let r = upgrade(&server, "/o", "Origin: https://anywhere.example\r\n").await;
    assert_eq!(r.status, 101, "{}", body(&r));
    server.stop().await;
}

#[tokio::test]
async fn an_escaped_slash_is_another_document() {
    let mut c = config();
    c.database_url = Some("memory".into());
    let server = TestServer::start(c).await;
    let mut plain = Client::join(&server.url("a/b")).await;
    plain.insert("text", 0, "in a/b").await;
    plain.pump_until(|c| c.updates_received == 1).await;
    let mut escaped = Client::join(&server.url("a%2Fb")).await;
    assert_eq!(escaped.text("text"), "", "/a%2Fb opened a/b");
    escaped.insert("text", 0, "in a%2Fb").await;
    escaped.pump_until(|c| c.updates_received == 1).await;
    // Lowercase hex is the same path as uppercase; escaped unreserved characters are the
    // characters themselves.
    let lower = Client::join(&server.url("a%2fb")).await;
    assert_eq!(lower.text("text"), "in a%2Fb");
    let unreserved = Client::join(&server.url("%61/%62")).await;
    assert_eq!(unreserved.text("text"), "in a/b");
    plain.pump_for(std::time::Duration::from_millis(200)).await;
    assert_eq!(plain.text("text"), "in a/b", "the other document leaked in");
    server.stop().await;
}

#[tokio::test]
async fn a_prefix_grant_does_not_open_an_escaped_slash() {
    let server = TestServer::start(token_config()).await;
    let team = token_with(&["team/*"], json!({}));
    // The team's document has content no outsider may see.
    let mut member = Client::join(&format!("ws://{}/team/secret?token={team}", server.addr)).await;
    member.insert("text", 0, CONTENT).await;
    member.pump_until(|c| c.updates_received == 1).await;

    for path in ["/team%2Fsecret", "/team%2fsecret", "/team%2F..%2Fsecret"] {
        let r = upgrade(&server, &format!("{path}?token={team}"), "").await;
        assert_refused(&r, 403, "token does not grant this document", path);
        assert!(!body(&r).contains(CONTENT));
    }
    server
        .wait_metric(REFUSED, "reason=\"wrong_document\"", 3.0)
        .await;
    // A token for that exact (escaped) name opens it, and it is not the team's document.
    let exact = token_with(&["team%2Fsecret"], json!({}));
    let other = Client::join(&format!("ws://{}/team%2Fsecret?token={exact}", server.addr)).await;
    assert_eq!(other.text("text"), "");
    // Escaped unreserved characters are the same name, so the grant applies.
    let same = Client::join(&format!("ws://{}/te%61m/secret?token={team}", server.addr)).await;
    assert_eq!(same.text("text"), CONTENT);
    server.stop().await;
}
