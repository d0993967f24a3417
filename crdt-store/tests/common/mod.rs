//! Shared test helpers: a migrated store per available backend, each isolated
//! (SQLite: its own temp file; Postgres: its own schema), and a TCP proxy that
//! can cut the connection to Postgres to simulate an outage.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crdt_store::{Store, StoreOptions};
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
    Postgres { admin_url: String, schema: String },
}

impl TestDb {
    pub async fn finish(self) {
        if let Guard::Postgres { admin_url, schema } = &self.guard {
            drop(self.store);
            if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
                let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }
}

/// Options used by tests: small pool, short timeouts.
pub fn test_options() -> StoreOptions {
    StoreOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
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
    let admin_url = pg_url(test)?;
    let schema = unique_schema();
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to TANDEM_TEST_DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    let _ = conn.close().await;
    let url = with_search_path(&admin_url, &schema);
    let store = Store::open(&url, &test_options())
        .await
        .expect("open postgres");
    store.migrate().await.expect("migrate postgres");
    Some(TestDb {
        label: "postgres",
        store,
        url,
        guard: Guard::Postgres { admin_url, schema },
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

/// A schema name no other test (or test process) uses.
fn unique_schema() -> String {
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
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
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

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
