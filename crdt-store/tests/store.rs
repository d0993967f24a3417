//! Store API tests, run against every available backend (SQLite always,
//! Postgres when TANDEM_TEST_DATABASE_URL is set).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{ms, row};
use crdt_store::{Backend, NewUpdate, Store, StoreError, StoreOptions};

#[tokio::test]
async fn open_and_migrate_twice_is_idempotent() {
    for db in common::backends("open_and_migrate_twice_is_idempotent").await {
        println!("backend: {}", db.label);
        db.store.migrate().await.expect("second migrate");
        let again = Store::open(&db.url, &common::test_options())
            .await
            .expect("reopen");
        again.migrate().await.expect("migrate on reopened store");
        again.ping().await.expect("ping");
        let expected = if db.label == "sqlite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        assert_eq!(again.backend(), expected);
        // The same database: a document created through one handle is seen by the other.
        let a = db.store.create_document("shared").await.expect("create");
        let b = again.load("shared").await.expect("load again");
        assert_eq!(Some(a), b.doc_id);
        db.finish().await;
    }
}

#[tokio::test]
async fn load_never_creates_a_document() {
    for db in common::backends("load_never_creates_a_document").await {
        println!("backend: {}", db.label);
        let doc = db.store.load("notes/today").await.expect("load");
        assert_eq!(doc.doc_id, None);
        assert_eq!(doc.snapshot, None);
        assert!(doc.updates.is_empty());
        assert_eq!(doc.last_seq, 0);
        assert_eq!(db.store.document("notes/today").await.expect("doc"), None);
        assert!(
            db.store
                .list_documents(None, None, 10)
                .await
                .expect("list")
                .is_empty()
        );
        let id = db
            .store
            .create_document("notes/today")
            .await
            .expect("create");
        let same = db.store.load("notes/today").await.expect("load again");
        assert_eq!(same.doc_id, Some(id));
        assert_eq!(
            db.store
                .create_document("notes/today")
                .await
                .expect("again"),
            id
        );
        let other = db
            .store
            .create_document("notes/tomorrow")
            .await
            .expect("create other");
        assert_ne!(other, id);
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_creates_create_one_document() {
    for db in common::backends("concurrent_creates_create_one_document").await {
        println!("backend: {}", db.label);
        let creates = (0..16).map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move { store.create_document("busy").await })
        });
        let mut ids = Vec::new();
        for c in creates {
            ids.push(c.await.expect("join").expect("create"));
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{ids:?}");
        db.finish().await;
    }
}

#[tokio::test]
async fn append_and_load_round_trip() {
    for db in common::backends("append_and_load_round_trip").await {
        println!("backend: {}", db.label);
        let a = db.store.create_document("a").await.expect("load a");
        let b = db.store.create_document("b").await.expect("load b");
        let t0 = SystemTime::now() - Duration::from_secs(60);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let rows = vec![
            row(a, 1, &[0, 1, 2, 255], Some("alice"), t0),
            row(b, 1, b"b-one", None, t0),
            row(a, 2, &[], None, t0 + Duration::from_millis(5)),
            row(
                a,
                3,
                &big,
                Some("bob \u{1F600}"),
                t0 + Duration::from_millis(9),
            ),
            row(b, 2, b"b-two", Some("carol"), t0 + Duration::from_secs(1)),
        ];
        db.store.append(&rows).await.expect("append");

        let doc = db.store.load("a").await.expect("reload a");
        assert_eq!(doc.doc_id, Some(a));
        assert_eq!(doc.last_seq, 3);
        assert_eq!(doc.snapshot, None);
        let seqs: Vec<i64> = doc.updates.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(doc.updates[0].data, vec![0, 1, 2, 255]);
        assert_eq!(doc.updates[0].author.as_deref(), Some("alice"));
        assert_eq!(doc.updates[1].data, Vec::<u8>::new());
        assert_eq!(doc.updates[1].author, None);
        assert_eq!(doc.updates[2].data, big);
        assert_eq!(doc.updates[2].size, big.len() as i64);
        assert_eq!(doc.updates[2].author.as_deref(), Some("bob \u{1F600}"));
        assert_eq!(ms(doc.updates[0].created_at), ms(t0));
        assert_eq!(
            ms(doc.updates[2].created_at),
            ms(t0 + Duration::from_millis(9))
        );

        let doc_b = db.store.load("b").await.expect("reload b");
        assert_eq!(doc_b.last_seq, 2);
        let datas: Vec<&[u8]> = doc_b.updates.iter().map(|u| &u.data[..]).collect();
        assert_eq!(datas, vec![&b"b-one"[..], &b"b-two"[..]]);
        db.finish().await;
    }
}

