//! Export and import through the admin API: merge or replace, garbage refused, and a body
//! over the limit answered with 413 JSON.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

// ---------------------------------------------------------------------------------------------
// Export and import

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
