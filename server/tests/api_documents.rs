//! The document API for backends (`/api/v1/documents/...`, `/api/v1/events`): real servers on
//! port 0, real HTTP, real y-websocket clients beside it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::sse::Sse;
use common::{Client, Db, TestServer, config, http_send, on_every_db};
use serde_json::{Value, json};
use tandem::Config;
use tandem::config::AuthMode;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, IndexedSequence, ReadTxn, Text, Transact, Update};

const SECRET: &str = "tandem-api-tests-hs256-secret-0123456789";
const ADMIN: &str = "api-tests-admin-token";

/// A token for `docs` with `access`, for user `sub`.
fn token(sub: &str, docs: &[&str], access: &str) -> String {
    common::doc_token(SECRET, sub, docs, access)
}

fn api_config() -> Config {
    let mut c = config();
    c.auth = AuthMode::Token;
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN.into());
    c
}

/// `method path` with a bearer token and a body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> common::HttpResponse {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    http_send(addr, method, path, &headers, body).await
}

fn json_of(r: &common::HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "status {}: not JSON ({e}): {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
    })
}

/// Checks a JSON answer against the OpenAPI document's description of `method path`.
fn documented(method: &str, path: &str, r: &common::HttpResponse) {
    let path = path.split('?').next().unwrap_or(path);
    common::admin::check_response(method, path, r.status, &json_of(r));
}

/// An update appending `s` to text `name` of a fresh document with client id `client`.
fn text_update(client: u64, name: &str, s: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text(name);
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}

async fn post_update(
    addr: SocketAddr,
    doc: &str,
    bearer: &str,
    update: &[u8],
) -> common::HttpResponse {
    let path = format!("/api/v1/documents/{doc}/updates");
    call(
        addr,
        "POST",
        &path,
        Some(bearer),
        "application/octet-stream",
        update,
    )
    .await
}

#[tokio::test]
async fn write_then_read_as_json_and_binary_and_live_editors_converge() {
    on_every_db!(
        "write_then_read_as_json_and_binary_and_live_editors_converge",
        write_then_read
    );
}

