//! State and diffs checked against a local replay of a real editing trace (tests/data,
//! CC BY 4.0).
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

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
