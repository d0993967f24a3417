//! The admin API (`/api/v1/admin`, see docs/admin-api.md) through real servers on port 0 and
//! real WebSocket clients holding yrs documents: documents (list, detail, delete, snapshot,
//! disconnect, export, import), history (timeline, state, diff, restore, labels), the bearer
//! token on every documented operation, bad inputs, memory storage, and state and diffs checked
//! against a local replay of a real editing trace (tests/data, CC BY 4.0).
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Client, Db, HttpResponse, TestServer, config, eventually, http_request, http_send,
    upgrade_request,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tandem::Config;
use tandem::config::AuthMode;
use yrs::types::Attrs;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Doc, GetString, ReadTxn, Text, Transact, Update, Xml, XmlElementPrelim, XmlFragment,
    XmlTextPrelim,
};

/// HS256 secret of the servers under test.
const SECRET: &str = "tandem-admin-tests-hs256-secret-0123456789";
/// Admin bearer token.
const ADMIN_TOKEN: &str = "admin-bearer-for-admin-tests-41c9e2";
/// The root text most tests edit.
const TEXT: &str = "text";
/// Prefix of every admin path.
const API: &str = "/api/v1/admin";

// ---------------------------------------------------------------------------------------------
// Databases

/// Runs `case` once per database.
macro_rules! on_every_db {
    ($test:literal, $case:path) => {
        for db in Db::all($test).await {
            println!("{}: {}", $test, db.label);
            let started = std::time::Instant::now();
            $case(&db).await;
            println!("{}: {} took {:?}", $test, db.label, started.elapsed());
            db.finish().await;
        }
    };
}

/// Token mode (authors are the tokens' `sub`), the admin API on, no message rate limit to
/// speak of, storing in `db`.
fn admin_config(db: &Db) -> Config {
    let mut c = config();
    c.database_url = Some(db.url.clone());
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN_TOKEN.into());
    c.max_messages_per_sec = 1_000_000;
    c.message_burst = 1_000_000;
    c
}

async fn start(db: &Db) -> TestServer {
    TestServer::start(admin_config(db)).await
}

// ---------------------------------------------------------------------------------------------
// Clients

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A read-write token for every document, for user `sub`.
fn token(sub: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let claims = json!({
        "sub": sub, "name": sub, "docs": ["*"], "access": "rw",
        "exp": now() + 3600, "iat": now() - 1,
        "jti": format!("{sub}-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode token")
}

/// The WebSocket path of document `name` for user `sub`: slashes literal, each segment
/// encoded (an escaped slash would name another document).
fn ws_path(name: &str, sub: &str) -> String {
    let segments: Vec<String> = name.split('/').map(enc).collect();
    format!("/{}?token={}", segments.join("/"), token(sub))
}

/// Joins document `name` as user `sub` and completes the sync handshake.
async fn join(server: &TestServer, name: &str, sub: &str) -> Client {
    Client::join(&format!("ws://{}{}", server.addr, ws_path(name, sub))).await
}

/// Appends `s` to the root text and waits for the server's echo, which comes once the update
/// is durable (persist before relay), so history reads see it.
async fn write(c: &mut Client, s: &str) {
    let len = u32::try_from(c.text(TEXT).len()).expect("len");
    let before = c.updates_received;
    c.insert(TEXT, len, s).await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// Removes `len` characters at `index` of the root text and waits for the echo.
async fn remove(c: &mut Client, index: u32, len: u32) {
    let text = c.doc.get_or_insert_text(TEXT);
    let before = c.updates_received;
    c.edit(|_, txn| text.remove_range(txn, index, len)).await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// Processes messages until the client's root text is `want`.
async fn converge(c: &mut Client, want: &str) {
    c.pump_until(|c| c.text(TEXT) == want).await;
    assert!(c.closed.is_none(), "the client was closed: {:?}", c.closed);
}

/// The text of root `name` of a Yjs update.
fn update_text(update: &[u8], name: &str) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(name);
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).expect("a Yjs update"))
        .expect("apply");
    text.get_string(&doc.transact())
}

// ---------------------------------------------------------------------------------------------
// Admin requests

/// A document name as one path segment.
fn enc(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

/// `/api/v1/admin/documents/{name}` followed by `rest`.
fn doc_path(name: &str, rest: &str) -> String {
    format!("{API}/documents/{}{rest}", enc(name))
}

/// Sends an admin request with `token` (`None`: no Authorization header); `body` is JSON when
/// `json` is set, else sent as `application/octet-stream` when not empty.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Body<'_>,
) -> HttpResponse {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    let bytes: Vec<u8> = match body {
        Body::None => Vec::new(),
        Body::Json(v) => {
            headers.push(("Content-Type", "application/json"));
            serde_json::to_vec(v).expect("json")
        }
        Body::RawJson(s) => {
            headers.push(("Content-Type", "application/json"));
            s.as_bytes().to_vec()
        }
        Body::Bytes(b) => {
            headers.push(("Content-Type", "application/octet-stream"));
            b.to_vec()
        }
    };
    http_send(addr, method, path, &headers, &bytes).await
}

/// A request body.
#[derive(Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    /// Text sent as `application/json` as is (malformed on purpose).
    RawJson(&'a str),
    Bytes(&'a [u8]),
}

/// The JSON body of a response (panics with the body when it is not JSON).
fn body_json(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "status {} body is not JSON ({e}): {:?} (headers {:?})",
            r.status,
            String::from_utf8_lossy(&r.body),
            r.headers
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Responses against the OpenAPI document: every JSON answer the tests get through `admin` or
// `expect_error` is checked against the schema documented for its operation and status, so
// the document cannot drift from what the server does.

/// The OpenAPI document the binary serves.
fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        serde_json::from_str(include_str!("../src/admin/openapi.json")).expect("openapi.json")
    })
}

/// The documented operation for `method path` (query ignored), by its path template.
fn operation_for(method: &str, path: &str) -> Option<&'static Value> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    spec()["paths"]
        .as_object()?
        .iter()
        .find(|(template, _)| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .and_then(|(_, item)| item.get(method.to_lowercase()))
}

/// Follows a local `$ref`.
fn resolve(v: &Value) -> &Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                spec()
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Asserts that `body` is what the document says `method path` answers with `status`.
fn check_response(method: &str, path: &str, status: u16, body: &Value) {
    let op = operation_for(method, path)
        .unwrap_or_else(|| panic!("{method} {path} is not a documented operation"));
    let id = op["operationId"].as_str().unwrap_or("?");
    let response = resolve(
        op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{id}: status {status} is not documented ({body})")),
    );
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        panic!("{id}: status {status} documents no JSON body, got {body}");
    };
    if let Err(e) = conforms(schema, body, "$") {
        panic!("{id} {status}: the answer does not match the document: {e}\n{body}");
    }
}