#[tokio::test]
async fn append_is_idempotent_on_retry() {
    for db in common::backends("append_is_idempotent_on_retry").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("retry").await.expect("load");
        let now = SystemTime::now();
        let first: Vec<NewUpdate> = (1..=5).map(|s| row(d, s, &[s as u8], None, now)).collect();
        db.store.append(&first).await.expect("append");
        // The outcome was "unknown": the same batch is sent again.
        db.store.append(&first).await.expect("re-append");
        // A later batch overlapping the committed one, with different bytes for
        // already-stored seqs: the stored rows win, new rows are added.
        let overlap: Vec<NewUpdate> = (4..=7)
            .map(|s| row(d, s, &[100 + s as u8], None, now))
            .collect();
        db.store.append(&overlap).await.expect("overlapping append");
        // Duplicates inside one batch are tolerated too.
        let dup = vec![row(d, 8, b"x", None, now), row(d, 8, b"y", None, now)];
        db.store.append(&dup).await.expect("duplicate in batch");
        db.store.append(&[]).await.expect("empty append");

        let doc = db.store.load("retry").await.expect("reload");
        let got: Vec<(i64, u8)> = doc.updates.iter().map(|u| (u.seq, u.data[0])).collect();
        assert_eq!(
            got,
            vec![
                (1, 1),
                (2, 2),
                (3, 3),
                (4, 4),
                (5, 5),
                (6, 106),
                (7, 107),
                (8, b'x')
            ]
        );
        assert_eq!(doc.last_seq, 8);
        db.finish().await;
    }
}

#[tokio::test]
async fn large_batch_in_one_append() {
    for db in common::backends("large_batch_in_one_append").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("big-batch").await.expect("load");
        let now = SystemTime::now();
        // 3001 = several full SQLite chunks plus an odd tail.
        let rows: Vec<NewUpdate> = (1..=3001)
            .map(|s| row(d, s, format!("update {s}").as_bytes(), Some("a"), now))
            .collect();
        let started = Instant::now();
        db.store.append(&rows).await.expect("append");
        println!(
            "{}: append of 3001 rows took {:?}",
            db.label,
            started.elapsed()
        );
        let doc = db.store.load("big-batch").await.expect("reload");
        assert_eq!(doc.updates.len(), 3001);
        assert_eq!(doc.last_seq, 3001);
        assert!(doc.updates.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(doc.updates[2999].data, b"update 3000");
        db.finish().await;
    }
}

#[tokio::test]
async fn snapshot_then_load_returns_snapshot_and_later_rows() {
    for db in common::backends("snapshot_then_load_returns_snapshot_and_later_rows").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("snap").await.expect("load");
        let now = SystemTime::now();
        let rows: Vec<NewUpdate> = (1..=10).map(|s| row(d, s, &[s as u8], None, now)).collect();
        db.store.append(&rows).await.expect("append");

        db.store
            .write_snapshot(d, 6, b"state@6", b"sv@6")
            .await
            .expect("snapshot");
        let doc = db.store.load("snap").await.expect("reload");
        let snap = doc.snapshot.expect("snapshot present");
        assert_eq!(snap.seq, 6);
        assert_eq!(snap.state, b"state@6");
        assert_eq!(snap.state_vector, b"sv@6");
        let age = SystemTime::now()
            .duration_since(snap.created_at)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "created_at {age:?} ago");
        let seqs: Vec<i64> = doc.updates.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9, 10]);
        assert_eq!(doc.last_seq, 10);

        // Rewriting the same snapshot (retry) replaces it.
        db.store
            .write_snapshot(d, 6, b"state@6'", b"sv@6'")
            .await
            .expect("rewrite snapshot");
        // A snapshot at the head: nothing after it, last_seq from the snapshot.
        db.store
            .write_snapshot(d, 10, b"state@10", b"sv@10")
            .await
            .expect("snapshot at head");
        let doc = db.store.load("snap").await.expect("reload");
        assert_eq!(doc.snapshot.as_ref().map(|s| s.seq), Some(10));
        assert!(doc.updates.is_empty());
        assert_eq!(doc.last_seq, 10);

        // History reconstruction helpers.
        assert_eq!(db.store.snapshot_at_or_before(d, 5).await.expect("q"), None);
        let at8 = db.store.snapshot_at_or_before(d, 8).await.expect("q");
        assert_eq!(at8.as_ref().map(|s| s.seq), Some(6));
        assert_eq!(at8.map(|s| s.state), Some(b"state@6'".to_vec()));
        let at10 = db.store.snapshot_at_or_before(d, 10).await.expect("q");
        assert_eq!(at10.map(|s| s.seq), Some(10));
        let range = db.store.log_range(d, 6, 9).await.expect("range");
        let seqs: Vec<i64> = range.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9]);
        assert_eq!(range[0].data, vec![7]);
        db.finish().await;
    }
}

