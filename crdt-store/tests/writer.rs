//! Group-commit writer tests: durability and watermarks, shutdown, and
//! surviving a Postgres outage (through a TCP proxy the test cuts).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crdt_store::{NewUpdate, Store, StoreError, StoreOptions, Writer, WriterOptions};
use tokio::sync::watch;

type Watermark = Arc<watch::Sender<i64>>;

fn update(doc_id: i64, seq: i64) -> NewUpdate {
    NewUpdate {
        doc_id,
        seq,
        data: Bytes::from(format!("doc {doc_id} update {seq}")),
        author: (seq % 3 == 0).then(|| format!("user-{}", seq % 7)),
        created_at: SystemTime::now(),
    }
}

/// Loads `n` documents and gives each a watermark at 0.
async fn docs(store: &Store, prefix: &str, n: usize) -> Vec<(i64, Watermark)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let doc_id = store
            .create_document(&format!("{prefix}-{i}"))
            .await
            .expect("create");
        out.push((doc_id, Arc::new(watch::channel(0).0)));
    }
    out
}

/// Queues `per_doc` rows for every document, interleaved across documents and
/// yielding now and then so commits overlap with queueing.
async fn queue_rows(writer: &Writer, docs: &[(i64, Watermark)], per_doc: i64) {
    let mut queued = 0u32;
    for seq in 1..=per_doc {
        for (doc_id, mark) in docs {
            writer.append(update(*doc_id, seq), Arc::clone(mark));
            queued += 1;
            if queued.is_multiple_of(250) {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Every document holds exactly rows 1..=per_doc with the bytes queued.
async fn assert_all_stored(store: &Store, prefix: &str, docs: &[(i64, Watermark)], per_doc: i64) {
    for (i, (doc_id, mark)) in docs.iter().enumerate() {
        assert_eq!(*mark.borrow(), per_doc, "watermark of doc {doc_id}");
        let doc = store.load(&format!("{prefix}-{i}")).await.expect("reload");
        assert_eq!(doc.doc_id, Some(*doc_id));
        assert_eq!(doc.last_seq, per_doc);
        let seqs: Vec<i64> = doc.updates.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, (1..=per_doc).collect::<Vec<_>>(), "doc {doc_id}");
        for u in &doc.updates {
            assert_eq!(u.data, update(*doc_id, u.seq).data.to_vec());
            assert_eq!(u.author, update(*doc_id, u.seq).author);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_makes_10k_rows_from_100_docs_durable() {
    for db in common::backends("writer_makes_10k_rows_from_100_docs_durable").await {
        println!("backend: {}", db.label);
        let docs = docs(&db.store, "w", 100).await;
        let writer = Writer::spawn(db.store.clone(), WriterOptions::default());
        let started = Instant::now();
        queue_rows(&writer, &docs, 100).await;
        writer.flush(Duration::from_secs(60)).await.expect("flush");
        let elapsed = started.elapsed();
        println!(
            "{}: 10,000 rows durable in {elapsed:?} ({:.0} rows/s, debug build)",
            db.label,
            10_000.0 / elapsed.as_secs_f64()
        );
        let backlog = writer.backlog();
        assert_eq!(backlog.rows, 0);
        assert_eq!(backlog.bytes, 0);
        assert_eq!(backlog.oldest_age, None);
        assert!(!backlog.degraded);
        assert_eq!(backlog.last_error, None);
        assert_all_stored(&db.store, "w", &docs, 100).await;
        writer
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_splits_batches_at_limits_and_keeps_order() {
    for db in common::backends("writer_splits_batches_at_limits_and_keeps_order").await {
        println!("backend: {}", db.label);
        let docs = docs(&db.store, "small", 5).await;
        let opts = WriterOptions {
            max_batch_rows: 7,
            max_batch_bytes: 64,
            ..WriterOptions::default()
        };
        let writer = Writer::spawn(db.store.clone(), opts);
        queue_rows(&writer, &docs, 60).await;
        writer.flush(Duration::from_secs(60)).await.expect("flush");
        assert_all_stored(&db.store, "small", &docs, 60).await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_latency_of_a_lone_row() {
    for db in common::backends("writer_latency_of_a_lone_row").await {
        println!("backend: {}", db.label);
        let docs = docs(&db.store, "lat", 1).await;
        let (doc_id, mark) = &docs[0];
        let mut seen = mark.subscribe();
        let writer = Writer::spawn(db.store.clone(), WriterOptions::default());
        let mut samples = Vec::new();
        for seq in 1..=300 {
            let started = Instant::now();
            writer.append(update(*doc_id, seq), Arc::clone(mark));
            tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|v| *v >= seq))
                .await
                .expect("durable in time")
                .expect("watermark alive");
            // The first rows pay for opening the connection and preparing statements.
            if seq > 20 {
                samples.push(started.elapsed());
            }
        }
        samples.sort();
        println!(
            "{}: queue -> durable for a lone row: p50 {:?}, p99 {:?}, max {:?} (debug build)",
            db.label,
            samples[samples.len() / 2],
            samples[samples.len() * 99 / 100],
            samples[samples.len() - 1]
        );
        assert_eq!(*mark.borrow(), 300);
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_shutdown_flushes_then_refuses() {
    for db in common::backends("writer_shutdown_flushes_then_refuses").await {
        println!("backend: {}", db.label);
        let docs = docs(&db.store, "sd", 3).await;
        let writer = Writer::spawn(db.store.clone(), WriterOptions::default());
        queue_rows(&writer, &docs, 20).await;
        let clone = writer.clone();
        clone
            .shutdown(Duration::from_secs(30))
            .await
            .expect("shutdown");
        assert_all_stored(&db.store, "sd", &docs, 20).await;

        // Refused after shutdown: watermark and backlog untouched.
        let (doc_id, mark) = &docs[0];
        writer.append(update(*doc_id, 21), Arc::clone(mark));
        assert_eq!(*mark.borrow(), 20);
        assert_eq!(writer.backlog().rows, 0);
        writer
            .flush(Duration::from_millis(100))
            .await
            .expect("nothing to flush");
        writer
            .shutdown(Duration::from_millis(100))
            .await
            .expect("second shutdown");
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_keeps_retrying_a_failing_batch_and_shutdown_gives_up() {
    for db in common::backends("writer_keeps_retrying_a_failing_batch_and_shutdown_gives_up").await
    {
        println!("backend: {}", db.label);
        let opts = WriterOptions {
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..WriterOptions::default()
        };
        let writer = Writer::spawn(db.store.clone(), opts);
        // No such document: the foreign key rejects the row on every attempt.
        let mark: Watermark = Arc::new(watch::channel(0).0);
        writer.append(update(987_654, 1), Arc::clone(&mark));
        let degraded = common::eventually(Duration::from_secs(10), || {
            let b = writer.backlog();
            std::future::ready(b.degraded && b.last_error.is_some())
        })
        .await;
        assert!(degraded, "backlog: {:?}", writer.backlog());
        let backlog = writer.backlog();
        assert_eq!(backlog.rows, 1);
        assert!(backlog.oldest_age.is_some());
        println!("{}: last_error = {:?}", db.label, backlog.last_error);

        let flushed = writer.flush(Duration::from_millis(100)).await;
        assert!(
            matches!(flushed, Err(StoreError::Unavailable(_))),
            "{flushed:?}"
        );
        let started = Instant::now();
        let result = writer.shutdown(Duration::from_millis(200)).await;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(*mark.borrow(), 0, "never claimed durable");
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_survives_postgres_outage() {
    let Some(pg) = common::pg_db("writer_survives_postgres_outage").await else {
        return;
    };
    let proxy = common::Proxy::start(common::upstream_addr(&pg.url)).await;
    let proxied_url = common::with_host_port(&pg.url, proxy.addr);
    let opts = StoreOptions {
        max_connections: 2,
        connect_timeout: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let store = Store::open(&proxied_url, &opts)
        .await
        .expect("open via proxy");
    store.ping().await.expect("ping via proxy");
    let docs = docs(&store, "outage", 10).await;
    let writer = Writer::spawn(
        store.clone(),
        WriterOptions {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            commit_timeout: Duration::from_secs(2),
            ..WriterOptions::default()
        },
    );

    // Before: rows 1..=10 per document go through.
    for seq in 1..=10 {
        for (doc_id, mark) in &docs {
            writer.append(update(*doc_id, seq), Arc::clone(mark));
        }
    }
    writer.flush(Duration::from_secs(10)).await.expect("flush");
    assert!(!writer.backlog().degraded);

    // Outage: every connection dies, new ones are closed on accept.
    proxy.cut();
    let cut_at = Instant::now();
    for seq in 11..=30 {
        for (doc_id, mark) in &docs {
            writer.append(update(*doc_id, seq), Arc::clone(mark));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let degraded = common::eventually(Duration::from_secs(10), || {
        std::future::ready(writer.backlog().degraded)
    })
    .await;
    assert!(degraded, "writer never noticed the outage");
    println!("outage noticed after {:?}", cut_at.elapsed());
    let during = writer.backlog();
    println!("backlog during outage: {during:?}");
    assert!(during.rows > 0);
    assert!(during.last_error.is_some());
    assert!(store.ping().await.is_err_and(|e| e.is_retryable()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, mark) in &docs {
        assert!(
            *mark.borrow() < 30,
            "nothing can be durable during the outage"
        );
    }

    // Restore: everything queued during the outage becomes durable.
    proxy.restore();
    let restored_at = Instant::now();
    writer
        .flush(Duration::from_secs(30))
        .await
        .expect("flush after restore");
    println!("caught up {:?} after restore", restored_at.elapsed());
    let after = writer.backlog();
    assert!(!after.degraded, "{after:?}");
    assert_eq!(after.rows, 0);
    assert_eq!(after.last_error, None);

    // Check through a direct (unproxied) connection.
    assert_all_stored(&pg.store, "outage", &docs, 30).await;
    writer
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    drop(proxy);
    pg.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_survives_silent_network_stall() {
    let Some(pg) = common::pg_db("writer_survives_silent_network_stall").await else {
        return;
    };
    let proxy = common::Proxy::start(common::upstream_addr(&pg.url)).await;
    let opts = StoreOptions {
        max_connections: 3,
        connect_timeout: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let store = Store::open(&common::with_host_port(&pg.url, proxy.addr), &opts)
        .await
        .expect("open via proxy");
    let docs = docs(&store, "stall", 4).await;
    let writer = Writer::spawn(
        store.clone(),
        WriterOptions {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            commit_timeout: Duration::from_millis(300),
            ..WriterOptions::default()
        },
    );
    for seq in 1..=5 {
        for (doc_id, mark) in &docs {
            writer.append(update(*doc_id, seq), Arc::clone(mark));
        }
    }
    writer.flush(Duration::from_secs(10)).await.expect("flush");

    // Packets vanish: no error from the network, only silence. The commit
    // timeout must turn that into a retry and a degraded flag.
    proxy.stall();
    let stalled_at = Instant::now();
    for seq in 6..=15 {
        for (doc_id, mark) in &docs {
            writer.append(update(*doc_id, seq), Arc::clone(mark));
        }
    }
    let degraded = common::eventually(Duration::from_secs(10), || {
        std::future::ready(writer.backlog().degraded)
    })
    .await;
    assert!(degraded, "writer never noticed the stall");
    println!("stall noticed after {:?}", stalled_at.elapsed());
    println!("backlog during stall: {:?}", writer.backlog());
    assert!(writer.backlog().rows > 0);

    // The network heals; held bytes (including abandoned attempts) arrive late.
    proxy.restore();
    writer
        .flush(Duration::from_secs(30))
        .await
        .expect("flush after the stall");
    assert!(!writer.backlog().degraded);
    assert_all_stored(&pg.store, "stall", &docs, 15).await;
    writer
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    drop(proxy);
    pg.finish().await;
}

/// A document without a row gets exactly one, from its first row, whatever the number of
/// rows queued for it before the id was known; a deleted name stays a tombstone and its rows
/// are dropped (their watermark still rises: nothing is left to wait for).
#[tokio::test]
async fn writer_creates_a_document_row_with_its_first_row() {
    for db in common::backends("writer_creates_a_document_row_with_its_first_row").await {
        println!("backend: {}", db.label);
        let store = db.store.clone();
        let writer = Writer::spawn(store.clone(), WriterOptions::default());
        let loaded = store.load("fresh").await.expect("load");
        assert_eq!(loaded.doc_id, None);
        let doc = loaded.doc_ref("fresh");
        let mark: Watermark = Arc::new(watch::channel(0).0);
        for seq in 1..=20 {
            writer.append_to(&doc, update(0, seq), Arc::clone(&mark));
        }
        writer.flush(Duration::from_secs(30)).await.expect("flush");
        assert_eq!(*mark.borrow(), 20);
        let id = doc.id().expect("the writer set the id");
        let info = store.document("fresh").await.expect("doc").expect("row");
        assert_eq!((info.doc_id, info.last_seq, info.log_rows), (id, 20, 20));
        let listed = store.list_documents(None, None, 10).await.expect("list");
        assert_eq!(listed.len(), 1);
        // Later rows use the known id.
        writer.append_to(&doc, update(0, 21), Arc::clone(&mark));
        writer.flush(Duration::from_secs(30)).await.expect("flush");
        assert_eq!(store.load("fresh").await.expect("load").last_seq, 21);

        // A room that loaded a name before it was deleted: its rows are dropped.
        let gone = store.create_document("gone").await.expect("create");
        assert!(store.delete_document("gone").await.expect("delete"));
        let stale = crdt_store::DocRef::new("gone", None);
        let gone_mark: Watermark = Arc::new(watch::channel(0).0);
        writer.append_to(&stale, update(0, 1), Arc::clone(&gone_mark));
        writer.flush(Duration::from_secs(30)).await.expect("flush");
        assert_eq!(*gone_mark.borrow(), 1);
        assert_eq!(stale.id(), Some(gone));
        let info = store.document("gone").await.expect("doc").expect("row");
        assert!(info.deleted_at.is_some());
        assert_eq!(info.log_rows, 0);
        assert!(
            store
                .log_page(gone, 0, 10, true)
                .await
                .expect("page")
                .is_empty()
        );
        writer
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        db.finish().await;
    }
}