async fn write_then_read(db: &Db) {
    let mut cfg = api_config();
    cfg.database_url = Some(db.url.clone());
    let server = TestServer::start(cfg).await;
    let rw = token("ada", &["notes/*"], "rw");
    // A live editor of the document, before anything is written over HTTP.
    let mut editor = Client::join(&format!("{}?token={rw}", server.url("notes/plan"))).await;

    let r = post_update(
        server.addr,
        "notes%2Fplan",
        &rw,
        &text_update(7, "body", "hello"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r), json!({"seq": 1, "changed": true}));
    documented("POST", "/api/v1/documents/notes%2Fplan/updates", &r);
    editor.pump_until(|c| c.text("body") == "hello").await;

    let r = call(
        server.addr,
        "GET",
        "/api/v1/documents/notes%2Fplan",
        Some(&rw),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    documented("GET", "/api/v1/documents/notes%2Fplan", &r);
    let v = json_of(&r);
    assert_eq!(v["seq"], 1);
    assert_eq!(v["name"], "notes/plan");
    assert_eq!(
        v["content"]["body"],
        json!({"kind": "text", "value": "hello"})
    );

    // The editor's own edit, then the binary form and a diff against a state vector.
    editor.insert("body", 5, " world").await;
    common::eventually("the editor's edit is durable", || async {
        let r = call(
            server.addr,
            "GET",
            "/api/v1/documents/notes%2Fplan",
            Some(&rw),
            "text/plain",
            b"",
        )
        .await;
        json_of(&r)["content"]["body"]["value"] == "hello world"
    })
    .await;
    let r = call(
        server.addr,
        "GET",
        "/api/v1/documents/notes%2Fplan?format=binary",
        Some(&rw),
        "",
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tandem-seq"), Some("2"));
    let copy = Doc::new();
    copy.transact_mut()
        .apply_update(Update::decode_v1(&r.body).expect("update"))
        .expect("apply");
    assert_eq!(
        copy.get_or_insert_text("body").get_string(&copy.transact()),
        "hello world"
    );

    let partial = Doc::new();
    partial
        .transact_mut()
        .apply_update(Update::decode_v1(&text_update(7, "body", "hello")).expect("u"))
        .expect("apply");
    let sv = base64_url(&partial.transact().state_vector().encode_v1());
    let r = call(
        server.addr,
        "GET",
        &format!("/api/v1/documents/notes%2Fplan?format=binary&sv={sv}"),
        Some(&rw),
        "",
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() < 40,
        "only the missing part: {} bytes",
        r.body.len()
    );
    partial
        .transact_mut()
        .apply_update(Update::decode_v1(&r.body).expect("diff"))
        .expect("apply");
    assert_eq!(
        partial
            .get_or_insert_text("body")
            .get_string(&partial.transact()),
        "hello world"
    );
    server.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn access_is_checked_like_a_connection() {
    let server = TestServer::start(api_config()).await;
    let addr = server.addr;
    let rw = token("ada", &["a/*"], "rw");
    let ro = token("bob", &["a/*"], "ro");
    let other = token("eve", &["b/*"], "rw");
    let update = text_update(9, "t", "x");

    // No token: 401 with a challenge; wrong document: 403; read-only writing: 403.
    let r = call(addr, "GET", "/api/v1/documents/a%2Fdoc", None, "", b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(json_of(&r)["reason"], "missing token");
    documented("GET", "/api/v1/documents/a%2Fdoc", &r);
    assert_eq!(
        post_update(addr, "a%2Fdoc", &other, &update).await.status,
        403
    );
    let r = post_update(addr, "a%2Fdoc", &ro, &update).await;
    assert_eq!(r.status, 403);
    documented("POST", "/api/v1/documents/a%2Fdoc/updates", &r);
    assert_eq!(json_of(&r)["reason"], "the token grants read-only access");
    let r = post_update(addr, "a%2Fdoc", "not-a-jwt", &update).await;
    assert_eq!(r.status, 401);

    // A document never written is 404 to readers.
    let r = call(addr, "GET", "/api/v1/documents/a%2Fdoc", Some(&ro), "", b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(post_update(addr, "a%2Fdoc", &rw, &update).await.status, 200);
    assert_eq!(
        call(addr, "GET", "/api/v1/documents/a%2Fdoc", Some(&ro), "", b"")
            .await
            .status,
        200
    );
    // The admin token reads and writes everything.
    assert_eq!(
        post_update(addr, "a%2Fdoc", ADMIN, &text_update(10, "t", "y"))
            .await
            .status,
        200
    );

    // Bad bodies and parameters: 400 with a reason, nothing written.
    let r = post_update(addr, "a%2Fdoc", &rw, b"\x01\x02garbage").await;
    assert_eq!(r.status, 400);
    assert!(
        json_of(&r)["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("not a valid Yjs update")
    );
    assert_eq!(post_update(addr, "a%2Fdoc", &rw, b"").await.status, 400);
    let r = call(
        addr,
        "GET",
        "/api/v1/documents/a%2Fdoc?format=xml",
        Some(&rw),
        "",
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(
        addr,
        "GET",
        "/api/v1/documents/a%2Fdoc?format=binary&sv=%%%",
        Some(&rw),
        "",
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    let doc = call(addr, "GET", "/api/v1/documents/a%2Fdoc", Some(&rw), "", b"").await;
    assert_eq!(json_of(&doc)["seq"], 2);

    // Deleted: 410 everywhere.
    let r = call(
        addr,
        "DELETE",
        "/api/v1/admin/documents/a%2Fdoc",
        Some(ADMIN),
        "",
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        call(addr, "GET", "/api/v1/documents/a%2Fdoc", Some(&rw), "", b"")
            .await
            .status,
        410
    );
    assert_eq!(post_update(addr, "a%2Fdoc", &rw, &update).await.status, 410);
    server.stop().await;
}

#[tokio::test]
async fn content_is_set_with_minimal_edits_and_other_fields_stay() {
    let server = TestServer::start(api_config()).await;
    let addr = server.addr;
    let rw = token("ada", &["*"], "rw");
    let mut editor = Client::join(&format!("{}?token={rw}", server.url("page"))).await;
    editor.insert("title", 0, "Hello world").await;
    editor.insert("notes", 0, "keep me").await;
    common::eventually("the editor's edits are durable", || async {
        let r = call(addr, "GET", "/api/v1/documents/page", Some(&rw), "", b"").await;
        r.status == 200 && json_of(&r)["seq"] == 2
    })
    .await;
    // A position in the unchanged start of the title, held by the editor.
    let caret = {
        let text = editor.doc.get_or_insert_text("title");
        let txn = editor.doc.transact();
        text.sticky_index(&txn, 2, yrs::Assoc::After)
            .expect("index")
    };

    let body = json!({"fields": {
        "title": "Hello there",
        "default": {"type": "doc", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Body"}]}
        ]}
    }});
    let put = |q: &'static str| {
        let body = body.clone();
        let rw = rw.clone();
        async move {
            call(
                addr,
                "PUT",
                &format!("/api/v1/documents/page/content{q}"),
                Some(&rw),
                "application/json",
                &serde_json::to_vec(&body).expect("json"),
            )
            .await
        }
    };
    // Conditional on a seq the document has moved past: 409, nothing changed.
    let r = put("?if-seq=1").await;
    assert_eq!(r.status, 409, "{:?}", String::from_utf8_lossy(&r.body));
    documented("PUT", "/api/v1/documents/page/content", &r);
    let r = put("?if-seq=2").await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r), json!({"seq": 3, "changed": true}));

    editor
        .pump_until(|c| c.text("title") == "Hello there")
        .await;
    assert_eq!(
        editor.text("notes"),
        "keep me",
        "a field not named stays as it was"
    );
    let at = {
        let txn = editor.doc.transact();
        caret.get_offset(&txn).expect("still resolves").index
    };
    assert_eq!(at, 2, "an unchanged character kept its identity");
    let r = call(addr, "GET", "/api/v1/documents/page", Some(&rw), "", b"").await;
    let v = json_of(&r);
    assert_eq!(v["content"]["default"]["value"], body["fields"]["default"]);
    assert_eq!(v["content"]["notes"]["value"], "keep me");

    // The same content again changes nothing; a field of another kind is refused.
    let r = put("").await;
    assert_eq!(json_of(&r), json!({"seq": null, "changed": false}));
    let r = call(
        addr,
        "PUT",
        "/api/v1/documents/page/content",
        Some(&rw),
        "application/json",
        br#"{"fields": {"title": {"type": "doc"}}}"#,
    )
    .await;
    assert_eq!(r.status, 409);
    let r = call(
        addr,
        "PUT",
        "/api/v1/documents/page/content",
        Some(&rw),
        "application/json",
        b"{\"fields\": 3}",
    )
    .await;
    assert_eq!(r.status, 422);
    server.stop().await;
}

#[tokio::test]
async fn the_change_feed_resumes_without_gap_or_duplicate_across_a_restart() {
    on_every_db!(
        "the_change_feed_resumes_without_gap_or_duplicate_across_a_restart",
        feed_across_restart
    );
}

async fn feed_across_restart(db: &Db) {
    let mut cfg = api_config();
    cfg.database_url = Some(db.url.clone());
    let server = TestServer::start(cfg.clone()).await;
    let rw = token("ada", &["feed"], "rw");
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        let r = post_update(
            server.addr,
            "feed",
            &rw,
            &text_update(20 + i as u64, "t", s),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // From the start, with the updates.
    let (status, mut feed) = Sse::open(
        server.addr,
        "/api/v1/documents/feed/events?after=0&include=update",
        &rw,
        None,
    )
    .await;
    assert_eq!(status, 200);
    for seq in 1..=3 {
        let e = feed.next().await;
        assert_eq!(e.event, "change");
        assert_eq!(e.id.as_deref(), Some(seq.to_string().as_str()));
        assert_eq!(e.json()["seq"], seq);
        assert_eq!(e.json()["author"], "ada");
        assert_eq!(e.json()["clients"], json!([19 + seq]));
        assert_eq!(e.json()["summary"]["t"]["inserted"], 1);
        assert!(e.json()["update"].is_string());
    }
    // Live: a new change arrives once durable.
    post_update(server.addr, "feed", &rw, &text_update(30, "t", "d")).await;
    let e = feed.next().await;
    assert_eq!(e.id.as_deref(), Some("4"));
    drop(feed);
    server.stop().await;

    // Written while nobody listened, across a restart; resumed from Last-Event-ID 4.
    let server = TestServer::start(cfg).await;
    post_update(server.addr, "feed", &rw, &text_update(31, "t", "e")).await;
    let (_, mut feed) =
        Sse::open(server.addr, "/api/v1/documents/feed/events", &rw, Some("4")).await;
    let e = feed.next().await;
    assert_eq!(e.id.as_deref(), Some("5"), "no gap, no duplicate: {e:?}");
    assert!(e.json().get("update").is_none());
    post_update(server.addr, "feed", &rw, &text_update(32, "t", "f")).await;
    assert_eq!(feed.next().await.id.as_deref(), Some("6"));

    // A restore is announced after its change; deletion ends the feed.
    let r = call(
        server.addr,
        "POST",
        "/api/v1/admin/documents/feed/restore",
        Some(ADMIN),
        "application/json",
        br#"{"seq": 2}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let e = feed.next().await;
    assert_eq!((e.event.as_str(), e.id.as_deref()), ("change", Some("7")));
    assert_eq!(e.json()["author"], "admin");
    let e = feed.next().await;
    assert_eq!(e.event, "restored");
    assert_eq!(
        e.json(),
        json!({"seq": 7, "restored_to": 2, "author": "admin"})
    );
    call(
        server.addr,
        "DELETE",
        "/api/v1/admin/documents/feed",
        Some(ADMIN),
        "",
        b"",
    )
    .await;
    assert_eq!(feed.next().await.event, "deleted");
    server.stop().await;
}

#[tokio::test]
async fn the_prefix_feed_sees_only_its_documents_and_checks_the_grant() {
    let server = TestServer::start(api_config()).await;
    let addr = server.addr;
    let team = token("ada", &["team/*"], "rw");
    let narrow = token("bob", &["team/a"], "ro");
    let (status, _) = Sse::open(addr, "/api/v1/events?prefix=team%2F", &narrow, None).await;
    assert_eq!(status, 403, "an exact grant does not cover a prefix");
    let (status, mut feed) = Sse::open(addr, "/api/v1/events?prefix=team%2F", &team, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        post_update(addr, "other%2Fx", ADMIN, &text_update(40, "t", "no"))
            .await
            .status,
        200
    );
    assert_eq!(
        post_update(addr, "team%2Fa", &team, &text_update(41, "t", "yes"))
            .await
            .status,
        200
    );
    let e = feed.next().await;
    assert_eq!(e.event, "change");
    assert_eq!(e.json()["name"], "team/a");
    assert_eq!(e.json()["seq"], 1);
    assert_eq!(e.id.as_deref(), Some("team/a:1"));
    let _ = Duration::ZERO;
    server.stop().await;
}
