//! Shared by the admin API tests (`tests/admin_*.rs`): servers with the admin API on, clients
//! that write through real WebSocket connections, admin requests, and the check that every
//! JSON answer matches the OpenAPI document the server generates (`tandem::admin::openapi`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

// What the admin tests use, so each of them needs only `use common::admin::*;`.
#[allow(unused_imports)]
pub(crate) use super::on_every_db;
#[allow(unused_imports)]
pub use super::{
    Client, Db, HttpResponse, TestServer, config, eventually, http_request, http_send, text_update,
    upgrade_request,
};
#[allow(unused_imports)]
pub use serde_json::{Value, json};
#[allow(unused_imports)]
pub use std::collections::BTreeSet;
#[allow(unused_imports)]
pub use std::net::SocketAddr;
#[allow(unused_imports)]
pub use std::time::{Duration, SystemTime, UNIX_EPOCH};
#[allow(unused_imports)]
pub use tandem::Config;
#[allow(unused_imports)]
pub use tandem::config::AuthMode;
#[allow(unused_imports)]
pub use yrs::types::Attrs;
#[allow(unused_imports)]
pub use yrs::updates::decoder::Decode;
#[allow(unused_imports)]
pub use yrs::{
    Any, Doc, GetString, ReadTxn, Text, Transact, Update, Xml, XmlElementPrelim, XmlFragment,
    XmlTextPrelim,
};

/// HS256 secret of the servers under test.
pub const SECRET: &str = "tandem-admin-tests-hs256-secret-0123456789";
/// Admin bearer token.
pub const ADMIN_TOKEN: &str = "admin-bearer-for-admin-tests-41c9e2";
/// The root text most tests edit.
pub const TEXT: &str = "text";
/// Prefix of every admin path.
pub const API: &str = "/api/v1/admin";

/// Token mode (authors are the tokens' `sub`), the admin API on, no message rate limit to
/// speak of, storing in `db`.
pub fn admin_config(db: &Db) -> Config {
    let mut c = config();
    c.database_url = Some(db.url.clone());
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN_TOKEN.into());
    c.max_messages_per_sec = 1_000_000;
    c.message_burst = 1_000_000;
    c
}

pub async fn start(db: &Db) -> TestServer {
    TestServer::start(admin_config(db)).await
}