#[tokio::test]
async fn prune_log_keeps_rows_not_covered_by_a_snapshot() {
    for db in common::backends("prune_log_keeps_rows_not_covered_by_a_snapshot").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("prune").await.expect("load");
        let other = db.store.create_document("prune-other").await.expect("load");
        let now = SystemTime::now();
        let old = now - Duration::from_secs(3600);
        let mut rows: Vec<NewUpdate> = (1..=12).map(|s| row(d, s, &[s as u8], None, old)).collect();
        rows.extend((13..=14).map(|s| row(d, s, &[s as u8], None, now)));
        rows.extend((1..=5).map(|s| row(other, s, &[s as u8], None, old)));
        db.store.append(&rows).await.expect("append");

        // No snapshot yet: nothing is covered, nothing goes.
        let removed = db.store.prune_log(d, now).await.expect("prune");
        assert_eq!(removed, 0);

        db.store
            .write_snapshot(d, 8, b"s8", b"v8")
            .await
            .expect("snapshot");
        // A cut-off older than every row removes nothing, snapshot or not.
        let removed = db
            .store
            .prune_log(d, old - Duration::from_secs(1))
            .await
            .expect("prune");
        assert_eq!(removed, 0);

        let removed = db
            .store
            .prune_log(d, now - Duration::from_secs(1))
            .await
            .expect("prune");
        assert_eq!(removed, 8, "rows 1..=8 are old and covered");
        let left: Vec<i64> = db
            .store
            .log_page(d, 0, 100, false)
            .await
            .expect("page")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(left, vec![9, 10, 11, 12, 13, 14]);

        // A snapshot covering the recent rows does not make them prunable.
        db.store
            .write_snapshot(d, 14, b"s14", b"v14")
            .await
            .expect("snapshot");
        let removed = db
            .store
            .prune_log(d, now - Duration::from_secs(1))
            .await
            .expect("prune");
        assert_eq!(removed, 4, "old rows 9..=12 go, recent 13..=14 stay");

        // Loading still works: snapshot at 14, no later rows.
        let doc = db.store.load("prune").await.expect("reload");
        assert_eq!(doc.snapshot.map(|s| s.seq), Some(14));
        assert!(doc.updates.is_empty());
        assert_eq!(doc.last_seq, 14);

        // Other documents are untouched.
        assert_eq!(
            db.store
                .log_page(other, 0, 100, false)
                .await
                .expect("page")
                .len(),
            5
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn log_page_pages_through_history() {
    for db in common::backends("log_page_pages_through_history").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("paged").await.expect("load");
        let now = SystemTime::now();
        let rows: Vec<NewUpdate> = (1..=25)
            .map(|s| {
                let author = (s % 2 == 0).then_some("even");
                row(d, s, &vec![b'x'; s as usize], author, now)
            })
            .collect();
        db.store.append(&rows).await.expect("append");

        let mut after = 0;
        let mut pages = Vec::new();
        loop {
            let page = db.store.log_page(d, after, 10, false).await.expect("page");
            if page.is_empty() {
                break;
            }
            for r in &page {
                assert!(r.data.is_empty(), "metadata only");
                assert_eq!(r.size, r.seq);
                assert_eq!(r.author.as_deref(), (r.seq % 2 == 0).then_some("even"));
            }
            after = page.last().map_or(after, |r| r.seq);
            pages.push(page.iter().map(|r| r.seq).collect::<Vec<_>>());
        }
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[0], (1..=10).collect::<Vec<_>>());
        assert_eq!(pages[1], (11..=20).collect::<Vec<_>>());
        assert_eq!(pages[2], (21..=25).collect::<Vec<_>>());

        let with_data = db.store.log_page(d, 20, 3, true).await.expect("page");
        let seqs: Vec<i64> = with_data.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![21, 22, 23]);
        assert_eq!(with_data[0].data, vec![b'x'; 21]);

        assert!(
            db.store
                .log_page(d + 1000, 0, 10, true)
                .await
                .expect("unknown doc")
                .is_empty()
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn sqlite_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("deep/er/tandem.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url, &StoreOptions::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    assert!(path.exists());
    assert_eq!(store.backend(), Backend::Sqlite);
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::open("sqlite::memory:", &StoreOptions::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let d = store.create_document("m").await.expect("load");
    store
        .append(&[row(d, 1, b"hi", None, SystemTime::now())])
        .await
        .expect("append");
    assert_eq!(store.load("m").await.expect("reload").last_seq, 1);
}

#[tokio::test]
async fn invalid_urls_are_rejected() {
    let opts = StoreOptions::default();
    for url in [
        "mysql://root:secret@localhost/db",
        "",
        "file.db",
        "sqlite:",
        "sqlite://",
        "postgres://[::1",
    ] {
        match Store::open(url, &opts).await {
            Err(StoreError::InvalidUrl(msg)) => {
                assert!(!msg.contains("secret"), "password leaked: {msg}");
            }
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn open_unreachable_postgres_fails_fast() {
    let opts = StoreOptions {
        max_connections: 2,
        connect_timeout: Duration::from_secs(10),
        ..StoreOptions::default()
    };
    let started = Instant::now();
    let result = Store::open("postgres://postgres@127.0.0.1:1/test", &opts).await;
    let elapsed = started.elapsed();
    match result {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.is_retryable());
            println!("unreachable postgres: {e} after {elapsed:?}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Connection refused must not wait for the (10 s) connect timeout.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn open_respects_connect_timeout_when_nothing_answers() {
    // A listener that accepts but never speaks: the Postgres handshake hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let opts = StoreOptions {
        max_connections: 2,
        connect_timeout: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let started = Instant::now();
    let result = Store::open(&format!("postgres://postgres@{addr}/test"), &opts).await;
    let elapsed = started.elapsed();
    hold.abort();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn open_missing_postgres_database_is_a_clear_permanent_error() {
    let Some(url) = common::pg_url("open_missing_postgres_database_is_a_clear_permanent_error")
    else {
        return;
    };
    let addr = common::upstream_addr(&url);
    let url = format!("postgres://postgres@{addr}/tandem_no_such_database");
    match Store::open(&url, &common::test_options()).await {
        Err(e) => {
            println!("missing database: {e}");
            assert!(!e.is_retryable(), "{e:?}");
            assert!(e.to_string().contains("does not exist"), "{e}");
        }
        Ok(_) => panic!("opened a database that does not exist"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_gives_up_on_a_silent_network_stall() {
    let Some(pg) = common::pg_db("load_gives_up_on_a_silent_network_stall").await else {
        return;
    };
    let proxy = common::Proxy::start(common::upstream_addr(&pg.url)).await;
    let opts = StoreOptions {
        max_connections: 2,
        connect_timeout: Duration::from_millis(500),
        load_timeout: Duration::from_millis(500),
    };
    let store = Store::open(&common::with_host_port(&pg.url, proxy.addr), &opts)
        .await
        .expect("open via proxy");
    // Warm: the pool now holds a live connection, which is used without a ping.
    let doc_id = store.create_document("stalled").await.expect("load");

    // Packets vanish: without the load timeout this waits for TCP to give up.
    proxy.stall();
    let started = Instant::now();
    let result = store.load("stalled").await;
    let elapsed = started.elapsed();
    match result {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.is_retryable());
            println!("stalled load: {e} after {elapsed:?}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

    // The network heals; the next load works (late bytes of the abandoned one are harmless).
    proxy.restore();
    let again = store.load("stalled").await.expect("load after the stall");
    assert_eq!(again.doc_id, Some(doc_id));
    drop(proxy);
    pg.finish().await;
}
