//! Shared test helpers: a migrated store per available backend, each isolated
//! (SQLite: its own temp file; Postgres: its own schema). The backend-neutral
//! support (schema per test, URL helpers, the outage proxy) lives in `testkit`.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(unused_imports)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crdt_store::{NewUpdate, Store, StoreOptions};
pub use testkit::{PgSchema, Proxy, eventually, pg_url, upstream_addr, with_host_port};

/// A log row to append.
pub fn row(doc_id: i64, seq: i64, data: &[u8], author: Option<&str>, at: SystemTime) -> NewUpdate {
    NewUpdate {
        doc_id,
        seq,
        data: Bytes::copy_from_slice(data),
        author: author.map(str::to_owned),
        created_at: at,
    }
}

/// SQLite keeps milliseconds, Postgres microseconds: compare at ms.
pub fn ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// A migrated store plus what keeps it isolated. Call [`TestDb::finish`] at the
/// end of a test to drop the Postgres schema.
pub struct TestDb {
    pub label: &'static str,
    pub store: Store,
    /// URL that opens the same database (and schema) again.
    pub url: String,
    guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(PgSchema),
}

impl TestDb {
    pub async fn finish(self) {
        if let Guard::Postgres(schema) = self.guard {
            drop(self.store);
            schema.remove().await;
        }
    }
}

/// Options used by tests: small pool, short timeouts.
pub fn test_options() -> StoreOptions {
    StoreOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
        ..StoreOptions::default()
    }
}

/// A fresh, migrated SQLite database in a temp dir.
pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("tandem.db").display());
    let store = Store::open(&url, &test_options())
        .await
        .expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    TestDb {
        label: "sqlite",
        store,
        url,
        guard: Guard::Sqlite(dir),
    }
}

/// A fresh, migrated Postgres schema, or `None` when Postgres is not configured.
pub async fn pg_db(test: &str) -> Option<TestDb> {
    let schema = PgSchema::for_test(test).await?;
    let store = Store::open(&schema.url, &test_options())
        .await
        .expect("open postgres");
    store.migrate().await.expect("migrate postgres");
    Some(TestDb {
        label: "postgres",
        store,
        url: schema.url.clone(),
        guard: Guard::Postgres(schema),
    })
}

/// Every backend available here: SQLite always, Postgres when configured.
pub async fn backends(test: &str) -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db().await];
    if let Some(pg) = pg_db(test).await {
        dbs.push(pg);
    }
    dbs
}
