//! Timings of `Store::append` by batch shape, for both backends. Not run by
//! default (numbers, not assertions):
//! `cargo test -p crdt-store --test timing -- --ignored --nocapture`
//! (add `--release` for representative numbers).

mod common;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crdt_store::NewUpdate;

#[tokio::test]
#[ignore = "prints timings; run explicitly"]
async fn append_timings_by_batch_shape() {
    for db in common::backends("append_timings_by_batch_shape").await {
        let doc_id = db.store.create_document("timing").await.expect("load");
        let mut seq = 0i64;
        // (rows per batch, bytes per row, batches)
        for (rows, size, batches) in [
            (1, 30, 200),
            (100, 30, 100),
            (1000, 30, 30),
            (1, 40_000, 30),
            (1, 100_000, 30),
            (1000, 4096, 10),
        ] {
            let mut samples = Vec::with_capacity(batches);
            for _ in 0..batches {
                let batch: Vec<NewUpdate> = (0..rows)
                    .map(|_| {
                        seq += 1;
                        NewUpdate {
                            doc_id,
                            seq,
                            data: Bytes::from(vec![7u8; size]),
                            author: Some("bench".into()),
                            created_at: SystemTime::now(),
                        }
                    })
                    .collect();
                let started = Instant::now();
                db.store.append(&batch).await.expect("append");
                samples.push(started.elapsed());
            }
            samples.sort();
            let total: Duration = samples.iter().sum();
            println!(
                "{:8} append {rows:5} rows x {size:5} B: p50 {:?}, p99 {:?}, max {:?}, {:.0} rows/s",
                db.label,
                samples[samples.len() / 2],
                samples[samples.len() * 99 / 100],
                samples[samples.len() - 1],
                (rows * batches) as f64 / total.as_secs_f64()
            );
        }
        db.finish().await;
    }
}

/// Deterministic pseudo-random numbers (xorshift64), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `op` `n` times and prints p50 and max.
async fn timed<F, Fut>(label: &str, what: &str, n: usize, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        op().await;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "{label:8} {what:52} p50 {:>10.3?}  max {:>10.3?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
}

/// The admin history reads on a document with a 1,000,000-row log (plus 1,000 small
/// documents for the list): each must cost the same wherever it lands in the log.
#[tokio::test]
#[ignore = "prints timings; run explicitly"]
async fn history_reads_on_a_million_row_log() {
    const ROWS: i64 = 1_000_000;
    const BATCH: i64 = 10_000;
    for db in common::backends("history_reads_on_a_million_row_log").await {
        let label = db.label;
        let doc_id = db.store.create_document("big").await.expect("load");
        // One change per millisecond, ending now.
        let t0 = SystemTime::now() - Duration::from_millis(ROWS as u64);
        let started = Instant::now();
        for first in (1..=ROWS).step_by(BATCH as usize) {
            let batch: Vec<NewUpdate> = (first..first + BATCH)
                .map(|seq| NewUpdate {
                    doc_id,
                    seq,
                    data: Bytes::from(format!("update {seq:>20} of the big log")),
                    author: Some("bench".into()),
                    created_at: t0 + Duration::from_millis(seq as u64),
                })
                .collect();
            db.store.append(&batch).await.expect("append");
        }
        println!(
            "{label:8} inserted {ROWS} rows in batches of {BATCH}: {:?}",
            started.elapsed()
        );
        for i in 0..1000 {
            db.store
                .create_document(&format!("doc/{i:04}"))
                .await
                .expect("create");
        }
        // A snapshot every 100,000 changes, as compaction would leave them.
        for seq in (100_000..=ROWS).step_by(100_000) {
            db.store
                .write_snapshot(doc_id, seq, &[1; 4096], &[2; 16])
                .await
                .expect("snapshot");
        }
        let info = db.store.document("big").await.expect("doc").expect("big");
        assert_eq!((info.last_seq, info.log_rows), (ROWS, ROWS));

        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let store = &db.store;
        let mut random_seq = move || rng.below(ROWS as u64) as i64;
        timed(
            label,
            "log_page(100 rows, metadata) at random seq",
            10,
            || {
                let at = random_seq();
                async move {
                    let page = store.log_page(doc_id, at, 100, false).await.expect("page");
                    assert_eq!(page.first().map(|r| r.seq), Some(at + 1));
                }
            },
        )
        .await;
        timed(
            label,
            "log_page(100 rows, with data) at random seq",
            10,
            || {
                let at = random_seq();
                async move {
                    store.log_page(doc_id, at, 100, true).await.expect("page");
                }
            },
        )
        .await;
        timed(
            label,
            "log_page_desc(100 rows, metadata) at random seq",
            10,
            || {
                let at = random_seq() + 1;
                async move {
                    let page = store
                        .log_page_desc(doc_id, at, 100, false)
                        .await
                        .expect("page");
                    assert_eq!(page.first().map(|r| r.seq), Some(at - 1).filter(|&s| s > 0));
                }
            },
        )
        .await;
        timed(label, "seq_at_time at random time", 10, || {
            let seq = random_seq() + 1;
            async move {
                let t = t0 + Duration::from_millis(seq as u64);
                assert_eq!(store.seq_at_time(doc_id, t).await.expect("q"), seq);
            }
        })
        .await;
        timed(
            label,
            "state at random seq: snapshot + log_range",
            10,
            || {
                let seq = random_seq() + 1;
                async move {
                    let snap = store
                        .snapshot_at_or_before(doc_id, seq)
                        .await
                        .expect("snapshot");
                    let from = snap.map_or(0, |s| s.seq);
                    let rows = store.log_range(doc_id, from, seq).await.expect("range");
                    assert_eq!(rows.len() as i64, seq - from);
                }
            },
        )
        .await;
        timed(label, "document(big)", 10, || async {
            store.document("big").await.expect("doc");
        })
        .await;
        timed(label, "list_documents(first 100 of 1,001)", 10, || async {
            let page = store.list_documents(None, None, 100).await.expect("list");
            assert_eq!(page.len(), 100);
        })
        .await;
        timed(label, "list_documents(prefix doc/05, 100)", 10, || async {
            let page = store
                .list_documents(Some("doc/05"), None, 100)
                .await
                .expect("list");
            assert_eq!(page.len(), 100);
        })
        .await;
        timed(
            label,
            "list_documents(1,000 after a cursor)",
            10,
            || async {
                let page = store
                    .list_documents(None, Some("big"), 1000)
                    .await
                    .expect("list");
                assert_eq!(page.len(), 1000);
            },
        )
        .await;
        let mut next = ROWS;
        timed(label, "append 1 row to the big document", 50, || {
            next += 1;
            let seq = next;
            async move {
                let row = NewUpdate {
                    doc_id,
                    seq,
                    data: Bytes::from_static(b"one more"),
                    author: None,
                    created_at: SystemTime::now(),
                };
                store.append(&[row]).await.expect("append");
            }
        })
        .await;
        let started = Instant::now();
        assert!(db.store.delete_document("big").await.expect("delete"));
        println!(
            "{label:8} delete_document(big, 1,000,050 rows): {:?}",
            started.elapsed()
        );
        db.finish().await;
    }
}
