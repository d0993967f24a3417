//! Bad parameters and bodies get 400 and unknown documents 404, as JSON errors.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

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