/// A small JSON Schema check, for the keywords the document uses.
fn conforms(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            conforms(s, v, at)?;
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| conforms(s, v, at).is_ok())
    {
        return Err(format!("{at}: matches none of anyOf"));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let errors: Vec<String> = one
            .iter()
            .filter_map(|s| conforms(s, v, at).err())
            .collect();
        if one.len() - errors.len() != 1 {
            return Err(format!(
                "{at}: matches {} of oneOf ({errors:?})",
                one.len() - errors.len()
            ));
        }
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Err(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let is = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| is(t)) {
            return Err(format!("{at}: {v} is not of type {types:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        return Err(format!("{at}: {n} < minimum {min}"));
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64())
        && n > max
    {
        return Err(format!("{at}: {n} > maximum {max}"));
    }
    if let Value::Object(o) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !o.contains_key(r) {
                return Err(format!("{at}: lacks required {r:?}"));
            }
        }
        for (k, value) in o {
            let at = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => conforms(s, value, &at)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{at}: not in the document"));
                }
                (None, Some(extra @ Value::Object(_))) => conforms(extra, value, &at)?,
                _ => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            conforms(s, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// An admin request with the right token; returns the status and the JSON body.
async fn admin(s: &TestServer, method: &str, path: &str, body: Body<'_>) -> (u16, Value) {
    let r = request(s.addr, method, path, Some(ADMIN_TOKEN), body).await;
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        body_json(&r)
    };
    check_response(method, path, r.status, &v);
    (r.status, v)
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    admin(s, "GET", path, Body::None).await
}

async fn post(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    admin(s, "POST", path, Body::Json(body)).await
}

async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    admin(s, "DELETE", path, Body::None).await
}

/// Asserts a 200 and returns the body.
async fn get_ok(s: &TestServer, path: &str) -> Value {
    let (status, body) = get(s, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Asserts that `r` is the JSON error `{"status": status, "reason": "..."}`.
fn assert_error(r: &HttpResponse, status: u16, what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{what}: error without a JSON content type: {:?}",
        r.headers
    );
    let v = body_json(r);
    assert_eq!(v["status"], json!(status), "{what}: {v}");
    assert!(
        v["reason"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: no reason: {v}"
    );
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "{what}: extra fields: {v}"
    );
}

/// Sends a request with the admin token and asserts a JSON error of `status`.
async fn expect_error(s: &TestServer, method: &str, path: &str, body: Body<'_>, status: u16) {
    let r = request(s.addr, method, path, Some(ADMIN_TOKEN), body).await;
    assert_error(&r, status, &format!("{method} {path}"));
    if operation_for(method, path).is_some() {
        check_response(method, path, status, &body_json(&r));
    }
}

/// The document's detail (`GET /documents/{name}`).
async fn detail(s: &TestServer, name: &str) -> Value {
    get_ok(s, &doc_path(name, "")).await
}

/// The root text at `query` (e.g. `seq=3`) as JSON: `(seq, text)`; an absent root is "".
async fn text_at(s: &TestServer, name: &str, query: &str) -> (i64, String) {
    let state = get_ok(s, &doc_path(name, &format!("/state?{query}"))).await;
    (state["seq"].as_i64().expect("seq"), root_text(&state))
}

/// The root text of a state answer ("" when the root is absent).
fn root_text(state: &Value) -> String {
    match &state["content"][TEXT] {
        Value::Null => String::new(),
        root => {
            assert_eq!(root["kind"], "text", "{state}");
            root["value"].as_str().expect("text value").to_string()
        }
    }
}

/// Every change of the timeline, oldest first (pages of 1000).
async fn all_changes(s: &TestServer, name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = get_ok(
            s,
            &doc_path(name, &format!("/timeline?after={after}&limit=1000")),
        )
        .await;
        out.extend(page["changes"].as_array().expect("changes").iter().cloned());
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// Seqs of a list of changes.
fn seqs(changes: &Value) -> Vec<i64> {
    changes
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect()
}

/// Refused upgrade: the HTTP status of a WebSocket upgrade of `path`.
async fn upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    http_request(addr, &upgrade_request(addr, path))
        .await
        .status
}

// ---------------------------------------------------------------------------------------------
// Documents

#[tokio::test]
async fn documents_are_listed_by_name_in_pages_with_prefix_and_cursor() {
    on_every_db!(
        "documents_are_listed_by_name_in_pages_with_prefix_and_cursor",
        list_documents
    );
}

async fn list_documents(db: &Db) {
    let server = start(db).await;
    let names = ["a/1", "a/2", "a/3", "b", "notes/2024"];
    let mut clients = Vec::new();
    for name in names {
        let mut c = join(&server, name, "alice").await;
        write(&mut c, &format!("content of {name}")).await;
        clients.push(c);
    }
    write(&mut clients[4], " more").await;
    // A deleted document is not listed.
    let mut gone = join(&server, "a/4", "alice").await;
    write(&mut gone, "soon gone").await;
    let (status, _) = delete(&server, &doc_path("a/4", "")).await;
    assert_eq!(status, 200);

    // Pages of two, by name, following next_cursor.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{API}/documents?limit=2");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", enc(c)));
        }
        let page = get_ok(&server, &path).await;
        pages += 1;
        let docs = page["documents"].as_array().expect("documents");
        assert!(docs.len() <= 2, "{page}");
        listed.extend(
            docs.iter()
                .map(|d| d["name"].as_str().expect("name").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        listed, names,
        "every page in name order, the deleted one left out"
    );
    assert_eq!(pages, 3);

    // Default page size holds them all; no next cursor.
    let all = get_ok(&server, &format!("{API}/documents")).await;
    assert_eq!(all["documents"].as_array().expect("docs").len(), 5);
    assert_eq!(all["next_cursor"], Value::Null);

    // Prefix: literal, combined with paging.
    let page = get_ok(&server, &format!("{API}/documents?prefix=a%2F&limit=2")).await;
    let first: Vec<_> = page["documents"]
        .as_array()
        .expect("docs")
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(first, [json!("a/1"), json!("a/2")]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let page = get_ok(
        &server,
        &format!("{API}/documents?prefix=a%2F&limit=2&cursor={}", enc(cursor)),
    )
    .await;
    assert_eq!(page["documents"][0]["name"], "a/3");
    assert_eq!(page["documents"].as_array().expect("docs").len(), 1);
    assert_eq!(page["next_cursor"], Value::Null);
    let none = get_ok(&server, &format!("{API}/documents?prefix=zzz")).await;
    assert_eq!(none, json!({"documents": [], "next_cursor": null}));
    // `%` and `_` are not wildcards.
    let none = get_ok(&server, &format!("{API}/documents?prefix=a%25")).await;
    assert_eq!(none["documents"], json!([]));

    // The listed document carries its statistics.
    let notes = all["documents"]
        .as_array()
        .expect("docs")
        .iter()
        .find(|d| d["name"] == "notes/2024")
        .expect("notes/2024 listed")
        .clone();
    assert_eq!(notes["last_seq"], 2, "{notes}");
    assert_eq!(notes["log_rows"], 2, "{notes}");
    assert_eq!(notes["connected_clients"], 1, "{notes}");
    assert_eq!(notes["loaded"], true, "{notes}");
    assert_eq!(notes["labels"], 0, "{notes}");
    assert!(
        notes["log_bytes"].as_i64().expect("log_bytes") > 0,
        "{notes}"
    );
    assert_eq!(
        notes["stored_bytes"].as_i64(),
        Some(notes["log_bytes"].as_i64().unwrap() + notes["snapshot_bytes"].as_i64().unwrap())
    );
    assert!(
        notes.get("latest_snapshot").is_none(),
        "detail-only field in list: {notes}"
    );
    for field in ["created_at", "last_change_at"] {
        let t = notes[field].as_str().expect(field);
        humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{field} {t}: {e}"));
        assert!(
            t.ends_with('Z') && t.len() == 24,
            "RFC 3339 UTC millis: {t}"
        );
    }
    drop(clients);
    server.stop().await;
}

#[tokio::test]
async fn document_detail_has_statistics_oldest_logged_change_and_latest_snapshot() {
    on_every_db!(
        "document_detail_has_statistics_oldest_logged_change_and_latest_snapshot",
        document_detail
    );
}

async fn document_detail(db: &Db) {
    let mut config = admin_config(db);
    config.unload_after = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let name = "notes/2024";
    // A room that is open (joined) but has no change yet has no stored document: joining
    // stores nothing.
    let mut c = join(&server, name, "alice").await;
    let (status, body) = get(&server, &doc_path(name, "")).await;
    assert_eq!(status, 404, "{body}");

    write(&mut c, "one").await;
    write(&mut c, " two").await;
    let d = detail(&server, name).await;
    assert_eq!(d["last_seq"], 2, "{d}");
    assert_eq!(d["log_rows"], 2, "{d}");
    assert_eq!(d["first_logged_seq"], 1, "{d}");
    assert_eq!(d["snapshots"], 0, "{d}");
    assert!(d["last_change_at"].is_string(), "{d}");

    // Gone from memory after its clients leave and the room unloads: loaded turns false.
    c.close().await;
    eventually("the document unloads and shows no clients", || async {
        let d = detail(&server, name).await;
        d["connected_clients"] == 0 && d["loaded"] == false
    })
    .await;

    // The same name unencoded in the path is another route: `/documents/notes/2024` is not a
    // document resource.
    let r = request(
        server.addr,
        "GET",
        &format!("{API}/documents/notes/2024"),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert_error(&r, 404, "an unencoded slash is not part of the name");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Timeline

#[tokio::test]
async fn timeline_pages_both_ways_with_authors_summaries_and_sessions() {
    on_every_db!(
        "timeline_pages_both_ways_with_authors_summaries_and_sessions",
        timeline
    );
}

async fn timeline(db: &Db) {
    let server = start(db).await;
    let name = "timeline/doc";
    let mut alice = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    write(&mut alice, "Hello").await; // 1
    write(&mut alice, ", ").await; // 2
    write(&mut alice, "world").await; // 3
    bob.pump_until(|c| c.text(TEXT) == "Hello, world").await;
    write(&mut bob, "!!").await; // 4
    remove(&mut bob, 0, 7).await; // 5: "world!!"
    alice.pump_until(|c| c.text(TEXT) == "world!!").await;
    write(&mut alice, "?").await; // 6
    let alice_id = alice.doc.client_id();
    let bob_id = bob.doc.client_id();

    // Ascending pages.
    let path = |q: &str| doc_path(name, &format!("/timeline?{q}"));
    let page = get_ok(&server, &path("limit=4")).await;
    assert_eq!(seqs(&page["changes"]), [1, 2, 3, 4], "{page}");
    assert_eq!(page["next"], 4, "{page}");
    let page = get_ok(&server, &path("limit=4&after=4")).await;
    assert_eq!(seqs(&page["changes"]), [5, 6], "{page}");
    assert_eq!(page["next"], Value::Null, "{page}");
    let page = get_ok(&server, &path("after=6")).await;
    assert_eq!(page, json!({"changes": [], "next": null}));
    // Exactly one page: no next.
    let page = get_ok(&server, &path("limit=6")).await;
    assert_eq!(seqs(&page["changes"]), [1, 2, 3, 4, 5, 6]);
    assert_eq!(page["next"], Value::Null, "{page}");

    // Descending pages, newest first.
    let page = get_ok(&server, &path("order=desc&limit=4")).await;
    assert_eq!(seqs(&page["changes"]), [6, 5, 4, 3], "{page}");
    assert_eq!(page["next"], 3, "{page}");
    let page = get_ok(&server, &path("order=desc&limit=4&before=3")).await;
    assert_eq!(seqs(&page["changes"]), [2, 1], "{page}");
    assert_eq!(page["next"], Value::Null, "{page}");
    let page = get_ok(&server, &path("order=asc&limit=1&after=2")).await;
    assert_eq!(seqs(&page["changes"]), [3]);

    // Each change: author (the token's sub), client ids, size, time, per-root summary.
    let all = get_ok(&server, &path("")).await;
    let changes = all["changes"].as_array().expect("changes");
    let authors: Vec<_> = changes.iter().map(|c| c["author"].clone()).collect();
    assert_eq!(
        authors,
        ["alice", "alice", "alice", "bob", "bob", "alice"].map(|a| json!(a))
    );
    let summaries: Vec<_> = changes.iter().map(|c| c["summary"][TEXT].clone()).collect();
    let summary = |i, d| json!({"kind": "text", "inserted": i, "deleted": d});
    assert_eq!(
        summaries,
        [
            summary(5, 0),
            summary(2, 0),
            summary(5, 0),
            summary(2, 0),
            summary(0, 7),
            summary(1, 0)
        ],
        "{all}"
    );
    // A change that only deletes carries no items, so no client id.
    let clients = [
        vec![alice_id],
        vec![alice_id],
        vec![alice_id],
        vec![bob_id],
        vec![],
        vec![alice_id],
    ];
    for (c, ids) in changes.iter().zip(clients) {
        assert_eq!(c["clients"], json!(ids), "{c}");
        assert!(c["size"].as_i64().expect("size") > 0, "{c}");
        humantime::parse_rfc3339(c["time"].as_str().expect("time")).expect("RFC 3339 time");
        assert_eq!(c["summary"].as_object().expect("summary").len(), 1, "{c}");
    }
    let times: Vec<_> = changes
        .iter()
        .map(|c| humantime::parse_rfc3339(c["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times in seq order");

    // Sessions: consecutive changes by one author within the gap.
    let grouped = get_ok(&server, &path("group=session")).await;
    let sessions = grouped["sessions"].as_array().expect("sessions");
    let shape: Vec<_> = sessions
        .iter()
        .map(|s| {
            (
                s["author"].as_str().unwrap().to_string(),
                s["from_seq"].as_i64().unwrap(),
                s["to_seq"].as_i64().unwrap(),
                s["changes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("alice".to_string(), 1, 3, 3),
            ("bob".to_string(), 4, 5, 2),
            ("alice".to_string(), 6, 6, 1)
        ],
        "{grouped}"
    );
    assert_eq!(grouped["next"], Value::Null);
    let first = &sessions[0];
    assert_eq!(first["summary"][TEXT], summary(12, 0), "{first}");
    assert_eq!(first["clients"], json!([alice_id]));
    assert_eq!(first["start"], changes[0]["time"]);
    assert_eq!(first["end"], changes[2]["time"]);
    let size: i64 = changes[..3]
        .iter()
        .map(|c| c["size"].as_i64().unwrap())
        .sum();
    assert_eq!(first["size"], size);
    assert_eq!(sessions[1]["summary"][TEXT], summary(2, 7), "{grouped}");
    assert_eq!(sessions[1]["clients"], json!([bob_id]), "{grouped}");
    // gap=0: nothing is less than 0 s apart, every change is its own session.
    let single = get_ok(&server, &path("group=session&gap=0")).await;
    assert_eq!(
        single["sessions"].as_array().map(Vec::len),
        Some(6),
        "{single}"
    );
    // Sessions page like changes (limit counts changes).
    let paged = get_ok(&server, &path("group=session&limit=2")).await;
    assert_eq!(paged["sessions"][0]["to_seq"], 2, "{paged}");
    assert_eq!(paged["next"], 2, "{paged}");

    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// State at a point

/// Builds, in one transaction on the client, what TipTap / y-prosemirror store for
/// `<h2>Title</h2><p>Hello <b>world</b></p>` in the XML fragment `default`.
async fn write_prosemirror(c: &mut Client) {
    let fragment = c.doc.get_or_insert_xml_fragment("default");
    let before = c.updates_received;
    c.edit(|_, txn| {
        let heading = fragment.push_back(txn, XmlElementPrelim::empty("heading"));
        heading.insert_attribute(txn, "level", Any::from(2));
        let title = heading.push_back(txn, XmlTextPrelim::new(""));
        title.insert(txn, 0, "Title");
        let paragraph = fragment.push_back(txn, XmlElementPrelim::empty("paragraph"));
        let body = paragraph.push_back(txn, XmlTextPrelim::new(""));
        body.insert(txn, 0, "Hello ");
        let bold: Attrs = [("bold".into(), Any::Map(Default::default()))]
            .into_iter()
            .collect();
        body.insert_with_attributes(txn, 6, "world", bold);
    })
    .await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// The ProseMirror JSON `editor.getJSON()` gives for [`write_prosemirror`]'s content.
fn prosemirror_json() -> Value {
    json!({"type": "doc", "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Title"}]},
        {"type": "paragraph", "content": [
            {"type": "text", "text": "Hello "},
            {"type": "text", "text": "world", "marks": [{"type": "bold"}]}
        ]}
    ]})
}

#[tokio::test]
async fn state_at_seq_time_or_label_as_json_and_as_a_yjs_update() {
    on_every_db!(
        "state_at_seq_time_or_label_as_json_and_as_a_yjs_update",
        state_reads
    );
}

async fn state_reads(db: &Db) {
    let server = start(db).await;
    let name = "state/doc";
    let mut alice = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    write(&mut alice, "Draft").await; // 1
    write_prosemirror(&mut alice).await; // 2
    bob.pump_until(|c| c.text(TEXT) == "Draft").await;
    write(&mut bob, " v2").await; // 3
    // 4: a map and an array, with a nested shared type.
    let before = bob.updates_received;
    let meta = bob.doc.get_or_insert_map("meta");
    let list = bob.doc.get_or_insert_array("list");
    bob.edit(|_, txn| {
        use yrs::{Array, Map, MapPrelim};
        meta.insert(txn, "title", "T");
        meta.insert(txn, "n", 1);
        list.push_back(txn, "two");
        list.push_back(txn, MapPrelim::from([("k", Any::from(true))]));
    })
    .await;
    bob.pump_until(|c| c.updates_received > before).await;
    let (status, _) = post(
        &server,
        &doc_path(name, "/labels"),
        &json!({"name": "v1", "seq": 2}),
    )
    .await;
    assert_eq!(status, 201);

    let state = |q: &str| doc_path(name, &format!("/state?{q}"));
    // The empty document before any change.
    let s0 = get_ok(&server, &state("seq=0")).await;
    assert_eq!(s0, json!({"seq": 0, "time": null, "content": {}}));
    // Roots appear as they are written.
    let s1 = get_ok(&server, &state("seq=1")).await;
    assert_eq!(
        s1["content"],
        json!({TEXT: {"kind": "text", "value": "Draft"}}),
        "{s1}"
    );
    let s2 = get_ok(&server, &state("seq=2")).await;
    assert_eq!(
        s2["content"],
        json!({
            TEXT: {"kind": "text", "value": "Draft"},
            "default": {"kind": "xml", "value": prosemirror_json()},
        }),
        "{s2}"
    );
    // No point: the newest state.
    let newest = get_ok(&server, &doc_path(name, "/state")).await;
    assert_eq!(newest["seq"], 4);
    assert_eq!(
        newest["content"],
        json!({
            TEXT: {"kind": "text", "value": "Draft v2"},
            "default": {"kind": "xml", "value": prosemirror_json()},
            "meta": {"kind": "map", "value": {"title": "T", "n": 1}},
            "list": {"kind": "array", "value": ["two", {"k": true}]},
        }),
        "{newest}"
    );
    assert_eq!(get_ok(&server, &state("format=json&seq=4")).await, newest);
    // A label names its seq.
    let by_label = get_ok(&server, &state("label=v1")).await;
    assert_eq!(by_label, s2);

    // Binary: a Yjs update holding the state at that point.
    let r = request(
        server.addr,
        "GET",
        &state("seq=2&format=binary"),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-tandem-seq"), Some("2"));
    assert_eq!(update_text(&r.body, TEXT), "Draft");
    let at2 = Doc::new();
    let fragment = at2.get_or_insert_xml_fragment("default");
    at2.transact_mut()
        .apply_update(Update::decode_v1(&r.body).expect("update"))
        .expect("apply");
    // Round trip: that update imported into a new document gives the same state.
    let (status, imported) = import(&server, "state/copy", None, &r.body).await;
    assert_eq!(status, 200, "{imported}");
    let copy = get_ok(&server, &doc_path("state/copy", "/state")).await;
    assert_eq!(copy["content"], s2["content"]);
    let theirs = alice.doc.get_or_insert_xml_fragment("default");
    assert_eq!(
        fragment.get_string(&at2.transact()),
        theirs.get_string(&alice.doc.transact())
    );
    // The newest state as binary holds everything the clients hold.
    let r = request(
        server.addr,
        "GET",
        &state("format=binary"),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert_eq!(r.header("x-tandem-seq"), Some("4"));
    let full = Doc::new();
    full.transact_mut()
        .apply_update(Update::decode_v1(&r.body).expect("update"))
        .expect("apply");
    assert_eq!(full.transact().state_vector(), bob.state_vector());

    // Times: each state carries its change's time; `at` finds the last change at or before.
    let changes = all_changes(&server, name).await;
    for (i, c) in changes.iter().enumerate() {
        let seq = i as i64 + 1;
        let s = get_ok(&server, &state(&format!("seq={seq}"))).await;
        assert_eq!(s["time"], c["time"], "seq {seq}");
    }
    let times: Vec<SystemTime> = changes
        .iter()
        .map(|c| humantime::parse_rfc3339(c["time"].as_str().unwrap()).unwrap())
        .collect();
    let expected_at = |t: SystemTime| times.iter().filter(|x| **x <= t).count() as i64;
    for t in &times {
        let want = expected_at(*t);
        let rfc = humantime::format_rfc3339_millis(*t).to_string();
        let s = get_ok(&server, &state(&format!("at={}", enc(&rfc)))).await;
        assert_eq!(s["seq"], want, "at={rfc}");
        let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        let s = get_ok(&server, &state(&format!("at={ms}"))).await;
        assert_eq!(s["seq"], want, "at={ms}");
    }
    let s = get_ok(&server, &state("at=2000-01-01T00:00:00Z")).await;
    assert_eq!(
        (s["seq"].clone(), s["content"].clone()),
        (json!(0), json!({}))
    );
    let s = get_ok(&server, &state("at=4102444800000")).await; // 2100
    assert_eq!(s["seq"], 4);

    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Diff

/// A span as the API shows it.
fn span(op: &str, text: &str, author: Option<&str>, seq: Option<i64>) -> Value {
    json!({"op": op, "text": text, "author": author, "seq": seq})
}

/// The text a diff's spans give at the earlier (`later = false`) or later point.
fn spans_text(spans: &Value, later: bool) -> String {
    let skip = if later { "delete" } else { "insert" };
    spans
        .as_array()
        .expect("spans")
        .iter()
        .filter(|s| s["op"] != skip)
        .map(|s| s["text"].as_str().expect("text"))
        .collect()
}

#[tokio::test]
async fn diff_shows_inserted_and_deleted_spans_with_their_authors() {
    on_every_db!(
        "diff_shows_inserted_and_deleted_spans_with_their_authors",
        diffs
    );
}

async fn diffs(db: &Db) {
    let server = start(db).await;
    let name = "diff/doc";
    let mut alice = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    write(&mut alice, "Hello").await; // 1
    bob.pump_until(|c| c.text(TEXT) == "Hello").await;
    write(&mut bob, " world").await; // 2
    alice.pump_until(|c| c.text(TEXT) == "Hello world").await;
    remove(&mut alice, 0, 5).await; // 3: " world"
    bob.pump_until(|c| c.text(TEXT) == " world").await;
    write(&mut bob, "!").await; // 4: " world!"
    let (status, _) = post(
        &server,
        &doc_path(name, "/labels"),
        &json!({"name": "start", "seq": 1}),
    )
    .await;
    assert_eq!(status, 201);

    let diff = |q: &str| doc_path(name, &format!("/diff?{q}"));
    let d = get_ok(&server, &diff("from=1&to=4")).await;
    assert_eq!(
        d,
        json!({
            "from": 1, "to": 4,
            "authors": ["alice", "bob"],
            "content": {TEXT: {"kind": "text", "spans": [
                span("delete", "Hello", Some("alice"), Some(3)),
                span("insert", " world!", Some("bob"), Some(2)),
            ]}},
        })
    );
    // `to` defaults to the newest change; labels and times name points too.
    assert_eq!(get_ok(&server, &diff("from=1")).await, d);
    assert_eq!(get_ok(&server, &diff("from_label=start")).await, d);
    let d = get_ok(&server, &diff("from=2&to=3")).await;
    assert_eq!(
        d,
        json!({
            "from": 2, "to": 3,
            "authors": ["alice"],
            "content": {TEXT: {"kind": "text", "spans": [
                span("delete", "Hello", Some("alice"), Some(3)),
                span("keep", " world", None, None),
            ]}},
        })
    );
    // From the empty document: what was inserted and deleted in between is not shown.
    let d = get_ok(&server, &diff("from=0")).await;
    assert_eq!(
        d["content"][TEXT]["spans"],
        json!([span("insert", " world!", Some("bob"), Some(2))]),
        "{d}"
    );
    assert_eq!(d["authors"], json!(["bob"]), "{d}");
    // No change between the points: nothing to show.
    let d = get_ok(&server, &diff("from=4&to=4")).await;
    assert_eq!(d, json!({"from": 4, "to": 4, "authors": [], "content": {}}));

    // An XML root: blocks with paths, spans with authors; unchanged roots left out.
    write_prosemirror(&mut alice).await; // 5
    let fragment = bob.doc.get_or_insert_xml_fragment("default");
    bob.pump_until(|c| {
        let f = c.doc.get_or_insert_xml_fragment("default");
        f.len(&c.doc.transact()) == 2
    })
    .await;
    let before = bob.updates_received;
    bob.edit(|_, txn| {
        use yrs::XmlElementRef;
        let paragraph: XmlElementRef = fragment
            .get(txn, 1)
            .and_then(|n| n.into_xml_element())
            .expect("the paragraph");
        let body = paragraph
            .get(txn, 0)
            .and_then(|n| n.into_xml_text())
            .expect("its text");
        body.insert(txn, 6, "big ");
    })
    .await;
    bob.pump_until(|c| c.updates_received > before).await; // 6
    let d = get_ok(&server, &diff("from=5&to=6")).await;
    assert_eq!(
        d,
        json!({
            "from": 5, "to": 6,
            "authors": ["bob"],
            "content": {"default": {"kind": "xml", "blocks": [
                {"path": [0], "type": "heading", "op": "keep", "spans": [span("keep", "Title", None, None)]},
                {"path": [1], "type": "paragraph", "op": "keep", "spans": [
                    span("keep", "Hello ", None, None),
                    span("insert", "big ", Some("bob"), Some(6)),
                    span("keep", "world", None, None),
                ]},
            ]}},
        })
    );
    let d = get_ok(&server, &diff("from=4&to=5")).await;
    let blocks = &d["content"]["default"]["blocks"];
    assert_eq!(blocks[0]["op"], "insert", "{d}");
    assert_eq!(
        blocks[0]["spans"],
        json!([span("insert", "Title", Some("alice"), Some(5))])
    );
    assert_eq!(blocks[1]["op"], "insert", "{d}");
    assert_eq!(
        spans_text(&blocks[1]["spans"], true),
        "Hello world",
        "formatting is not a change of its own: {d}"
    );
    assert!(
        d["content"].get(TEXT).is_none(),
        "unchanged root shown: {d}"
    );

    // Times name points: the last change at or before, a change's own time (as the timeline
    // shows it) included.
    let times: Vec<String> = all_changes(&server, name)
        .await
        .iter()
        .map(|c| c["time"].as_str().expect("time").to_string())
        .collect();
    let last_at = |t: &str| times.iter().filter(|x| x.as_str() <= t).count();
    let (t1, t4) = (&times[0], &times[3]);
    let by_time = diff(&format!("from_at={}&to_at={}", enc(t1), enc(t4)));
    let by_seq = diff(&format!("from={}&to={}", last_at(t1), last_at(t4)));
    assert_eq!(
        get_ok(&server, &by_time).await,
        get_ok(&server, &by_seq).await,
        "{by_time} is {by_seq}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Restore

#[tokio::test]
async fn restore_reaches_connected_clients_appears_in_the_timeline_and_can_be_undone() {
    on_every_db!(
        "restore_reaches_connected_clients_appears_in_the_timeline_and_can_be_undone",
        restore
    );
}

async fn restore(db: &Db) {
    let server = start(db).await;
    let name = "restore/doc";
    let mut alice = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    let mut carol = join(&server, name, "carol").await;
    write(&mut alice, "The plan").await; // 1
    write_prosemirror(&mut alice).await; // 2
    let good_xml =
        get_ok(&server, &doc_path(name, "/state?seq=2")).await["content"]["default"].clone();
    bob.pump_until(|c| c.text(TEXT) == "The plan").await;
    write(&mut bob, " is good").await; // 3
    carol
        .pump_until(|c| c.text(TEXT) == "The plan is good")
        .await;
    remove(&mut carol, 0, 4).await; // 4: "plan is good"
    write(&mut carol, " - NOT").await; // 5
    // Carol also wipes the XML fragment's paragraph.
    let fragment = carol.doc.get_or_insert_xml_fragment("default");
    let before = carol.updates_received;
    carol
        .edit(|_, txn| {
            fragment.remove_range(txn, 1, 1);
        })
        .await;
    carol.pump_until(|c| c.updates_received > before).await; // 6
    for c in [&mut alice, &mut bob] {
        converge(c, "plan is good - NOT").await;
    }

    // Restore to seq 3 while all three are connected.
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"seq": 3})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"restored_to": 3, "seq": 7, "changed": true}));
    for c in [&mut alice, &mut bob, &mut carol] {
        converge(c, "The plan is good").await;
        let f = c.doc.get_or_insert_xml_fragment("default");
        assert_eq!(f.len(&c.doc.transact()), 2, "the paragraph is back");
    }
    let svs: BTreeSet<_> = [&alice, &bob, &carol]
        .iter()
        .map(|c| format!("{:?}", c.state_vector()))
        .collect();
    assert_eq!(svs.len(), 1, "all three hold the same state: {svs:?}");
    let now = get_ok(&server, &doc_path(name, "/state")).await;
    assert_eq!(now["seq"], 7);
    assert_eq!(root_text(&now), "The plan is good");
    assert_eq!(now["content"]["default"], good_xml);
    // The restore is a change of its own, by "admin".
    let page = get_ok(&server, &doc_path(name, "/timeline?order=desc&limit=1")).await;
    let change = &page["changes"][0];
    assert_eq!(change["seq"], 7, "{page}");
    assert_eq!(change["author"], "admin", "{page}");
    // At least "The " came back and " - NOT" went (a restore may rewrite more than that).
    let summary = &change["summary"][TEXT];
    assert_eq!(summary["kind"], "text", "{page}");
    assert!(summary["inserted"].as_i64().unwrap() >= 4, "{page}");
    assert!(summary["deleted"].as_i64().unwrap() >= 6, "{page}");
    // The clients keep editing on top of it.
    write(&mut bob, "!").await; // 8
    converge(&mut alice, "The plan is good!").await;

    // Undo the restore: back to the point before it, under a chosen author.
    let (status, r) = post(
        &server,
        &doc_path(name, "/restore"),
        &json!({"seq": 6, "author": "ops:undo"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"restored_to": 6, "seq": 9, "changed": true}));
    for c in [&mut alice, &mut bob, &mut carol] {
        converge(c, "plan is good - NOT").await;
        let f = c.doc.get_or_insert_xml_fragment("default");
        assert_eq!(f.len(&c.doc.transact()), 1, "the paragraph is gone again");
    }
    let page = get_ok(&server, &doc_path(name, "/timeline?order=desc&limit=1")).await;
    assert_eq!(page["changes"][0]["author"], "ops:undo", "{page}");
    assert_eq!(
        root_text(&get_ok(&server, &doc_path(name, "/state")).await),
        "plan is good - NOT"
    );

    // Restoring to what the document already holds changes nothing.
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"seq": 9})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"restored_to": 9, "seq": null, "changed": false}));
    assert_eq!(detail(&server, name).await["last_seq"], 9);

    // By label and by time.
    let (status, _) = post(
        &server,
        &doc_path(name, "/labels"),
        &json!({"name": "first", "seq": 1}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, r) = post(
        &server,
        &doc_path(name, "/restore"),
        &json!({"label": "first"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["restored_to"], 1);
    for c in [&mut alice, &mut bob, &mut carol] {
        converge(c, "The plan").await;
        let f = c.doc.get_or_insert_xml_fragment("default");
        assert_eq!(f.len(&c.doc.transact()), 0, "no XML at seq 1");
    }
    // A time names the last change at or before it; a change's own time includes it.
    let times: Vec<String> = all_changes(&server, name)
        .await
        .iter()
        .map(|c| c["time"].as_str().expect("time").to_string())
        .collect();
    let t3 = times[2].clone();
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"at": t3})).await;
    assert_eq!(status, 200, "{r}");
    let to = r["restored_to"].as_i64().unwrap();
    assert_eq!(to, times.iter().filter(|t| **t <= t3).count() as i64, "{r}");
    let want = root_text(&get_ok(&server, &doc_path(name, &format!("/state?seq={to}"))).await);
    for c in [&mut alice, &mut bob, &mut carol] {
        converge(c, &want).await;
    }
    // Restore to the empty document.
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"seq": 0})).await;
    assert_eq!(status, 200, "{r}");
    for c in [&mut alice, &mut bob, &mut carol] {
        converge(c, "").await;
    }
    assert_eq!(
        get_ok(&server, &doc_path(name, "/state")).await["content"],
        json!({})
    );

    // Nobody was disconnected along the way.
    for c in [&alice, &bob, &carol] {
        assert!(c.closed.is_none());
    }
    server.stop().await;
}

