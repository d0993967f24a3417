//! Test support shared by Tandem's crates (a dev-dependency only; never published):
//!
//! - Postgres is optional: [`pg_url`] reads `TANDEM_TEST_DATABASE_URL` and says when the
//!   Postgres part of a test is skipped; [`PgSchema`] gives each test its own schema so tests
//!   sharing one database never see each other's rows.
//! - [`TestDb`]: one test's database on each backend available here (a SQLite file in a temp
//!   dir of its own, or a Postgres schema of its own), the unit every crate's tests run on.
//! - [`eventually`]: polls a condition until it holds or time runs out.
//! - [`Proxy`]: a TCP forwarder between a server and its database that can cut or stall the
//!   connection, to simulate an outage.
//! - [`SqliteWriteLock`]: holds SQLite's write lock from another connection, the closest an
//!   embedded database comes to "the database is unavailable" (writers fail with
//!   SQLITE_BUSY; readers are not blocked in WAL mode).
//!
//! - [`pg_tls`]: a TLS-terminating Postgres proxy and certificates made in the test, for
//!   `sslmode=require/verify-ca/verify-full`.
//!
//! It speaks SQL only to create/drop schemas and take that lock; everything else goes through
//! `crdt-store`.

pub mod pg_tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Env var naming the Postgres server used by tests; unset = Postgres tests skipped.
pub const PG_ENV: &str = "TANDEM_TEST_DATABASE_URL";

/// The Postgres URL to test against, or `None` after printing a skip line.
pub fn pg_url(test: &str) -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("{test}: {PG_ENV} is not set; skipping the Postgres part");
            None
        }
    }
}

/// A Postgres schema of one test. [`PgSchema::url`] opens the database with that schema as
/// its search path, so migrations and every query land in it. Call [`PgSchema::remove`] at
/// the end of the test (a test that panics leaves its schema behind; names are unique, so a
/// leftover never disturbs a later run).
#[derive(Debug, Clone)]
pub struct PgSchema {
    /// The URL the schema was created through.
    pub admin_url: String,
    /// The schema's name.
    pub name: String,
    /// `admin_url` with `search_path` set to the schema.
    pub url: String,
}

impl PgSchema {
    /// Creates a fresh, empty schema in the database `admin_url` names.
    pub async fn create(admin_url: &str) -> PgSchema {
        let name = unique_schema();
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {PG_ENV}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        let _ = conn.close().await;
        PgSchema {
            url: with_search_path(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
        }
    }

    /// A fresh schema when Postgres is configured; `None` (after printing a skip line) when not.
    pub async fn for_test(test: &str) -> Option<PgSchema> {
        Some(PgSchema::create(&pg_url(test)?).await)
    }

    /// Drops the schema and everything in it (best effort: errors are ignored).
    pub async fn remove(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// One test's database: a SQLite file in a temp dir of its own, or a Postgres schema of its
/// own. Call [`TestDb::finish`] at the end of the test to drop the schema (the temp dir goes
/// with the value).
pub struct TestDb {
    /// `"sqlite"` or `"postgres"`, for assertion messages.
    pub label: &'static str,
    /// The URL that opens the database (with the schema as search path on Postgres).
    pub url: String,
    guard: Guard,
}

/// What keeps a [`TestDb`] isolated, and removes it.
enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(PgSchema),
}

impl TestDb {
    /// A fresh SQLite database file (created by whoever opens it first).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        TestDb {
            label: "sqlite",
            url: format!("sqlite://{}", dir.path().join("tandem.db").display()),
            guard: Guard::Sqlite(dir),
        }
    }

