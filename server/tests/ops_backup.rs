//! Whole-store backup and restore (issue 16, item 5): `tandem export --all` and `tandem
//! import` round-trip documents, full history (seq, time, author, bytes), snapshots, labels,
//! revocations and tombstones from SQLite to Postgres and back; the admin API answers the
//! same on the copy as on the original.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, TestServer, http_send};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tandem::config::{AuthMode, Config};

const SECRET: &str = "backup-test-secret-0123456789abcdef0123";
const ADMIN: &str = "backup-test-admin-token";
/// Live documents the test fills, and one it deletes.
const DOCS: [&str; 2] = ["notes/a ✓", "b"];
const GONE: &str = "gone";

fn config(url: &str) -> Config {
    let mut c = common::config();
    c.database_url = Some(url.to_string());
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN.into());
    // Snapshots after a few updates, so the stores hold several.
    c.snapshot_every_updates = 3;
    c
}

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"sub": sub, "docs": ["*"], "access": "rw", "exp": now + 600, "iat": now - 1, "jti": format!("{sub}-jti")});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A document name as a room path: its slashes stay literal (an escaped slash is another
/// document), every other character is escaped.
fn room_path(s: &str) -> String {
    s.split('/').map(enc).collect::<Vec<_>>().join("/")
}

async fn admin(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http_send(
        server.addr,
        method,
        &format!("/api/v1/admin{path}"),
        &headers,
        body.as_bytes(),
    )
    .await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// Fills a store through a running server: edits by two users, snapshots, a label, two
/// revocations and a deleted document.
async fn fill(url: &str) {
    let server = TestServer::start(config(url)).await;
    for (i, name) in DOCS.iter().enumerate() {
        let path = format!("ws://{}/{}", server.addr, room_path(name));
        let mut alice = Client::join(&format!("{path}?token={}", token("alice"))).await;
        let mut bob = Client::join(&format!("{path}?token={}", token("bob"))).await;
        for n in 0..(4 + i as u32) {
            alice.insert("t", 0, &format!("a{n} ")).await;
            bob.pump_until(|c| c.text("t").contains(&format!("a{n} ")))
                .await;
            bob.insert("t", 0, &format!("b{n} ")).await;
            alice
                .pump_until(|c| c.text("t").contains(&format!("b{n} ")))
                .await;
        }
        alice.close().await;
        bob.close().await;
    }
    let mut doomed = Client::join(&format!(
        "ws://{}/{GONE}?token={}",
        server.addr,
        token("alice")
    ))
    .await;
    doomed.insert("t", 0, "soon gone").await;
    doomed.close().await;

    let labels = format!("/documents/{}/labels", enc(DOCS[0]));
    let (status, v) = admin(
        &server,
        "POST",
        &labels,
        Some(json!({"name": "v1", "seq": 3})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    for body in [
        json!({"user": "mallory"}),
        json!({"token_id": "leaked-jti"}),
    ] {
        let (status, v) = admin(&server, "POST", "/revocations", Some(body)).await;
        assert!(status == 200 || status == 201, "{status} {v}");
    }
    // The last edits must be durable and snapshotted before the delete and the stop.
    let (status, v) = admin(&server, "DELETE", &format!("/documents/{GONE}"), None).await;
    assert_eq!(status, 200, "{v}");
    server.stop().await;
}

/// What the admin API says about the store, for comparison (ids excluded: they are the
/// target database's own).
async fn answers(url: &str) -> Value {
    let server = TestServer::start(config(url)).await;
    let mut out = serde_json::Map::new();
    let (status, list) = admin(&server, "GET", "/documents", None).await;
    assert_eq!(status, 200);
    out.insert("list".into(), list);
    for name in DOCS {
        let doc = format!("/documents/{}", enc(name));
        let (status, detail) = admin(&server, "GET", &doc, None).await;
        assert_eq!(status, 200, "{detail}");
        assert!(detail["log_rows"].as_i64().unwrap_or(0) >= 8, "{detail}");
        assert!(detail["snapshots"].as_i64().unwrap_or(0) >= 2, "{detail}");
        let (_, timeline) =
            admin(&server, "GET", &format!("{doc}/timeline?limit=1000"), None).await;
        let authors: Vec<&Value> = timeline["changes"]
            .as_array()
            .map(|c| c.iter().map(|c| &c["author"]).collect())
            .unwrap_or_default();
        assert!(
            authors.contains(&&json!("alice")) && authors.contains(&&json!("bob")),
            "{timeline}"
        );
        let (_, state) = admin(&server, "GET", &format!("{doc}/state"), None).await;
        let (_, state_at_3) = admin(&server, "GET", &format!("{doc}/state?seq=3"), None).await;
        let (_, labels) = admin(&server, "GET", &format!("{doc}/labels"), None).await;
        assert!(
            state.is_object() && state_at_3.is_object(),
            "{state} {state_at_3}"
        );
        out.insert(
            name.into(),
            json!({"detail": detail, "timeline": timeline, "state": state, "state_at_3": state_at_3, "labels": labels}),
        );
    }
    let (status, gone) = admin(&server, "GET", &format!("/documents/{GONE}"), None).await;
    assert_eq!(status, 410, "the tombstone is kept: {gone}");
    out.insert("gone".into(), json!({"status": status, "body": gone}));
    // A client cannot bring the deleted document back.
    let r = http_send(
        server.addr,
        "GET",
        &format!("/{GONE}?token={}", token("alice")),
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", common::WS_KEY),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 410);
    server.stop().await;

    let store = crdt_store::Store::open(url, &crdt_store::StoreOptions::default())
        .await
        .expect("open");
    let mut revocations: Vec<Value> = store
        .revocations()
        .await
        .expect("revocations")
        .into_iter()
        .map(|r| {
            let ms = r
                .revoked_at
                .duration_since(UNIX_EPOCH)
                .expect("time")
                .as_millis() as u64;
            json!([r.kind.as_str(), r.value, ms])
        })
        .collect();
    revocations.sort_by_key(|v| v.to_string());
    assert_eq!(revocations.len(), 2);
    out.insert("revocations".into(), Value::Array(revocations));
    Value::Object(out)
}

fn tandem(args: &[&str], url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .args(args)
        .args(["--database-url", url])
        .output()
        .expect("run tandem");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(url: &str, dir: &Path) {
    let (ok, log) = tandem(&["export", "--all", &dir.display().to_string()], url);
    assert!(ok, "export failed: {log}");
    assert!(dir.join("manifest.json").exists());
}

fn import(url: &str, dir: &Path) {
    let (ok, log) = tandem(&["import", &dir.display().to_string()], url);
    assert!(ok, "import failed: {log}");
}

/// Fields that legitimately differ between two servers: whether the document is in memory.
fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("loaded");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[tokio::test]
async fn export_and_import_round_trip_sqlite_to_postgres_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("original.db").display());
    fill(&sqlite).await;
    let original = comparable(answers(&sqlite).await);

    let exported = dir.path().join("export-1");
    export(&sqlite, &exported);
    // Export never overwrites.
    let (ok, log) = tandem(
        &["export", "--all", &exported.display().to_string()],
        &sqlite,
    );
    assert!(!ok && log.contains("not empty"), "{log}");

    // SQLite → SQLite always (no Postgres needed).
    let copy = format!("sqlite://{}", dir.path().join("copy.db").display());
    import(&copy, &exported);
    assert_eq!(
        comparable(answers(&copy).await),
        original,
        "sqlite → sqlite"
    );
    // A store that is not empty is refused, and says so.
    let (ok, log) = tandem(&["import", &exported.display().to_string()], &copy);
    assert!(
        !ok && log.contains("not empty") && log.contains("--force"),
        "{log}"
    );

    let Some(schema) = testkit::PgSchema::for_test("export_and_import_round_trip").await else {
        return;
    };
    import(&schema.url, &exported);
    assert_eq!(
        comparable(answers(&schema.url).await),
        original,
        "sqlite → postgres"
    );

    let back_dir = dir.path().join("export-2");
    export(&schema.url, &back_dir);
    let back = format!("sqlite://{}", dir.path().join("back.db").display());
    import(&back, &back_dir);
    assert_eq!(
        comparable(answers(&back).await),
        original,
        "postgres → sqlite"
    );
    schema.remove().await;
}

#[tokio::test]
async fn a_damaged_export_is_refused_with_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("o.db").display());
    fill(&sqlite).await;
    let exported = dir.path().join("export");
    export(&sqlite, &exported);
    let log = exported.join("docs/000001/log.jsonl");
    let text = std::fs::read_to_string(&log).expect("log");
    std::fs::write(&log, text.replacen("\"data\":\"", "\"data\":\"!!", 1)).expect("write");
    let target = format!("sqlite://{}", dir.path().join("t.db").display());
    let (ok, out) = tandem(&["import", &exported.display().to_string()], &target);
    assert!(!ok, "{out}");
    assert!(
        out.contains("log.jsonl:1") && out.contains("base64"),
        "{out}"
    );

    // No manifest: not an export (or an interrupted one).
    std::fs::remove_file(exported.join("manifest.json")).expect("rm");
    let other = format!("sqlite://{}", dir.path().join("u.db").display());
    let (ok, out) = tandem(&["import", &exported.display().to_string()], &other);
    assert!(!ok && out.contains("manifest.json"), "{out}");
}
