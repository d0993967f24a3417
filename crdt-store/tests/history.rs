//! The storage side of the admin history API, on every available backend (SQLite always,
//! Postgres when TANDEM_TEST_DATABASE_URL is set): per-document statistics kept by the
//! database, the document list, labels, deletion with tombstones, time lookups and
//! backward paging.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{TestDb, ms, row};
use crdt_store::{DocumentInfo, NewUpdate, StoreError};

/// The document's info, which must exist.
async fn info(db: &TestDb, name: &str) -> DocumentInfo {
    db.store
        .document(name)
        .await
        .expect("document")
        .unwrap_or_else(|| panic!("{}: no document {name:?}", db.label))
}

/// `(last_seq, log_rows, log_bytes, first_logged_seq)`.
fn log_stats(i: &DocumentInfo) -> (i64, i64, i64, Option<i64>) {
    (i.last_seq, i.log_rows, i.log_bytes, i.first_logged_seq)
}

fn names(docs: &[DocumentInfo]) -> Vec<&str> {
    docs.iter().map(|d| d.name.as_str()).collect()
}

#[tokio::test]
async fn stats_follow_appends_duplicates_and_prune() {
    for db in common::backends("stats_follow_appends_duplicates_and_prune").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("stats").await.expect("load");
        let other = db.store.create_document("stats-other").await.expect("load");

        let fresh = info(&db, "stats").await;
        assert_eq!(fresh.doc_id, d);
        assert_eq!(fresh.name, "stats");
        assert_eq!(log_stats(&fresh), (0, 0, 0, None));
        assert_eq!(fresh.last_change_at, None);
        assert_eq!(fresh.deleted_at, None);
        assert_eq!(
            (fresh.snapshots, fresh.snapshot_bytes, fresh.labels),
            (0, 0, 0)
        );
        assert_eq!(fresh.latest_snapshot, None);
        let age = SystemTime::now()
            .duration_since(fresh.created_at)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "created {age:?} ago");

        let old = SystemTime::now() - Duration::from_secs(3600);
        let recent = SystemTime::now() - Duration::from_secs(5);
        // Rows 1..=10 (seq bytes each), old; one row of another document in the same batch.
        let mut rows: Vec<NewUpdate> = (1..=10)
            .map(|s| row(d, s, &vec![1; s as usize], None, old))
            .collect();
        rows.push(row(other, 1, b"xyz", None, old));
        db.store.append(&rows).await.expect("append");
        let after = info(&db, "stats").await;
        assert_eq!(log_stats(&after), (10, 10, 55, Some(1)));
        assert_eq!(after.last_change_at.map(ms), Some(ms(old)));
        assert_eq!(
            log_stats(&info(&db, "stats-other").await),
            (1, 1, 3, Some(1))
        );

        // A retried batch, an overlapping one and duplicates within a batch: only rows
        // actually inserted count.
        db.store.append(&rows).await.expect("re-append");
        let overlap: Vec<NewUpdate> = (9..=12)
            .map(|s| row(d, s, &[2; 100], None, recent))
            .collect();
        db.store.append(&overlap).await.expect("overlap");
        let dup = vec![
            row(d, 13, b"abcd", Some("a"), recent),
            row(d, 13, b"abcdefgh", Some("a"), recent),
        ];
        db.store.append(&dup).await.expect("duplicate in batch");
        let after = info(&db, "stats").await;
        assert_eq!(log_stats(&after), (13, 13, 55 + 200 + 4, Some(1)));
        assert_eq!(after.last_change_at.map(ms), Some(ms(recent)));
        // A batch larger than one SQLite statement, mixing new rows and duplicates.
        let big: Vec<NewUpdate> = (1..=1000)
            .map(|s| row(d, s, b"0123456789", None, recent))
            .collect();
        db.store.append(&big).await.expect("big");
        let after = info(&db, "stats").await;
        assert_eq!(log_stats(&after), (1000, 1000, 259 + 987 * 10, Some(1)));

        // Snapshots are counted from their table; prune lowers the log's counts, not last_seq.
        db.store
            .write_snapshot(d, 5, b"state5", b"sv")
            .await
            .expect("snapshot");
        db.store
            .write_snapshot(d, 10, b"state-10", b"sv10")
            .await
            .expect("snapshot");
        let removed = db
            .store
            .prune_log(d, recent - Duration::from_secs(1))
            .await
            .expect("prune");
        assert_eq!(
            removed, 10,
            "old rows 1..=10 are covered by the snapshot at 10"
        );
        let after = info(&db, "stats").await;
        assert_eq!(
            log_stats(&after),
            (1000, 990, 259 + 987 * 10 - 55, Some(11))
        );
        assert_eq!(after.snapshots, 2);
        assert_eq!(after.snapshot_bytes, (6 + 2) + (8 + 4));
        let latest = after.latest_snapshot.expect("latest snapshot");
        assert_eq!((latest.seq, latest.bytes), (10, 12));
        assert!(
            SystemTime::now()
                .duration_since(latest.created_at)
                .unwrap_or_default()
                < Duration::from_secs(60)
        );
        // The other document is untouched.
        assert_eq!(
            log_stats(&info(&db, "stats-other").await),
            (1, 1, 3, Some(1))
        );
        assert_eq!(db.store.document("never").await.expect("document"), None);
        db.finish().await;
    }
}

