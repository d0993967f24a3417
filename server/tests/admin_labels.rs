//! Labels through the admin API: created, listed by seq, refused twice, deleted.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

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