    /// A fresh Postgres schema, or `None` (after printing a skip line) when Postgres is not
    /// configured.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let schema = PgSchema::for_test(test).await?;
        Some(TestDb {
            label: "postgres",
            url: schema.url.clone(),
            guard: Guard::Postgres(schema),
        })
    }

    /// Every backend available here: SQLite always, Postgres when configured.
    pub async fn all(test: &str) -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        dbs.extend(TestDb::postgres(test).await);
        dbs
    }

    /// Whether this is the Postgres one (outages are simulated differently).
    pub fn is_postgres(&self) -> bool {
        matches!(self.guard, Guard::Postgres(_))
    }

    /// A [`Proxy`] in front of this (Postgres) database, and the URL that goes through it.
    pub async fn proxied(&self) -> (Proxy, String) {
        let proxy = Proxy::start(upstream_addr(&self.url)).await;
        let url = with_host_port(&self.url, proxy.addr);
        (proxy, url)
    }

    /// Drops the Postgres schema, if any (close the pools on it first).
    pub async fn finish(self) {
        if let Guard::Postgres(schema) = self.guard {
            schema.remove().await;
        }
    }
}

/// A schema name no other test (or test process) uses.
pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tandem_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Adds `options[search_path]=schema` so every pooled connection uses the schema.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]={schema}")
}

/// Replaces the `host:port` of a postgres URL with `addr`.
pub fn with_host_port(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("url has a scheme");
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    match userinfo {
        Some(u) => format!("{scheme}://{u}@{addr}{tail}"),
        None => format!("{scheme}://{addr}{tail}"),
    }
}

/// The `host:port` a postgres URL points at (defaults: localhost:5432).
pub fn upstream_addr(url: &str) -> String {
    let (_, rest) = url.split_once("://").expect("url has a scheme");
    let authority = match rest.find(['/', '?']) {
        Some(i) => &rest[..i],
        None => rest,
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hostport = if hostport.is_empty() {
        "localhost"
    } else {
        hostport
    };
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    }
}

/// A TCP forwarder on 127.0.0.1:0 that can simulate outages: `cut` closes
/// every connection and closes new ones on accept (a crashed or restarting
/// server); `stall` stops moving bytes while keeping sockets open (a network
/// path that silently drops packets).
pub struct Proxy {
    /// Where clients connect instead of the upstream.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let up = Arc::clone(&up);
            let stalled = Arc::clone(&stalled);
            let conns = Arc::clone(&conns);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let stalled = Arc::clone(&stalled);
                    let task = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (client_rx, client_tx) = client.into_split();
                        let (server_rx, server_tx) = server.into_split();
                        tokio::join!(
                            pump(client_rx, server_tx, Arc::clone(&stalled)),
                            pump(server_rx, client_tx, stalled),
                        );
                    });
                    conns.lock().expect("proxy lock").push(task);
                }
            })
        };
        Proxy {
            addr,
            up,
            stalled,
            conns,
            accept,
        }
    }

    /// Closes every forwarded connection and refuses (accept + close) new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }

    /// Stops forwarding bytes; connections stay open (and new ones are accepted
    /// but get no answer).
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Forwards again (after `cut` or `stall`); bytes held during a stall are
    /// delivered late, as after a network hiccup.
    pub fn restore(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies one direction, holding data while `stalled`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// SQLite's write lock, held by a connection of its own (`BEGIN EXCLUSIVE`; in WAL mode that
/// blocks other writers, not readers). While it is held, every other writer waits out its
/// busy timeout and fails with SQLITE_BUSY. Released by [`SqliteWriteLock::release`] or drop.
pub struct SqliteWriteLock {
    conn: Option<sqlx::SqliteConnection>,
}

impl SqliteWriteLock {
    /// Takes the write lock of the database file `url` names (`sqlite://path`), waiting for
    /// writers in progress to finish.
    pub async fn acquire(url: &str) -> SqliteWriteLock {
        let mut conn = sqlx::SqliteConnection::connect(url)
            .await
            .expect("open sqlite for locking");
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .expect("take the sqlite write lock");
        SqliteWriteLock { conn: Some(conn) }
    }

    /// Rolls the (empty) transaction back and closes the connection.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes; whether it held. `cond` is
/// async so that it may ask a server or a store (a plain check: `|| std::future::ready(..)`).
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