#[tokio::test]
async fn document_list_pages_by_name_and_takes_prefixes_literally() {
    for db in common::backends("document_list_pages_by_name_and_takes_prefixes_literally").await {
        println!("backend: {}", db.label);
        // In byte order: '%' < 'X' < '\\' < '_' < 'b', '/' < '0', 'z' < 'é' < '😀'.
        let all = [
            "a",
            "a%",
            "a%b",
            "a%c",
            "aXb",
            "a\\b",
            "a_",
            "a_b",
            "ab",
            "b",
            "notes/1",
            "notes/2",
            "notes/2/x",
            "notes0",
            "z\u{E9}",
            "\u{1F600}",
        ];
        // Created out of order: the list orders by name.
        for name in all.iter().rev() {
            db.store.create_document(name).await.expect("create");
        }
        let d = db.store.find_doc_id("notes/2").await.expect("find");
        let d = d.expect("notes/2 exists");
        db.store
            .append(&[row(d, 1, b"hello", None, SystemTime::now())])
            .await
            .expect("append");

        let listed = db
            .store
            .list_documents(None, None, 100)
            .await
            .expect("list");
        assert_eq!(names(&listed), all.to_vec(), "bytewise order");
        let notes2 = listed.iter().find(|i| i.name == "notes/2").expect("listed");
        assert_eq!(
            (notes2.last_seq, notes2.log_rows, notes2.log_bytes),
            (1, 1, 5)
        );
        assert_eq!(notes2.first_logged_seq, Some(1));

        // Keyset paging: pass the last name back.
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = db
                .store
                .list_documents(None, after.as_deref(), 5)
                .await
                .expect("page");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|i| i.name.clone());
            pages.push(page.len());
            assert!(pages.len() < 10, "paging does not end");
        }
        assert_eq!(pages, vec![5, 5, 5, 1]);

        let prefixed = |prefix: &'static str| {
            let store = db.store.clone();
            async move {
                let page = store
                    .list_documents(Some(prefix), None, 100)
                    .await
                    .expect("list");
                page.into_iter().map(|i| i.name).collect::<Vec<_>>()
            }
        };
        // LIKE wildcards and backslashes are plain characters of a prefix.
        assert_eq!(prefixed("a%").await, vec!["a%", "a%b", "a%c"]);
        assert_eq!(prefixed("a_").await, vec!["a_", "a_b"]);
        assert_eq!(prefixed("a\\").await, vec!["a\\b"]);
        assert_eq!(
            prefixed("notes/").await,
            vec!["notes/1", "notes/2", "notes/2/x"]
        );
        assert_eq!(prefixed("notes/2").await, vec!["notes/2", "notes/2/x"]);
        assert_eq!(prefixed("\u{1F600}").await, vec!["\u{1F600}"]);
        assert_eq!(prefixed("z").await, vec!["z\u{E9}"]);
        assert!(prefixed("c").await.is_empty());
        assert_eq!(
            prefixed("").await.len(),
            all.len(),
            "empty prefix: everything"
        );

        // Prefix and cursor together.
        let page = db
            .store
            .list_documents(Some("a"), Some("a%c"), 3)
            .await
            .expect("list");
        assert_eq!(names(&page), vec!["aXb", "a\\b", "a_"]);
        let page = db
            .store
            .list_documents(Some("notes/"), Some("a"), 100)
            .await
            .expect("cursor before the prefix");
        assert_eq!(names(&page), vec!["notes/1", "notes/2", "notes/2/x"]);
        let page = db
            .store
            .list_documents(Some("a"), Some("b"), 100)
            .await
            .expect("cursor after the prefix");
        assert!(page.is_empty());
        assert!(
            db.store
                .list_documents(None, None, 0)
                .await
                .expect("limit 0")
                .is_empty()
        );

        // Deleted documents are not listed.
        assert!(db.store.delete_document("a%b").await.expect("delete"));
        assert_eq!(prefixed("a%").await, vec!["a%", "a%c"]);
        db.finish().await;
    }
}

