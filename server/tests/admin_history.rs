//! The admin API's history reads through real servers and clients: the timeline (pages,
//! authors, summaries, sessions), the state at a seq, time or label (as JSON and as a Yjs
//! update), and diffs with their authors.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

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
