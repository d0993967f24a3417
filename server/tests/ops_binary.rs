//! Operations (issue 16), tested on the real `tandem` binary: `--version`, log formats and
//! colour, secrets at the most verbose log level, the first-run history link, `/readyz` and
//! draining on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::bin::Bin;
use common::{Client, http_get, http_send};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

#[test]
fn version_names_the_release_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--version")
        .output()
        .expect("run tandem --version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("tandem {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text[expected.len()..].trim().trim_end_matches(')');
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {commit:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// First run: the history link

/// The `http://ADDR/history?token=T` link, split.
fn history_link(line: &str) -> Option<(SocketAddr, String)> {
    let at = line.find("http://")?;
    let link = line[at + "http://".len()..].split_whitespace().next()?;
    let link = link.trim_end_matches('"');
    let (addr, rest) = link.split_once('/')?;
    let token = rest.strip_prefix("history?token=")?;
    Some((addr.parse().ok()?, token.to_string()))
}

#[tokio::test]
async fn the_default_run_prints_a_history_link_whose_token_opens_the_admin_api() {
    let mut bin = Bin::start(&[]);
    let addr = bin.addr().await;
    let (link_addr, token) = bin.wait_line("history link", history_link).await;
    assert_eq!(link_addr, addr, "the link points at the bound port");
    assert_eq!(token.len(), 64, "{token}");

    let auth = format!("Bearer {token}");
    let ok = http_send(
        addr,
        "GET",
        "/api/v1/admin/documents",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let wrong = http_send(
        addr,
        "GET",
        "/api/v1/admin/documents",
        &[("Authorization", "Bearer 0000")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    // The page the link opens is served (the page moves the token to sessionStorage).
    let (status, page) = http_get(addr, &format!("/history?token={token}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("History"), "{page}");
    assert!(bin.stop().await);

    // A second run makes a different token: it is one-time.
    let mut again = Bin::start(&[]);
    let (_, second) = again.wait_line("history link", history_link).await;
    assert_ne!(second, token);
    assert!(again.stop().await);
}

#[tokio::test]
async fn no_link_with_token_auth_or_on_a_non_loopback_address_and_it_says_why() {
    let secret = "s".repeat(32);
    let mut token_mode = Bin::start(&["--auth", "token", "--jwt-secret", &secret]);
    let addr = token_mode.addr().await;
    let why = token_mode
        .wait_line("reason", |l| {
            l.contains("admin API off").then(|| l.to_string())
        })
        .await;
    assert!(why.contains("--auth token"), "{why}");
    let (status, _) = http_get(addr, "/api/v1/admin/documents").await;
    assert_eq!(status, 404, "the admin API stays off");
    assert!(token_mode.stop().await);
    assert!(
        !token_mode.output().contains("token="),
        "{}",
        token_mode.output()
    );

    let mut everywhere = Bin::start(&["--addr", "0.0.0.0:0"]);
    everywhere.addr().await;
    let why = everywhere
        .wait_line("reason", |l| {
            l.contains("admin API off").then(|| l.to_string())
        })
        .await;
    assert!(why.contains("not a loopback address"), "{why}");
    assert!(everywhere.stop().await);
    assert!(
        !everywhere.output().contains("token="),
        "{}",
        everywhere.output()
    );
}

// ---------------------------------------------------------------------------------------------
// Logs

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_document_connection_and_close_reason() {
    let mut bin = Bin::start(&["--log-format", "json", "--log", "info,tandem=debug"]);
    let addr = bin.addr().await;
    let mut client = Client::join(&format!("ws://{addr}/json/doc")).await;
    client.close().await;
    bin.wait_line("close line", |l| l.contains("\"closed\"").then_some(()))
        .await;
    assert!(bin.stop().await);

    let out = bin.output();
    let mut closed = None;
    for line in out.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"] == "closed" {
            closed = Some(v);
        }
    }
    let closed = closed.expect("a close event");
    assert_eq!(closed["span"]["doc"], "json/doc", "{closed}");
    assert!(closed["span"]["id"].is_u64(), "connection id: {closed}");
    assert!(closed["reason"].is_string(), "close reason: {closed}");
    assert!(closed["code"].is_u64(), "close code: {closed}");
    assert!(!out.contains('\u{1b}'), "no ANSI escapes");
}

#[tokio::test]
async fn text_logs_to_a_pipe_carry_no_ansi_escapes() {
    let mut bin = Bin::start(&["--log", "debug"]);
    bin.addr().await;
    assert!(bin.stop().await);
    let out = bin.output();
    assert!(out.contains("listening on"), "{out}");
    assert!(!out.contains('\u{1b}'), "ANSI escape in piped logs:\n{out}");
}

const JWT_SECRET: &str = "jwt-secret-3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e";
const ADMIN_TOKEN: &str = "admin-token-8d6b4f2a0c9e7b5d3f1a8c6e4b2d0f9a";
const DB_PASSWORD: &str = "db-password-5e3c1a9f7d5b3e1c9a7f5d3b1e9c7a5f";

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    // A Postgres URL with a password (the test server trusts local connections and ignores
    // it); SQLite, which has no password, without Postgres.
    let schema = testkit::PgSchema::for_test("secrets_never_reach_the_logs").await;
    let url = match &schema {
        Some(s) => s.url.replacen(
            "postgres://postgres@",
            &format!("postgres://postgres:{DB_PASSWORD}@"),
            1,
        ),
        None => String::new(),
    };
    let mut args = vec![
        "--log",
        "trace",
        "--auth",
        "token",
        "--jwt-secret",
        JWT_SECRET,
        "--admin-token",
        ADMIN_TOKEN,
    ];
    if schema.is_some() {
        assert!(url.contains(DB_PASSWORD), "{url}");
        args.extend(["--database-url", &url]);
    }
    let mut bin = Bin::start(&args);
    let addr = bin.addr().await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"sub": "alice", "docs": ["*"], "access": "rw", "exp": now + 600, "iat": now - 1, "jti": "t-1"});
    let jwt = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token");
    let mut client = Client::join(&format!("ws://{addr}/secret-doc?token={jwt}")).await;
    client.insert("t", 0, "hello").await;
    client.close().await;
    // A refused token and the admin API with its bearer token.
    let bad = format!("{jwt}x");
    let _ = http_get(addr, &format!("/secret-doc?token={bad}")).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = http_send(
        addr,
        "GET",
        "/api/v1/admin/documents",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(bin.stop().await);

    let out = bin.output();
    assert!(out.contains("TRACE"), "trace level is on");
    let signature = jwt.rsplit('.').next().expect("jwt signature");
    for (what, secret) in [
        ("JWT secret", JWT_SECRET),
        ("admin token", ADMIN_TOKEN),
        ("database password", DB_PASSWORD),
        ("connection token", jwt.as_str()),
        ("connection token's signature", signature),
    ] {
        if let Some(line) = out.lines().find(|l| l.contains(secret)) {
            panic!("the {what} is in the logs: {line}");
        }
    }
    if let Some(schema) = schema {
        schema.remove().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness and draining

#[tokio::test]
async fn sigterm_drains_readiness_for_the_grace_period_while_still_serving_then_stops() {
    let mut bin = Bin::start(&["--drain-grace", "3s"]);
    let addr = bin.addr().await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "ready");
    let mut editor = Client::join(&format!("ws://{addr}/drained")).await;

    let sent = Instant::now();
    bin.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = http_get(addr, "/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "readyz never reported 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["reason"], "draining");
    // Still serving: alive, and documents still sync (old and new connections).
    let (status, health) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    editor.insert("t", 0, "during the drain").await;
    let mut late = Client::join(&format!("ws://{addr}/drained")).await;
    late.pump_until(|c| c.text("t") == "during the drain").await;

    assert!(bin.wait_exit().await, "clean exit after the drain");
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "the grace period was served before shutting down ({:?})",
        sent.elapsed()
    );
    assert!(bin.output().contains("draining"), "{}", bin.output());
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database_and_recovers() {
    let Some(schema) = testkit::PgSchema::for_test("readyz_reports_an_unreachable_database").await
    else {
        return;
    };
    let proxy = testkit::Proxy::start(testkit::upstream_addr(&schema.url)).await;
    let mut config = common::config();
    config.database_url = Some(testkit::with_host_port(&schema.url, proxy.addr));
    let server = common::TestServer::start(config).await;
    let (status, body) = server.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    proxy.cut();
    let (status, body) = server.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["reason"], "storage_unreachable", "{v}");
    assert!(v["detail"].is_string(), "{v}");
    // Liveness is unaffected: restarting the node would not bring the database back.
    let (status, _) = server.http_get("/healthz").await;
    assert_eq!(status, 200);

    proxy.restore();
    common::eventually("readyz recovers", || async {
        server.http_get("/readyz").await.0 == 200
    })
    .await;
    server.stop().await;
    schema.remove().await;
}