#[tokio::test]
async fn labels_are_unique_per_document_and_ordered() {
    for db in common::backends("labels_are_unique_per_document_and_ordered").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("labelled").await.expect("load");
        let other = db
            .store
            .create_document("labelled-too")
            .await
            .expect("load");
        let now = SystemTime::now();
        let rows: Vec<NewUpdate> = (1..=20).map(|s| row(d, s, b"x", None, now)).collect();
        db.store.append(&rows).await.expect("append");

        let v1 = db.store.put_label(d, "v1.0", 12).await.expect("put v1.0");
        assert_eq!((v1.name.as_str(), v1.seq), ("v1.0", 12));
        let age = SystemTime::now()
            .duration_since(v1.created_at)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60));
        db.store.put_label(d, "draft", 3).await.expect("put draft");
        db.store.put_label(d, "b", 12).await.expect("put b");
        db.store.put_label(d, "empty", 0).await.expect("put empty");
        db.store
            .put_label(d, "sent to legal \u{2696}", 20)
            .await
            .expect("put unicode");
        // The same name on another document is fine.
        db.store
            .put_label(other, "v1.0", 0)
            .await
            .expect("other doc");

        match db.store.put_label(d, "v1.0", 15).await {
            Err(e @ StoreError::Conflict(_)) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains("v1.0"), "{e}");
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        // The conflict did not move the label.
        let got = db.store.label(d, "v1.0").await.expect("label");
        assert_eq!(
            got.map(|l| (l.seq, ms(l.created_at))),
            Some((12, ms(v1.created_at)))
        );
        assert_eq!(db.store.label(d, "nope").await.expect("label"), None);

        let listed: Vec<(i64, String)> = db
            .store
            .labels(d)
            .await
            .expect("labels")
            .into_iter()
            .map(|l| (l.seq, l.name))
            .collect();
        let expected = [
            (0, "empty"),
            (3, "draft"),
            (12, "b"),
            (12, "v1.0"),
            (20, "sent to legal \u{2696}"),
        ];
        let expected: Vec<(i64, String)> = expected
            .iter()
            .map(|(s, n)| (*s, (*n).to_owned()))
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(info(&db, "labelled").await.labels, 5);

        assert!(db.store.delete_label(d, "b").await.expect("delete"));
        assert!(!db.store.delete_label(d, "b").await.expect("delete again"));
        assert_eq!(db.store.labels(d).await.expect("labels").len(), 4);
        assert_eq!(db.store.labels(other).await.expect("labels").len(), 1);
        // A deleted label's name can be used again.
        db.store.put_label(d, "b", 1).await.expect("put b again");
        db.finish().await;
    }
}

