//! Restore through the admin API: it reaches connected clients, appears in the timeline, can
//! be undone, and is seen by the next client of a document nobody had open.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

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
