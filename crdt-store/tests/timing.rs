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
        let doc_id = db.store.load("timing").await.expect("load").doc_id;
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