#[tokio::test]
async fn deleted_documents_are_tombstoned_for_good() {
    for db in common::backends("deleted_documents_are_tombstoned_for_good").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("doomed").await.expect("load");
        let keep = db.store.create_document("kept").await.expect("load");
        let now = SystemTime::now();
        let mut rows: Vec<NewUpdate> = (1..=50).map(|s| row(d, s, b"data", None, now)).collect();
        rows.extend((1..=3).map(|s| row(keep, s, b"k", None, now)));
        db.store.append(&rows).await.expect("append");
        db.store
            .write_snapshot(d, 40, b"state", b"sv")
            .await
            .expect("snapshot");
        db.store.put_label(d, "v1", 30).await.expect("label");
        db.store.put_label(keep, "v1", 2).await.expect("label");

        assert!(db.store.delete_document("doomed").await.expect("delete"));
        assert!(
            !db.store.delete_document("doomed").await.expect("again"),
            "already deleted"
        );
        assert!(
            !db.store
                .delete_document("never-was")
                .await
                .expect("unknown"),
            "no such document"
        );

        // The row stays as a tombstone; everything else is gone.
        let gone = info(&db, "doomed").await;
        assert_eq!(gone.doc_id, d);
        let deleted_at = gone.deleted_at.expect("deleted_at set");
        assert!(
            SystemTime::now()
                .duration_since(deleted_at)
                .unwrap_or_default()
                < Duration::from_secs(60)
        );
        assert_eq!(
            (gone.log_rows, gone.log_bytes, gone.first_logged_seq),
            (0, 0, None)
        );
        assert_eq!(
            (gone.snapshots, gone.snapshot_bytes, gone.labels),
            (0, 0, 0)
        );
        assert_eq!(gone.latest_snapshot, None);
        assert!(
            db.store
                .log_page(d, 0, 100, true)
                .await
                .expect("page")
                .is_empty()
        );
        assert_eq!(
            db.store.snapshot_at_or_before(d, 100).await.expect("snap"),
            None
        );
        assert!(db.store.labels(d).await.expect("labels").is_empty());

        // The name is refused everywhere.
        match db.store.load("doomed").await {
            Err(e @ StoreError::Deleted(_)) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains("doomed"), "{e}");
            }
            other => panic!("expected Deleted, got {other:?}"),
        }
        assert_eq!(db.store.find_doc_id("doomed").await.expect("find"), None);
        assert_eq!(
            db.store.deleted_documents().await.expect("deleted"),
            vec!["doomed".to_owned()]
        );
        assert!(
            !names(&db.store.list_documents(None, None, 10).await.expect("list"))
                .contains(&"doomed")
        );

        // Late writes from a room that held the document: appends are dropped (without
        // failing the rest of their batch), snapshots and labels refused.
        let late = vec![
            row(d, 51, b"late", None, now),
            row(keep, 4, b"k4", None, now),
            row(d, 52, b"late", None, now),
        ];
        db.store.append(&late).await.expect("late append");
        assert!(
            db.store
                .log_page(d, 0, 100, true)
                .await
                .expect("page")
                .is_empty()
        );
        // Not counted either: a tombstone's statistics are frozen.
        let frozen = info(&db, "doomed").await;
        assert_eq!(
            (frozen.last_seq, frozen.log_rows, frozen.log_bytes),
            (gone.last_seq, 0, 0)
        );
        assert_eq!(log_stats(&info(&db, "kept").await), (4, 4, 5, Some(1)));
        assert!(matches!(
            db.store.write_snapshot(d, 52, b"s", b"v").await,
            Err(StoreError::Deleted(_))
        ));
        assert!(matches!(
            db.store.put_label(d, "v2", 1).await,
            Err(StoreError::Deleted(_))
        ));
        assert_eq!(info(&db, "doomed").await.snapshots, 0);

        // The other document is untouched, and other names still work.
        assert_eq!(db.store.load("kept").await.expect("load").updates.len(), 4);
        assert_eq!(db.store.labels(keep).await.expect("labels").len(), 1);
        assert!(db.store.load("doomed2").await.is_ok());
        // A tombstone is never revived by a create.
        assert!(matches!(
            db.store.create_document("doomed").await,
            Err(StoreError::Deleted(_))
        ));
        db.finish().await;
    }
}

