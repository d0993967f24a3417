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

/// A migrated store on one test's database ([`testkit::TestDb`]: its label and URL read
/// through). Call [`TestDb::finish`] at the end of a test to drop the Postgres schema.
pub struct TestDb {
    pub store: Store,
    db: testkit::TestDb,
}

impl std::ops::Deref for TestDb {
    type Target = testkit::TestDb;

    fn deref(&self) -> &testkit::TestDb {
        &self.db
    }
}

impl TestDb {
    /// Migrates `db` and opens the store on it.
    async fn open(db: testkit::TestDb) -> TestDb {
        let store = Store::open(&db.url, &test_options())
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", db.label));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate {}: {e}", db.label));
        TestDb { store, db }
    }

    pub async fn finish(self) {
        drop(self.store);
        self.db.finish().await;
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
    TestDb::open(testkit::TestDb::sqlite()).await
}

/// A fresh, migrated Postgres schema, or `None` when Postgres is not configured.
pub async fn pg_db(test: &str) -> Option<TestDb> {
    Some(TestDb::open(testkit::TestDb::postgres(test).await?).await)
}

/// Every backend available here: SQLite always, Postgres when configured.
pub async fn backends(test: &str) -> Vec<TestDb> {
    let mut dbs = Vec::new();
    for db in testkit::TestDb::all(test).await {
        dbs.push(TestDb::open(db).await);
    }
    dbs
}
