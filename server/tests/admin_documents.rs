//! The admin API's documents through real servers on port 0 and real WebSocket clients: list,
//! detail, delete, snapshot, disconnect, and what works with memory storage.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

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