/// Appends keep streaming into a document while it is deleted: whichever way each append
/// and the delete interleave, nothing of the document survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_racing_appends_leaves_nothing_behind() {
    for db in common::backends("delete_racing_appends_leaves_nothing_behind").await {
        println!("backend: {}", db.label);
        for round in 0..5 {
            let name = format!("raced-{round}");
            let d = db.store.create_document(&name).await.expect("load");
            let store = db.store.clone();
            let appender = tokio::spawn(async move {
                let mut seq = 0;
                for _ in 0..40 {
                    let batch: Vec<NewUpdate> = (0..25)
                        .map(|_| {
                            seq += 1;
                            row(d, seq, b"racing", None, SystemTime::now())
                        })
                        .collect();
                    store.append(&batch).await.expect("append");
                    let snap = store.write_snapshot(d, seq, b"s", b"v").await;
                    assert!(
                        matches!(snap, Ok(()) | Err(StoreError::Deleted(_))),
                        "{snap:?}"
                    );
                }
            });
            tokio::time::sleep(Duration::from_millis(5 * round)).await;
            assert!(db.store.delete_document(&name).await.expect("delete"));
            appender.await.expect("appender");
            let gone = info(&db, &name).await;
            assert!(gone.deleted_at.is_some());
            assert_eq!(
                (gone.log_rows, gone.log_bytes, gone.snapshots),
                (0, 0, 0),
                "round {round}"
            );
            assert!(
                db.store
                    .log_page(d, 0, 10, false)
                    .await
                    .expect("page")
                    .is_empty()
            );
        }
        db.finish().await;
    }
}

#[tokio::test]
async fn seq_at_time_finds_the_last_change_at_or_before() {
    for db in common::backends("seq_at_time_finds_the_last_change_at_or_before").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("timed").await.expect("load");
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // seqs 1..=3 at t0+10, 4 at t0+20, 5..=6 at t0+30 (same millisecond), 7 at t0+40.
        let times = [
            (1, 10),
            (2, 10),
            (3, 10),
            (4, 20),
            (5, 30),
            (6, 30),
            (7, 40),
        ];
        let rows: Vec<NewUpdate> = times
            .iter()
            .map(|&(s, t)| row(d, s, b"x", None, at(t)))
            .collect();
        db.store.append(&rows).await.expect("append");

        for (t, expected) in [
            (t0, 0),
            (at(9), 0),
            (at(10), 3),
            (at(15), 3),
            (at(20), 4),
            (at(29), 4),
            (at(30), 6),
            (at(40), 7),
            (at(10_000), 7),
            (SystemTime::UNIX_EPOCH, 0),
        ] {
            assert_eq!(
                db.store.seq_at_time(d, t).await.expect("seq_at_time"),
                expected,
                "at {:?}",
                t.duration_since(t0)
            );
        }
        assert_eq!(db.store.seq_at_time(d + 999, at(40)).await.expect("q"), 0);
        db.finish().await;
    }
}

#[tokio::test]
async fn log_page_desc_pages_backwards() {
    for db in common::backends("log_page_desc_pages_backwards").await {
        println!("backend: {}", db.label);
        let d = db.store.create_document("backwards").await.expect("load");
        let now = SystemTime::now();
        let rows: Vec<NewUpdate> = (1..=25)
            .map(|s| row(d, s, &vec![b'y'; s as usize], Some("z"), now))
            .collect();
        db.store.append(&rows).await.expect("append");

        let mut before = i64::MAX;
        let mut pages = Vec::new();
        loop {
            let page = db
                .store
                .log_page_desc(d, before, 10, false)
                .await
                .expect("page");
            if page.is_empty() {
                break;
            }
            assert!(page.iter().all(|r| r.data.is_empty() && r.size == r.seq));
            before = page.last().map_or(before, |r| r.seq);
            pages.push(page.iter().map(|r| r.seq).collect::<Vec<_>>());
        }
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[0], (16..=25).rev().collect::<Vec<_>>());
        assert_eq!(pages[1], (6..=15).rev().collect::<Vec<_>>());
        assert_eq!(pages[2], (1..=5).rev().collect::<Vec<_>>());

        let with_data = db.store.log_page_desc(d, 4, 10, true).await.expect("page");
        let got: Vec<(i64, usize)> = with_data.iter().map(|r| (r.seq, r.data.len())).collect();
        assert_eq!(got, vec![(3, 3), (2, 2), (1, 1)]);
        assert_eq!(with_data[0].author.as_deref(), Some("z"));
        assert!(
            db.store
                .log_page_desc(d, 1, 10, true)
                .await
                .expect("page")
                .is_empty()
        );
        db.finish().await;
    }
}