#[tokio::test]
async fn restore_of_a_document_nobody_has_open_is_seen_by_the_next_client() {
    on_every_db!(
        "restore_of_a_document_nobody_has_open_is_seen_by_the_next_client",
        restore_unloaded
    );
}

async fn restore_unloaded(db: &Db) {
    let mut config = admin_config(db);
    config.unload_after = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let name = "restore/closed";
    let mut alice = join(&server, name, "alice").await;
    write(&mut alice, "keep this").await;
    write(&mut alice, " but not this").await;
    alice.close().await;
    eventually("the room unloads", || async {
        detail(&server, name).await["loaded"] == false
    })
    .await;
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"seq": 1})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"restored_to": 1, "seq": 3, "changed": true}));
    let bob = join(&server, name, "bob").await;
    assert_eq!(bob.text(TEXT), "keep this");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Labels

#[tokio::test]
async fn labels_are_created_listed_by_seq_refused_twice_and_deleted() {
    on_every_db!(
        "labels_are_created_listed_by_seq_refused_twice_and_deleted",
        labels
    );
}

async fn labels(db: &Db) {
    let server = start(db).await;
    let name = "labels/doc";
    let mut alice = join(&server, name, "alice").await;
    for s in ["a", "b", "c"] {
        write(&mut alice, s).await;
    }
    let labels = doc_path(name, "/labels");
    assert_eq!(get_ok(&server, &labels).await, json!({"labels": []}));

    // Default: the newest change.
    let (status, v1) = post(&server, &labels, &json!({"name": "v1.0"})).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["name"], "v1.0");
    assert_eq!(v1["seq"], 3);
    let created = v1["created_at"].as_str().expect("created_at");
    humantime::parse_rfc3339(created).expect("RFC 3339");
    let (status, v0) = post(&server, &labels, &json!({"name": "v0 / draft ✓", "seq": 1})).await;
    assert_eq!(status, 201, "{v0}");
    let (status, empty) = post(&server, &labels, &json!({"name": "empty", "seq": 0})).await;
    assert_eq!(status, 201, "{empty}");
    let max = "x".repeat(200);
    let (status, _) = post(&server, &labels, &json!({"name": max, "seq": 2})).await;
    assert_eq!(status, 201, "a 200-character name is allowed");

    // Listed by seq.
    let list = get_ok(&server, &labels).await;
    let names: Vec<_> = list["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["seq"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("empty".to_string(), 0),
            ("v0 / draft ✓".to_string(), 1),
            (max.clone(), 2),
            ("v1.0".to_string(), 3)
        ]
    );
    assert_eq!(list["labels"][3], v1);
    assert_eq!(detail(&server, name).await["labels"], 4);

    // A name is never moved silently.
    let r = request(
        server.addr,
        "POST",
        &labels,
        Some(ADMIN_TOKEN),
        Body::Json(&json!({"name": "v1.0", "seq": 1})),
    )
    .await;
    assert_error(&r, 409, "label exists");
    assert_eq!(
        get_ok(&server, &labels).await,
        list,
        "unchanged by the conflict"
    );

    // Invalid labels.
    for body in [
        json!({"name": "x".repeat(201)}),
        json!({"name": ""}),
        json!({"name": "tab\there"}),
        json!({"name": "v2", "seq": 4}),
        json!({"name": "v2", "seq": -1}),
        json!({"seq": 1}),
        json!({"name": "v2", "colour": "red"}),
        json!({"name": 7}),
    ] {
        expect_error(&server, "POST", &labels, Body::Json(&body), 400).await;
    }

    // Delete, then 404.
    let one = doc_path(name, &format!("/labels/{}", enc("v0 / draft ✓")));
    let (status, body) = delete(&server, &one).await;
    assert_eq!((status, body), (200, json!({"deleted": true})));
    expect_error(&server, "DELETE", &one, Body::None, 404).await;
    expect_error(
        &server,
        "DELETE",
        &doc_path(name, "/labels/never"),
        Body::None,
        404,
    )
    .await;
    assert_eq!(
        get_ok(&server, &labels).await["labels"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The name is free again.
    let (status, _) = post(&server, &labels, &json!({"name": "v0 / draft ✓", "seq": 2})).await;
    assert_eq!(status, 201);
    // An unknown label as a point is 404.
    expect_error(
        &server,
        "GET",
        &doc_path(name, "/state?label=nope"),
        Body::None,
        404,
    )
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Export and import

/// Exports `name`: the update and its `X-Tandem-Seq`.
async fn export(server: &TestServer, name: &str) -> (Vec<u8>, i64) {
    let r = request(
        server.addr,
        "GET",
        &doc_path(name, "/export"),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let seq = r
        .header("x-tandem-seq")
        .and_then(|v| v.parse().ok())
        .expect("X-Tandem-Seq");
    (r.body, seq)
}

/// Imports `update` into `name` with `mode` (`None`: the default).
async fn import(
    server: &TestServer,
    name: &str,
    mode: Option<&str>,
    update: &[u8],
) -> (u16, Value) {
    let query = mode.map(|m| format!("?mode={m}")).unwrap_or_default();
    admin(
        server,
        "POST",
        &doc_path(name, &format!("/import{query}")),
        Body::Bytes(update),
    )
    .await
}

#[tokio::test]
async fn export_and_import_merge_or_replace_and_refuse_garbage() {
    on_every_db!(
        "export_and_import_merge_or_replace_and_refuse_garbage",
        export_import
    );
}

async fn export_import(db: &Db) {
    let server = start(db).await;
    let mut alice = join(&server, "source", "alice").await;
    write(&mut alice, "exported text").await;
    write_prosemirror(&mut alice).await;
    let (update, seq) = export(&server, "source").await;
    assert_eq!(seq, 2);
    assert_eq!(update_text(&update, TEXT), "exported text");

    // Merge into a new document: it is created, and the import is its first change.
    let (status, r) = import(&server, "copy", None, &update).await;
    assert_eq!((status, r), (200, json!({"seq": 1, "changed": true})));
    let copy = get_ok(&server, &doc_path("copy", "/state")).await;
    let source = get_ok(&server, &doc_path("source", "/state")).await;
    assert_eq!(copy["content"], source["content"]);
    let page = get_ok(&server, &doc_path("copy", "/timeline")).await;
    assert_eq!(page["changes"][0]["author"], "admin:import", "{page}");
    // The same update again changes nothing.
    let (status, r) = import(&server, "copy", Some("merge"), &update).await;
    assert_eq!((status, r), (200, json!({"seq": null, "changed": false})));
    // A client of the copy holds exactly the source's state.
    let reader = join(&server, "copy", "bob").await;
    assert_eq!(reader.state_vector(), alice.state_vector());
    assert_eq!(reader.text(TEXT), "exported text");

    // Merge into a document with content of its own: both survive.
    let mut carol = join(&server, "target", "carol").await;
    write(&mut carol, "mine. ").await;
    let (status, r) = import(&server, "target", Some("merge"), &update).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["changed"], true);
    carol
        .pump_until(|c| {
            let t = c.text(TEXT);
            t.contains("mine. ") && t.contains("exported text")
        })
        .await;

    // Replace: a connected client converges to exactly the update's content.
    let mut dave = join(&server, "replaced", "dave").await;
    write(&mut dave, "old content").await;
    let (status, r) = import(&server, "replaced", Some("replace"), &update).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"seq": 2, "changed": true}));
    converge(&mut dave, "exported text").await;
    let replaced = get_ok(&server, &doc_path("replaced", "/state")).await;
    assert_eq!(replaced["content"], source["content"]);
    // Export reflects the live room.
    let (now, seq) = export(&server, "replaced").await;
    assert_eq!(seq, 2);
    assert_eq!(update_text(&now, TEXT), "exported text");
    // Replacing with the same content changes nothing.
    let (status, r) = import(&server, "replaced", Some("replace"), &update).await;
    assert_eq!((status, r), (200, json!({"seq": null, "changed": false})));

    // Garbage, an empty body, an unknown mode: 400, and nothing is created.
    for (body, mode) in [
        (&b"this is not a Yjs update"[..], None),
        (&[0xff, 0xff, 0xff, 0xff, 0xff][..], Some("merge")),
        (&b"\x01\x01\xff\xff\xff\xff\x0f"[..], Some("replace")),
        (&b""[..], None),
        (&update[..], Some("overwrite")),
    ] {
        let query = mode.map(|m| format!("?mode={m}")).unwrap_or_default();
        let r = request(
            server.addr,
            "POST",
            &doc_path("garbage", &format!("/import{query}")),
            Some(ADMIN_TOKEN),
            Body::Bytes(body),
        )
        .await;
        assert_error(&r, 400, &format!("import of {body:?} mode {mode:?}"));
    }
    let r = request(
        server.addr,
        "GET",
        &doc_path("garbage", ""),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert_error(&r, 404, "a refused import creates nothing");
    // Garbage into an existing document leaves it as it was.
    let r = request(
        server.addr,
        "POST",
        &doc_path("copy", "/import"),
        Some(ADMIN_TOKEN),
        Body::Bytes(b"\x00garbage"),
    )
    .await;
    assert_error(&r, 400, "garbage into an existing document");
    assert_eq!(detail(&server, "copy").await["last_seq"], 1);

    // A deleted document takes no import.
    let (status, _) = delete(&server, &doc_path("copy", "")).await;
    assert_eq!(status, 200);
    let r = request(
        server.addr,
        "POST",
        &doc_path("copy", "/import"),
        Some(ADMIN_TOKEN),
        Body::Bytes(&update),
    )
    .await;
    assert_error(&r, 410, "import into a deleted document");
    let r = request(
        server.addr,
        "POST",
        &doc_path("copy", "/import?mode=replace"),
        Some(ADMIN_TOKEN),
        Body::Bytes(&update),
    )
    .await;
    assert_error(&r, 410, "replace-import into a deleted document");
    expect_error(
        &server,
        "GET",
        &doc_path("copy", "/export"),
        Body::None,
        410,
    )
    .await;
    expect_error(
        &server,
        "GET",
        &doc_path("nothing", "/export"),
        Body::None,
        404,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_import_larger_than_the_limit_gets_413_json() {
    on_every_db!(
        "an_import_larger_than_the_limit_gets_413_json",
        import_too_large
    );
}

async fn import_too_large(db: &Db) {
    let mut config = admin_config(db);
    config.max_import_size = 1024;
    let server = TestServer::start(config).await;
    let update = common::text_update(TEXT, &"x".repeat(4000));
    let r = request(
        server.addr,
        "POST",
        &doc_path("big", "/import"),
        Some(ADMIN_TOKEN),
        Body::Bytes(&update),
    )
    .await;
    assert_error(&r, 413, "import over --max-import-size");
    let small = common::text_update(TEXT, "fits");
    let (status, r) = import(&server, "big", None, &small).await;
    assert_eq!(status, 200, "{r}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Delete, snapshot, disconnect

#[tokio::test]
async fn delete_closes_clients_with_4410_refuses_the_name_with_410_and_survives_a_restart() {
    on_every_db!(
        "delete_closes_clients_with_4410_refuses_the_name_with_410_and_survives_a_restart",
        delete_document
    );
}

async fn delete_document(db: &Db) {
    let server = start(db).await;
    let name = "secret/plan";
    let mut alice = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    write(&mut alice, "delete me").await;
    let (status, _) = post(&server, &doc_path(name, "/labels"), &json!({"name": "v1"})).await;
    assert_eq!(status, 201);
    let (status, _) = post(&server, &doc_path(name, "/snapshot"), &json!({})).await;
    assert_eq!(status, 200);
    let mut neighbour = join(&server, "secret/other", "alice").await;
    write(&mut neighbour, "unrelated").await;

    let (status, r) = delete(&server, &doc_path(name, "")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"deleted": true, "connections_closed": 2}));
    assert_eq!(alice.expect_close().await, Some(4410));
    assert_eq!(bob.expect_close().await, Some(4410));

    // Refused before the upgrade, whoever asks; the neighbour is untouched.
    assert_eq!(
        upgrade_status(server.addr, &ws_path(name, "alice")).await,
        410
    );
    assert_eq!(
        upgrade_status(server.addr, &ws_path(name, "mallory")).await,
        410
    );
    write(&mut neighbour, " still here").await;
    let check_gone = |server: &TestServer| {
        let addr = server.addr;
        async move {
            for (method, rest) in [
                ("GET", ""),
                ("GET", "/timeline"),
                ("GET", "/state"),
                ("GET", "/diff?from=0"),
                ("GET", "/labels"),
                ("GET", "/export"),
                ("POST", "/snapshot"),
                ("DELETE", ""),
            ] {
                let r = request(
                    addr,
                    method,
                    &doc_path(name, rest),
                    Some(ADMIN_TOKEN),
                    Body::None,
                )
                .await;
                assert_error(&r, 410, &format!("{method} {rest} of a deleted document"));
            }
            let r = request(
                addr,
                "POST",
                &doc_path(name, "/restore"),
                Some(ADMIN_TOKEN),
                Body::Json(&json!({"seq": 1})),
            )
            .await;
            assert_error(&r, 410, "restore of a deleted document");
            let r = request(
                addr,
                "POST",
                &doc_path(name, "/import"),
                Some(ADMIN_TOKEN),
                Body::Bytes(&common::text_update(TEXT, "resurrected")),
            )
            .await;
            assert_error(&r, 410, "import into a deleted document");
        }
    };
    check_gone(&server).await;
    let listed = get_ok(&server, &format!("{API}/documents?prefix=secret%2F")).await;
    assert_eq!(listed["documents"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["documents"][0]["name"], "secret/other");

    // The tombstone is stored: a new server on the same database refuses the name too.
    server.stop().await;
    let server = start(db).await;
    assert_eq!(
        upgrade_status(server.addr, &ws_path(name, "alice")).await,
        410
    );
    check_gone(&server).await;
    let other = join(&server, "secret/other", "bob").await;
    assert_eq!(other.text(TEXT), "unrelated still here");
    // Deleting something that never existed is 404.
    expect_error(
        &server,
        "DELETE",
        &doc_path("never/was", ""),
        Body::None,
        404,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn snapshot_answers_its_seq_once_stored() {
    on_every_db!("snapshot_answers_its_seq_once_stored", snapshot);
}

async fn snapshot(db: &Db) {
    let mut config = admin_config(db);
    config.unload_after = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let name = "snap/doc";
    let mut alice = join(&server, name, "alice").await;
    for s in ["one", " two", " three"] {
        write(&mut alice, s).await;
    }
    let d = detail(&server, name).await;
    assert_eq!(
        (d["snapshots"].clone(), d["latest_snapshot"].clone()),
        (json!(0), Value::Null)
    );

    let (status, r) = admin(&server, "POST", &doc_path(name, "/snapshot"), Body::None).await;
    assert_eq!((status, r), (200, json!({"seq": 3})));
    let d = detail(&server, name).await;
    assert_eq!(d["snapshots"], 1, "{d}");
    let latest = &d["latest_snapshot"];
    assert_eq!(latest["seq"], 3, "{d}");
    assert!(latest["bytes"].as_i64().unwrap() > 0, "{d}");
    assert_eq!(d["snapshot_bytes"], latest["bytes"], "{d}");
    humantime::parse_rfc3339(latest["created_at"].as_str().unwrap()).expect("time");
    // History reads across the snapshot still work.
    assert_eq!(
        text_at(&server, name, "seq=2").await,
        (2, "one two".to_string())
    );
    assert_eq!(text_at(&server, name, "seq=3").await.1, "one two three");

    // A document nobody has open is loaded for it.
    write(&mut alice, " four").await;
    alice.close().await;
    eventually("the room unloads", || async {
        detail(&server, name).await["loaded"] == false
    })
    .await;
    let (status, r) = admin(&server, "POST", &doc_path(name, "/snapshot"), Body::None).await;
    assert_eq!((status, r), (200, json!({"seq": 4})));
    let d = detail(&server, name).await;
    assert_eq!(d["latest_snapshot"]["seq"], 4, "{d}");
    assert_eq!(
        text_at(&server, name, "").await,
        (4, "one two three four".to_string())
    );
    // Nothing new: a snapshot of the same seq.
    let (status, r) = admin(&server, "POST", &doc_path(name, "/snapshot"), Body::None).await;
    assert_eq!((status, r), (200, json!({"seq": 4})));
    expect_error(
        &server,
        "POST",
        &doc_path("snap/none", "/snapshot"),
        Body::None,
        404,
    )
    .await;
    let bob = join(&server, name, "bob").await;
    assert_eq!(bob.text(TEXT), "one two three four");
    server.stop().await;
}

#[tokio::test]
async fn disconnect_closes_with_4000_everyone_or_one_user() {
    on_every_db!(
        "disconnect_closes_with_4000_everyone_or_one_user",
        disconnect
    );
}

async fn disconnect(db: &Db) {
    let server = start(db).await;
    let name = "kick/doc";
    let path = doc_path(name, "/disconnect");
    let mut alice1 = join(&server, name, "alice").await;
    let mut alice2 = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    let mut elsewhere = join(&server, "kick/other", "alice").await;

    let (status, r) = post(&server, &path, &json!({"user": "alice"})).await;
    assert_eq!((status, r), (200, json!({"connections_closed": 2})));
    assert_eq!(alice1.expect_close().await, Some(4000));
    assert_eq!(alice2.expect_close().await, Some(4000));
    // Bob and alice's other document stay connected and working.
    write(&mut bob, "still here").await;
    write(&mut elsewhere, "me too").await;
    let (status, r) = post(&server, &path, &json!({"user": "nobody"})).await;
    assert_eq!((status, r), (200, json!({"connections_closed": 0})));
    // Disconnected is not refused: alice comes back.
    let again = join(&server, name, "alice").await;
    assert_eq!(again.text(TEXT), "still here");

    // Without a body: everyone.
    let (status, r) = admin(&server, "POST", &path, Body::None).await;
    assert_eq!((status, r), (200, json!({"connections_closed": 2})));
    assert_eq!(bob.expect_close().await, Some(4000));
    let mut again = again;
    assert_eq!(again.expect_close().await, Some(4000));
    eventually("closed connections leave the document", || async {
        post(&server, &path, &json!({})).await == (200, json!({"connections_closed": 0}))
    })
    .await;
    // A document nobody has open.
    let (status, r) = post(&server, &doc_path("kick/none", "/disconnect"), &json!({})).await;
    assert_eq!((status, r), (200, json!({"connections_closed": 0})));

    for body in [
        r#"{"user": "alice", "extra": 1}"#,
        r#"{"user": 5}"#,
        "{not json",
        "[]",
    ] {
        expect_error(&server, "POST", &path, Body::RawJson(body), 400).await;
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The bearer token, on every documented operation

/// A documented operation.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    /// The path template, `{name}` and `{label}` included.
    template: String,
    id: String,
    /// Whether it needs the admin token (`security: []` opts out).
    secured: bool,
    /// `application/json`, `application/octet-stream` or none.
    body: Option<String>,
}

impl Operation {
    fn path(&self, name: &str) -> String {
        self.template
            .replace("{name}", &enc(name))
            .replace("{label}", "v1")
    }

    /// A plausible body for the operation.
    fn body<'a>(&self, json_body: &'a Value, bytes: &'a [u8]) -> Body<'a> {
        match self.body.as_deref() {
            Some("application/json") => Body::Json(json_body),
            Some(_) => Body::Bytes(bytes),
            None => Body::None,
        }
    }
}

/// Every operation of the OpenAPI document.
fn operations(openapi: &Value) -> Vec<Operation> {
    let global_secured = openapi["security"]
        .as_array()
        .is_some_and(|s| !s.is_empty());
    let mut ops = Vec::new();
    for (template, item) in openapi["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            let secured = match op.get("security") {
                Some(s) => s.as_array().is_some_and(|s| !s.is_empty()),
                None => global_secured,
            };
            let body = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned());
            ops.push(Operation {
                method: method.to_uppercase(),
                template: template.clone(),
                id: op["operationId"].as_str().expect("operationId").to_string(),
                secured,
                body,
            });
        }
    }
    ops
}

/// The OpenAPI document as served (no token needed).
async fn served_openapi(server: &TestServer) -> Value {
    let r = http_send(server.addr, "GET", "/api/v1/openapi.json", &[], &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json"))
    );
    body_json(&r)
}

#[tokio::test]
async fn every_documented_operation_needs_the_admin_token_and_is_off_without_one() {
    on_every_db!(
        "every_documented_operation_needs_the_admin_token_and_is_off_without_one",
        admin_auth
    );
}

async fn admin_auth(db: &Db) {
    let server = start(db).await;
    let openapi = served_openapi(&server).await;
    let embedded: Value =
        serde_json::from_str(include_str!("../src/admin/openapi.json")).expect("openapi.json");
    assert_eq!(openapi, embedded);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    let ops = operations(&openapi);
    let ids: BTreeSet<_> = ops.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids.len(), ops.len(), "operationIds are unique");
    for id in [
        "revoke",
        "liftRevocation",
        "listDocuments",
        "getDocument",
        "deleteDocument",
        "snapshotDocument",
        "disconnectClients",
        "exportDocument",
        "importDocument",
        "getTimeline",
        "getState",
        "getDiff",
        "restoreDocument",
        "listLabels",
        "createLabel",
        "deleteLabel",
    ] {
        assert!(ids.contains(id), "{id} is documented");
    }
    let secured: Vec<_> = ops.iter().filter(|o| o.secured).collect();
    assert!(
        secured.iter().all(|o| o.template.starts_with(API)),
        "{secured:?}"
    );
    assert!(
        ops.iter()
            .filter(|o| !o.secured)
            .all(|o| o.template == "/api/v1/openapi.json"),
        "only the description itself is public: {ops:?}"
    );

    let name = "auth/doc";
    let mut alice = join(&server, name, "alice").await;
    write(&mut alice, "protected").await;
    let (status, _) = post(&server, &doc_path(name, "/labels"), &json!({"name": "v1"})).await;
    assert_eq!(status, 201);
    let json_body = json!({"seq": 1, "user": "alice", "name": "v2", "token_id": "t"});
    let update = common::text_update(TEXT, "intruder");
    let wrong = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(ADMIN_TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ];
    for op in &secured {
        let path = op.path(name);
        for auth in &wrong {
            let mut headers = Vec::new();
            if let Some(a) = auth {
                headers.push(("Authorization", a.as_str()));
            }
            let bytes = match op.body(&json_body, &update) {
                Body::Json(v) => {
                    headers.push(("Content-Type", "application/json"));
                    serde_json::to_vec(v).unwrap()
                }
                Body::Bytes(b) => {
                    headers.push(("Content-Type", "application/octet-stream"));
                    b.to_vec()
                }
                _ => Vec::new(),
            };
            let r = http_send(server.addr, &op.method, &path, &headers, &bytes).await;
            let what = format!("{} {} with {auth:?}", op.method, path);
            assert_error(&r, 401, &what);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
            assert_eq!(body_json(&r)["reason"], "missing or invalid admin token");
            check_response(&op.method, &path, 401, &body_json(&r));
        }
    }
    // Nothing an unauthorized request asked for happened: no change, no label made or removed,
    // no deletion, no disconnection or revocation of alice.
    let d = detail(&server, name).await;
    assert_eq!(
        (d["last_seq"].clone(), d["labels"].clone()),
        (json!(1), json!(1)),
        "{d}"
    );
    write(&mut alice, " still").await;
    assert!(alice.closed.is_none());
    assert_eq!(
        root_text(&get_ok(&server, &doc_path(name, "/state")).await),
        "protected still"
    );

    // With the token every documented operation is routed (whatever it answers about a
    // document that does not exist).
    for op in &secured {
        let path = op.path(&format!("fresh/{}", op.id));
        let r = request(
            server.addr,
            &op.method,
            &path,
            Some(ADMIN_TOKEN),
            op.body(&json_body, &update),
        )
        .await;
        assert!(r.status != 401 && r.status != 405, "{op:?}: {}", r.status);
        if r.status == 404 {
            assert_ne!(
                body_json(&r)["reason"],
                "no such admin endpoint",
                "{op:?} is documented but not routed"
            );
        }
    }

    // An unknown admin path: 401 without the token, 404 JSON with it.
    let r = request(server.addr, "GET", &format!("{API}/nope"), None, Body::None).await;
    assert_error(&r, 401, "unknown admin path without a token");
    expect_error(&server, "GET", &format!("{API}/nope"), Body::None, 404).await;
    server.stop().await;

    // Without an admin token configured: every operation is 404, whatever is presented.
    let mut config = admin_config(db);
    config.admin_token = None;
    let server = TestServer::start(config).await;
    assert_eq!(served_openapi(&server).await, embedded);
    for op in &secured {
        let path = op.path(name);
        for auth in [None, Some(ADMIN_TOKEN), Some("anything")] {
            let r = request(
                server.addr,
                &op.method,
                &path,
                auth,
                op.body(&json_body, &update),
            )
            .await;
            let what = format!("{} {path} with {auth:?}, admin API off", op.method);
            assert_error(&r, 404, &what);
            assert!(
                body_json(&r)["reason"]
                    .as_str()
                    .unwrap()
                    .contains("the admin API is disabled"),
                "{what}"
            );
            assert!(r.header("www-authenticate").is_none(), "{what}");
            check_response(&op.method, &path, 404, &body_json(&r));
        }
    }
    // The document is still there for its clients.
    let bob = join(&server, name, "bob").await;
    assert!(bob.text(TEXT).starts_with("protected"));
    server.stop().await;
}

#[tokio::test]
async fn methods_a_documented_path_does_not_document_get_405_json() {
    on_every_db!(
        "methods_a_documented_path_does_not_document_get_405_json",
        undocumented_methods
    );
}

async fn undocumented_methods(db: &Db) {
    let server = start(db).await;
    let ops = operations(spec());
    let name = "auth/doc";
    // Methods a documented path does not document are refused (405), with the token too.
    let admin_paths = ops
        .iter()
        .map(|o| &o.template)
        .filter(|t| t.starts_with(API));
    for template in admin_paths.collect::<BTreeSet<_>>() {
        let documented: Vec<_> = ops
            .iter()
            .filter(|o| &o.template == template)
            .map(|o| o.method.as_str())
            .collect();
        let path = ops
            .iter()
            .find(|o| &o.template == template)
            .unwrap()
            .path(name);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(&method) {
                continue;
            }
            let r = request(server.addr, method, &path, Some(ADMIN_TOKEN), Body::None).await;
            assert_error(&r, 405, &format!("{method} {path} is not documented"));
        }
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

#[tokio::test]
async fn bad_parameters_and_bodies_get_400_and_unknown_documents_404_as_json() {
    on_every_db!(
        "bad_parameters_and_bodies_get_400_and_unknown_documents_404_as_json",
        bad_inputs
    );
}

async fn bad_inputs(db: &Db) {
    let server = start(db).await;
    let name = "bad/doc";
    let mut alice = join(&server, name, "alice").await;
    for s in ["a", "b", "c"] {
        write(&mut alice, s).await;
    }
    let (status, _) = post(&server, &doc_path(name, "/labels"), &json!({"name": "v1"})).await;
    assert_eq!(status, 201);
    let d = |rest: &str| doc_path(name, rest);
    let long_name = "n".repeat(513);
    let gets = [
        format!("{API}/documents?limit=0"),
        format!("{API}/documents?limit=1001"),
        format!("{API}/documents?limit=10001"),
        format!("{API}/documents?limit=-1"),
        format!("{API}/documents?limit=many"),
        d("/timeline?limit=0"),
        d("/timeline?limit=1001"),
        d("/timeline?limit=10001"),
        d("/timeline?order=sideways"),
        d("/timeline?group=day"),
        d("/timeline?gap=-5"),
        d("/timeline?after=first"),
        d("/state?seq=-1"),
        d("/state?seq=4"),
        d("/state?seq=9223372036854775807"),
        d("/state?seq=99999999999999999999"),
        d("/state?seq=one"),
        d("/state?at=yesterday"),
        d("/state?at=2026-13-45T00%3A00%3A00Z"),
        d("/state?at="),
        d("/state?seq=1&label=v1"),
        d("/state?seq=1&at=1000"),
        d("/state?format=xml"),
        d("/diff"),
        d("/diff?to=2"),
        d("/diff?from=-1"),
        d("/diff?from=4"),
        d("/diff?from=0&to=4"),
        d("/diff?from=3&to=1"),
        d("/diff?from_at=noon"),
        d("/diff?from=1&from_label=v1"),
        d("/diff?from=1&to=2&to_at=1000"),
        doc_path(&long_name, ""),
        doc_path(&long_name, "/timeline"),
        doc_path(&long_name, "/state"),
        format!("{API}/documents/%FF%FE"),
        format!("{API}/documents/%FF%FE/timeline"),
    ];
    for path in &gets {
        expect_error(&server, "GET", path, Body::None, 400).await;
    }
    let restore = d("/restore");
    let bodies: [&str; 16] = [
        "{}",
        r#"{"seq": -1}"#,
        r#"{"seq": 4}"#,
        r#"{"seq": "1"}"#,
        r#"{"seq": 1.5}"#,
        r#"{"at": "later"}"#,
        r#"{"seq": 1, "label": "v1"}"#,
        r#"{"seq": 1, "colour": "red"}"#,
        r#"{"seq": 1, "author": ""}"#,
        r#"{"seq": 1, "author": "bell\u0007"}"#,
        "{seq: 1}",
        r#"{"seq": 1"#,
        "",
        "null",
        "[1]",
        "\"seq\"",
    ];
    for body in bodies {
        expect_error(&server, "POST", &restore, Body::RawJson(body), 400).await;
    }
    let long_author = json!({"seq": 1, "author": "a".repeat(201)});
    expect_error(&server, "POST", &restore, Body::Json(&long_author), 400).await;
    // A JSON body without its content type.
    let r = http_send(
        server.addr,
        "POST",
        &restore,
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        br#"{"seq": 1}"#,
    )
    .await;
    assert_error(&r, 400, "restore without Content-Type: application/json");
    for body in ["{name: 1}", r#"{"name": "x", "seq": 1, "at": 5}"#, ""] {
        expect_error(&server, "POST", &d("/labels"), Body::RawJson(body), 400).await;
    }
    for method in ["POST", "DELETE"] {
        for body in [
            "{}",
            r#"{"token_id": 5}"#,
            r#"{"user": "u", "why": "x"}"#,
            "{",
        ] {
            if method == "DELETE" && body == "{}" {
                continue; // lifting nothing: 404 below
            }
            expect_error(
                &server,
                method,
                &format!("{API}/revocations"),
                Body::RawJson(body),
                400,
            )
            .await;
        }
    }
    expect_error(
        &server,
        "DELETE",
        &format!("{API}/revocations"),
        Body::Json(&json!({"user": "never-revoked"})),
        404,
    )
    .await;
    // None of that changed anything.
    let dd = detail(&server, name).await;
    assert_eq!(
        (dd["last_seq"].clone(), dd["labels"].clone()),
        (json!(3), json!(1))
    );
    assert!(alice.closed.is_none());

    // Unknown points and documents: 404.
    for path in [
        d("/state?label=nope"),
        d("/diff?from_label=nope"),
        d("/diff?from=0&to_label=nope"),
    ] {
        expect_error(&server, "GET", &path, Body::None, 404).await;
    }
    expect_error(
        &server,
        "POST",
        &restore,
        Body::Json(&json!({"label": "nope"})),
        404,
    )
    .await;
    let missing = "no/such/doc";
    for (method, rest, body) in [
        ("GET", "", Body::None),
        ("DELETE", "", Body::None),
        ("GET", "/timeline", Body::None),
        ("GET", "/state", Body::None),
        ("GET", "/state?seq=0", Body::None),
        ("GET", "/diff?from=0", Body::None),
        ("GET", "/labels", Body::None),
        ("POST", "/labels", Body::Json(&json!({"name": "v1"}))),
        ("DELETE", "/labels/v1", Body::None),
        ("POST", "/restore", Body::Json(&json!({"seq": 0}))),
        ("POST", "/snapshot", Body::None),
        ("GET", "/export", Body::None),
    ] {
        expect_error(&server, method, &doc_path(missing, rest), body, 404).await;
    }
    // None of those created the document.
    let listed = get_ok(&server, &format!("{API}/documents?prefix=no%2F")).await;
    assert_eq!(listed["documents"], json!([]), "{listed}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Memory storage

#[tokio::test]
async fn with_memory_storage_history_answers_409_and_live_operations_work() {
    let mut c = config();
    c.database_url = Some("memory".into());
    c.admin_token = Some(ADMIN_TOKEN.into());
    let server = TestServer::start(c).await;
    let name = "mem/doc";
    let mut alice = Client::join(&server.url(name)).await;
    write(&mut alice, "volatile").await;
    for (method, rest, body) in [
        ("GET", "", Body::None),
        ("DELETE", "", Body::None),
        ("GET", "/timeline", Body::None),
        ("GET", "/state", Body::None),
        ("GET", "/diff?from=0", Body::None),
        ("GET", "/labels", Body::None),
        ("POST", "/labels", Body::Json(&json!({"name": "v1"}))),
        ("DELETE", "/labels/v1", Body::None),
        ("POST", "/restore", Body::Json(&json!({"seq": 0}))),
        ("POST", "/snapshot", Body::None),
    ] {
        expect_error(&server, method, &doc_path(name, rest), body, 409).await;
    }
    expect_error(&server, "GET", &format!("{API}/documents"), Body::None, 409).await;
    let r = request(
        server.addr,
        "GET",
        &doc_path(name, "/state"),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert!(
        body_json(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("durable storage"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    // The live room still answers: export and disconnect.
    let (update, _) = export(&server, name).await;
    assert_eq!(update_text(&update, TEXT), "volatile");
    expect_error(
        &server,
        "GET",
        &doc_path("mem/none", "/export"),
        Body::None,
        404,
    )
    .await;
    let (status, r) = post(&server, &doc_path(name, "/disconnect"), &json!({})).await;
    assert_eq!((status, r), (200, json!({"connections_closed": 1})));
    assert_eq!(alice.expect_close().await, Some(4000));
    // The token is still required.
    let r = request(
        server.addr,
        "GET",
        &doc_path(name, "/state"),
        None,
        Body::None,
    )
    .await;
    assert_error(&r, 401, "memory storage, no token");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A real editing trace

/// The trace prefix in tests/data (see tests/data/README.md: editing-traces by Joseph Gentle,
/// CC BY 4.0).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    start_content: String,
    end_content: String,
    patches: Vec<(u32, u32, String)>,
}

fn load_trace() -> Trace {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/automerge-paper-3000.json"
    );
    let trace: Trace = serde_json::from_slice(&std::fs::read(path).expect("read the trace"))
        .expect("parse the trace");
    assert!(trace.start_content.is_empty() && trace.end_content.is_ascii());
    trace
}

/// The text after each op: `texts[n]` is the text after the first `n` ops.
fn replay(trace: &Trace) -> Vec<String> {
    let mut text = trace.start_content.clone();
    let mut texts = vec![text.clone()];
    for (pos, del, ins) in &trace.patches {
        let pos = *pos as usize;
        text.replace_range(pos..pos + *del as usize, ins);
        texts.push(text.clone());
    }
    assert_eq!(
        text, trace.end_content,
        "the local replay matches the trace"
    );
    texts
}

/// Ops are typed in blocks of this many, alternately by alice and bob.
const BLOCK: usize = 500;

/// Who typed op `seq` (1-based).
fn author_of(seq: i64) -> &'static str {
    if ((seq - 1) as usize / BLOCK).is_multiple_of(2) {
        "alice"
    } else {
        "bob"
    }
}

#[tokio::test]
async fn state_and_diff_match_a_replay_of_a_real_editing_trace() {
    on_every_db!(
        "state_and_diff_match_a_replay_of_a_real_editing_trace",
        trace_history
    );
}

async fn trace_history(db: &Db) {
    let trace = load_trace();
    let texts = replay(&trace);
    let n = trace.patches.len();
    let mut config = admin_config(db);
    config.snapshot_every_updates = 250;
    let server = TestServer::start(config).await;
    let name = "trace/automerge-paper";
    let mut clients = [
        join(&server, name, "alice").await,
        join(&server, name, "bob").await,
    ];

    // One update per op, as the editor sent them; the typist alternates every BLOCK ops and
    // starts each block holding everything before it.
    let started = std::time::Instant::now();
    for (block, ops) in trace.patches.chunks(BLOCK).enumerate() {
        let c = &mut clients[block % 2];
        let text = c.doc.get_or_insert_text(TEXT);
        for (pos, del, ins) in ops {
            c.edit(|_, txn| {
                if *del > 0 {
                    text.remove_range(txn, *pos, *del);
                }
                if !ins.is_empty() {
                    text.insert(txn, *pos, ins);
                }
            })
            .await;
        }
        // The other client holds the block once the server relayed it, which it does only
        // after making it durable; then it takes over.
        let done = block * BLOCK + ops.len();
        let other = &mut clients[(block + 1) % 2];
        other.pump_until(|c| c.text(TEXT) == texts[done]).await;
    }
    println!("{} ops typed and durable in {:?}", n, started.elapsed());
    let d = detail(&server, name).await;
    assert_eq!(d["last_seq"], n as i64, "{d}");
    assert!(
        d["snapshots"].as_i64().unwrap() >= 1,
        "snapshots were taken: {d}"
    );
    let latest = d["latest_snapshot"]["seq"].as_i64().expect("a snapshot");
    assert!(latest >= 250, "{d}");

    // State at many points (on, just before and just after snapshots too) is the replay.
    let started = std::time::Instant::now();
    let mut points: Vec<usize> = vec![0, 1, 2, 249, 250, 251, 499, 500, 501, 777, 1234, 1750];
    points.extend([2000, 2222, 2500, 2999, n - 1, n]);
    points.extend((0..=n).step_by(97));
    for seq in points {
        let (got_seq, got) = text_at(&server, name, &format!("seq={seq}")).await;
        assert_eq!(got_seq, seq as i64);
        assert_eq!(got, texts[seq], "state at seq {seq}");
    }
    let r = request(
        server.addr,
        "GET",
        &doc_path(name, "/state?seq=1600&format=binary"),
        Some(ADMIN_TOKEN),
        Body::None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(update_text(&r.body, TEXT), texts[1600]);
    println!("state reads in {:?}", started.elapsed());

    // Diffs: keep + insert is the text at `to`, keep + delete the text at `from`; every insert
    // and delete names a change in between and its author.
    let started = std::time::Instant::now();
    let pairs = [
        (0, n),
        (250, 1750),
        (499, 501),
        (1000, 1001),
        (1234, 2345),
        (n - 1, n),
        (0, 1),
        (1500, 3000),
    ];
    for (from, to) in pairs {
        let d = get_ok(
            &server,
            &doc_path(name, &format!("/diff?from={from}&to={to}")),
        )
        .await;
        assert_eq!(
            (d["from"].as_i64(), d["to"].as_i64()),
            (Some(from as i64), Some(to as i64))
        );
        let spans = &d["content"][TEXT]["spans"];
        if texts[from] == texts[to] && spans.is_null() {
            continue;
        }
        assert_eq!(
            spans_text(spans, true),
            texts[to],
            "diff {from}..{to}: text at to"
        );
        assert_eq!(
            spans_text(spans, false),
            texts[from],
            "diff {from}..{to}: text at from"
        );
        let mut authors = BTreeSet::new();
        for s in spans.as_array().unwrap() {
            if s["op"] == "keep" {
                assert_eq!(
                    (&s["author"], &s["seq"]),
                    (&Value::Null, &Value::Null),
                    "{s}"
                );
                continue;
            }
            let seq = s["seq"].as_i64().expect("seq of a change");
            assert!(
                seq > from as i64 && seq <= to as i64,
                "diff {from}..{to}: {s}"
            );
            assert_eq!(s["author"], author_of(seq), "diff {from}..{to}: {s}");
            authors.insert(author_of(seq));
        }
        let listed: BTreeSet<_> = d["authors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(listed, authors, "diff {from}..{to}: authors");
    }
    println!("diffs in {:?}", started.elapsed());

    // The timeline counts each op's characters and names its typist.
    let started = std::time::Instant::now();
    let changes = all_changes(&server, name).await;
    assert_eq!(changes.len(), n);
    for (i, (c, (_, del, ins))) in changes.iter().zip(&trace.patches).enumerate() {
        let seq = i as i64 + 1;
        assert_eq!(c["seq"], seq);
        assert_eq!(c["author"], author_of(seq), "{c}");
        assert_eq!(
            c["summary"][TEXT],
            json!({"kind": "text", "inserted": ins.len(), "deleted": del}),
            "op {seq}"
        );
    }
    let desc = get_ok(
        &server,
        &doc_path(name, "/timeline?order=desc&limit=1000&before=2001"),
    )
    .await;
    assert_eq!(
        seqs(&desc["changes"]),
        (1001..=2000).rev().collect::<Vec<i64>>()
    );
    assert_eq!(desc["next"], 1001);
    let sessions = get_ok(
        &server,
        &doc_path(name, "/timeline?group=session&limit=1000&after=250"),
    )
    .await;
    let shape: Vec<_> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["author"].clone(),
                s["from_seq"].clone(),
                s["to_seq"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (json!("alice"), json!(251), json!(500)),
            (json!("bob"), json!(501), json!(1000)),
            (json!("alice"), json!(1001), json!(1250)),
        ]
    );
    println!("timeline in {:?}", started.elapsed());

    // Restore to the middle of the trace: both typists converge to the replay there.
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"seq": 1500})).await;
    assert_eq!(status, 200, "{r}");
    for c in clients.iter_mut() {
        converge(c, &texts[1500]).await;
    }
    let (_, now) = text_at(&server, name, "").await;
    assert_eq!(now, texts[1500]);
    server.stop().await;
}

#[test]
fn the_schema_check_rejects_answers_that_do_not_match() {
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(conforms(&error, &json!({"status": 400, "reason": "bad"}), "$").is_ok());
    assert!(conforms(&error, &json!({"status": 400}), "$").is_err());
    assert!(conforms(&error, &json!({"status": "400", "reason": "bad"}), "$").is_err());
    assert!(
        conforms(
            &error,
            &json!({"status": 400, "reason": "bad", "x": 1}),
            "$"
        )
        .is_err()
    );
    let page = json!({"$ref": "#/components/schemas/ChangePage"});
    let change = json!({"seq": 1, "time": "2026-11-25T18:49:10.123Z", "size": 3, "author": null,
        "clients": [1], "summary": {"t": {"kind": "text", "inserted": 1, "deleted": 0}}});
    assert!(conforms(&page, &json!({"changes": [change], "next": null}), "$").is_ok());
    let mut bad = change.clone();
    bad["summary"]["t"]["kind"] = json!("rope");
    assert!(conforms(&page, &json!({"changes": [bad], "next": null}), "$").is_err());
    let detail = json!({"$ref": "#/components/schemas/DocumentDetail"});
    assert!(conforms(&detail, &json!({"name": "x"}), "$").is_err());
    assert!(operation_for("GET", &format!("{API}/documents/a%2Fb/timeline?x=1")).is_some());
    assert!(operation_for("PUT", &format!("{API}/documents/a")).is_none());
}