// ---------------------------------------------------------------------------------------------
// Clients

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A read-write token for every document, for user `sub`.
pub fn token(sub: &str) -> String {
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
pub fn ws_path(name: &str, sub: &str) -> String {
    let segments: Vec<String> = name.split('/').map(enc).collect();
    format!("/{}?token={}", segments.join("/"), token(sub))
}

/// Joins document `name` as user `sub` and completes the sync handshake.
pub async fn join(server: &TestServer, name: &str, sub: &str) -> Client {
    Client::join(&format!("ws://{}{}", server.addr, ws_path(name, sub))).await
}

/// Appends `s` to the root text and waits for the server's echo, which comes once the update
/// is durable (persist before relay), so history reads see it.
pub async fn write(c: &mut Client, s: &str) {
    let len = u32::try_from(c.text(TEXT).len()).expect("len");
    let before = c.updates_received;
    c.insert(TEXT, len, s).await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// Removes `len` characters at `index` of the root text and waits for the echo.
pub async fn remove(c: &mut Client, index: u32, len: u32) {
    let text = c.doc.get_or_insert_text(TEXT);
    let before = c.updates_received;
    c.edit(|_, txn| text.remove_range(txn, index, len)).await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// Processes messages until the client's root text is `want`.
pub async fn converge(c: &mut Client, want: &str) {
    c.pump_until(|c| c.text(TEXT) == want).await;
    assert!(c.closed.is_none(), "the client was closed: {:?}", c.closed);
}

/// The text of root `name` of a Yjs update.
pub fn update_text(update: &[u8], name: &str) -> String {
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
pub fn enc(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

/// `/api/v1/admin/documents/{name}` followed by `rest`.
pub fn doc_path(name: &str, rest: &str) -> String {
    format!("{API}/documents/{}{rest}", enc(name))
}

/// Sends an admin request with `token` (`None`: no Authorization header); `body` is JSON when
/// `json` is set, else sent as `application/octet-stream` when not empty.
pub async fn request(
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
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// Text sent as `application/json` as is (malformed on purpose).
    RawJson(&'a str),
    Bytes(&'a [u8]),
}

/// The JSON body of a response (panics with the body when it is not JSON).
pub fn body_json(r: &HttpResponse) -> Value {
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
// `expect_error` is validated (JSON Schema 2020-12, formats included) against the schema the
// generated document gives its operation and status, so the document cannot drift from what
// the server does.

/// The OpenAPI document the server serves.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(tandem::admin::openapi)
}

/// The documented operation for `method path` (query ignored), by its path template.
pub fn operation_for(method: &str, path: &str) -> Option<&'static Value> {
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

/// Follows a local `$ref` (a reusable response).
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
pub fn check_response(method: &str, path: &str, status: u16, body: &Value) {
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
    if let Err(e) = conforms(schema, body) {
        panic!("{id} {status}: the answer does not match the document: {e}\n{body}");
    }
}

/// Validates `v` against `schema`, a schema of the document (its `$ref`s point into the
/// document's components). Validators are built once per schema.
pub fn conforms(schema: &Value, v: &Value) -> Result<(), String> {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let key = schema.to_string();
    let validator = {
        let mut cache = VALIDATORS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| {
                // The schema as the root of a document that also holds the components, so
                // `#/components/schemas/...` resolves.
                let mut root = schema.clone();
                if let Some(o) = root.as_object_mut() {
                    o.insert("components".into(), spec()["components"].clone());
                }
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("the document's schema {schema} is invalid: {e}"));
                Arc::new(validator)
            })
            .clone()
    };
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// An admin request with the right token; returns the status and the JSON body.
pub async fn admin(s: &TestServer, method: &str, path: &str, body: Body<'_>) -> (u16, Value) {
    let r = request(s.addr, method, path, Some(ADMIN_TOKEN), body).await;
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        body_json(&r)
    };
    check_response(method, path, r.status, &v);
    (r.status, v)
}

pub async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    admin(s, "GET", path, Body::None).await
}

pub async fn post(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    admin(s, "POST", path, Body::Json(body)).await
}

pub async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    admin(s, "DELETE", path, Body::None).await
}

/// Asserts a 200 and returns the body.
pub async fn get_ok(s: &TestServer, path: &str) -> Value {
    let (status, body) = get(s, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Asserts that `r` is the JSON error `{"status": status, "reason": "..."}`.
pub fn assert_error(r: &HttpResponse, status: u16, what: &str) {
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
pub async fn expect_error(s: &TestServer, method: &str, path: &str, body: Body<'_>, status: u16) {
    let r = request(s.addr, method, path, Some(ADMIN_TOKEN), body).await;
    assert_error(&r, status, &format!("{method} {path}"));
    if operation_for(method, path).is_some() {
        check_response(method, path, status, &body_json(&r));
    }
}

/// The document's detail (`GET /documents/{name}`).
pub async fn detail(s: &TestServer, name: &str) -> Value {
    get_ok(s, &doc_path(name, "")).await
}

/// The root text at `query` (e.g. `seq=3`) as JSON: `(seq, text)`; an absent root is "".
pub async fn text_at(s: &TestServer, name: &str, query: &str) -> (i64, String) {
    let state = get_ok(s, &doc_path(name, &format!("/state?{query}"))).await;
    (state["seq"].as_i64().expect("seq"), root_text(&state))
}

/// The root text of a state answer ("" when the root is absent).
pub fn root_text(state: &Value) -> String {
    match &state["content"][TEXT] {
        Value::Null => String::new(),
        root => {
            assert_eq!(root["kind"], "text", "{state}");
            root["value"].as_str().expect("text value").to_string()
        }
    }
}

/// Every change of the timeline, oldest first (pages of 1000).
pub async fn all_changes(s: &TestServer, name: &str) -> Vec<Value> {
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
pub fn seqs(changes: &Value) -> Vec<i64> {
    changes
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect()
}

/// Refused upgrade: the HTTP status of a WebSocket upgrade of `path`.
pub async fn upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    http_request(addr, &upgrade_request(addr, path))
        .await
        .status
}

/// Builds, in one transaction on the client, what TipTap / y-prosemirror store for
/// `<h2>Title</h2><p>Hello <b>world</b></p>` in the XML fragment `default`.
pub async fn write_prosemirror(c: &mut Client) {
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

/// The text a diff's spans give at the earlier (`later = false`) or later point.
pub fn spans_text(spans: &Value, later: bool) -> String {
    let skip = if later { "delete" } else { "insert" };
    spans
        .as_array()
        .expect("spans")
        .iter()
        .filter(|s| s["op"] != skip)
        .map(|s| s["text"].as_str().expect("text"))
        .collect()
}

/// Exports `name`: the update and its `X-Tandem-Seq`.
pub async fn export(server: &TestServer, name: &str) -> (Vec<u8>, i64) {
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
pub async fn import(
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