/// A database that ran migrations 0001-0003 with documents in it gets correct statistics
/// from 0004's backfill.
#[tokio::test]
async fn migration_backfills_statistics() {
    println!("backend: sqlite");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("url");
    let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
        .await
        .expect("connect");
    migrate_to_0003(&pool, "sqlite").await;
    sqlx::raw_sql(
        "INSERT INTO documents (id, name, created_at) VALUES (1, 'a', 1000), (2, 'b', 1000), \
           (3, 'c', 1000); \
         INSERT INTO updates (doc_id, seq, created_at, size, author, data) VALUES \
           (1, 1, 2000, 3, NULL, x'010203'), (1, 2, 3000, 2, NULL, x'0102'), \
           (1, 5, 2500, 1, NULL, x'01'); \
         INSERT INTO snapshots (doc_id, seq, state, state_vector, created_at) VALUES \
           (1, 2, x'0a0b', x'0c', 3500), (2, 9, x'0a0b0c', x'', 4000);",
    )
    .execute(&pool)
    .await
    .expect("old rows");
    pool.close().await;
    check_backfill(&url).await;

    let Some(schema) = common::PgSchema::for_test("migration_backfills_statistics").await else {
        return;
    };
    println!("backend: postgres");
    let pool = sqlx::PgPool::connect(&schema.url).await.expect("connect");
    migrate_to_0003(&pool, "postgres").await;
    sqlx::raw_sql(
        "INSERT INTO documents (id, name, created_at) VALUES (1, 'a', to_timestamp(1)), \
           (2, 'b', to_timestamp(1)), (3, 'c', to_timestamp(1)); \
         SELECT setval('documents_id_seq', 3); \
         INSERT INTO updates (doc_id, seq, created_at, size, author, data) VALUES \
           (1, 1, to_timestamp(2), 3, NULL, '\\x010203'), \
           (1, 2, to_timestamp(3), 2, NULL, '\\x0102'), \
           (1, 5, to_timestamp(2.5), 1, NULL, '\\x01'); \
         INSERT INTO snapshots (doc_id, seq, state, state_vector, created_at) VALUES \
           (1, 2, '\\x0a0b', '\\x0c', to_timestamp(3.5)), \
           (2, 9, '\\x0a0b0c', '', to_timestamp(4));",
    )
    .execute(&pool)
    .await
    .expect("old rows");
    pool.close().await;
    check_backfill(&schema.url).await;
    schema.remove().await;
}

async fn migrate_to_0003<'a, A>(conn: A, dialect: &str)
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(dialect);
    sqlx::migrate::Migrator::new(dir)
        .await
        .expect("migrations")
        .run_to(3, conn)
        .await
        .expect("migrate to 0003");
}

/// Opens `url` through the store (which applies 0004) and checks the backfilled numbers.
async fn check_backfill(url: &str) {
    let store = crdt_store::Store::open(url, &common::test_options())
        .await
        .expect("open");
    store.migrate().await.expect("migrate to the newest");
    let secs = |s: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s);
    let a = store.document("a").await.expect("a").expect("a exists");
    assert_eq!(
        (a.last_seq, a.log_rows, a.log_bytes, a.first_logged_seq),
        (5, 3, 6, Some(1))
    );
    assert_eq!(a.last_change_at.map(ms), Some(ms(secs(3.0))));
    assert_eq!((a.snapshots, a.snapshot_bytes), (1, 3));
    // Whole log pruned: last_seq from the snapshot, the time is the snapshot's.
    let b = store.document("b").await.expect("b").expect("b exists");
    assert_eq!(
        (b.last_seq, b.log_rows, b.log_bytes, b.first_logged_seq),
        (9, 0, 0, None)
    );
    assert_eq!(b.last_change_at.map(ms), Some(ms(secs(4.0))));
    let c = store.document("c").await.expect("c").expect("c exists");
    assert_eq!((c.last_seq, c.log_rows, c.last_change_at), (0, 0, None));
    // The triggers carry on from the backfilled numbers.
    store
        .append(&[row(1, 6, b"four", None, secs(5.0))])
        .await
        .expect("append");
    let a = store.document("a").await.expect("a").expect("a exists");
    assert_eq!((a.last_seq, a.log_rows, a.log_bytes), (6, 4, 10));
    // Loading a pre-0004 document still works, and ids keep counting from the old rows.
    assert_eq!(store.load("a").await.expect("load").last_seq, 6);
    assert!(store.create_document("d").await.expect("load new") > 3);
}
