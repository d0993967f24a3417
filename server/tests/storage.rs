//! Durable storage, tested through the server: restarts, `kill -9`, database outages, slow
//! loads, compaction and failed loads. Every test runs on SQLite, and on Postgres when
//! `TANDEM_TEST_DATABASE_URL` is set (each test in a schema of its own); without it the
//! Postgres part prints that it is skipped and the test passes.
//!
//! The promise under test: once any peer has received an update, it survives a crash
//! (the server persists before it relays).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, Db, TestServer, WAIT, config, eventually, frame};
use crdt_store::{NewUpdate, Store};
use futures::{SinkExt, StreamExt};
use tandem::Config;
use testkit::{Proxy, SqliteWriteLock};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, GetString, ReadTxn, StateVector, Text, Transact};

// ---------------------------------------------------------------------------------------------
// Databases

fn server_config(url: &str) -> Config {
    let mut c = config();
    c.database_url = Some(url.to_string());
    c
}

async fn start(url: &str) -> TestServer {
    start_with(server_config(url)).await
}

/// Starts a server and waits until it serves HTTP, i.e. storage is open and migrated (a test
/// that then cuts the database must not cut it under the server's startup).
async fn start_with(config: Config) -> TestServer {
    let server = TestServer::start(config).await;
    assert_eq!(health(&server).await["status"], "ok");
    server
}

// ---------------------------------------------------------------------------------------------
// Documents and the log

/// The strings in root array `tokens`.
fn tokens(doc: &Doc) -> Vec<String> {
    // The root type is fetched before the transaction: yrs deadlocks otherwise.
    let array = doc.get_or_insert_array("tokens");
    let txn = doc.transact();
    array.iter(&txn).map(|v| v.to_string(&txn)).collect()
}

fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text("text");
    text.get_string(&doc.transact())
}

/// Panics unless `big` has seen at least everything `small` has, client by client.
fn assert_dominates(big: &StateVector, small: &StateVector, what: &str) {
    for (client, clock) in small.iter() {
        assert!(
            big.get(client) >= *clock,
            "{what}: client {client:?} has clock {} < {clock}",
            big.get(client)
        );
    }
}

async fn doc_id(store: &Store, name: &str) -> i64 {
    store.create_document(name).await.expect("load")
}

/// Sequence numbers of every log row of the document, ascending.
async fn log_seqs(store: &Store, doc_id: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    loop {
        let after = seqs.last().copied().unwrap_or(0);
        let page = store
            .log_page(doc_id, after, 500, false)
            .await
            .expect("log page");
        if page.is_empty() {
            return seqs;
        }
        seqs.extend(page.iter().map(|r| r.seq));
    }
}

async fn newest_snapshot_seq(store: &Store, doc_id: i64) -> Option<i64> {
    store
        .snapshot_at_or_before(doc_id, i64::MAX)
        .await
        .expect("snapshot")
        .map(|s| s.seq)
}

/// Sends `n` one-character inserts at the end of `text` and waits for all their echoes,
/// i.e. until the server has made them durable.
async fn type_chars(c: &mut Client, n: usize) {
    let start = c.updates_received;
    for i in 0..n {
        let len = c.text("text").len() as u32;
        let ch = char::from(b'a' + (i % 26) as u8).to_string();
        c.insert("text", len, &ch).await;
    }
    c.pump_until(|c| c.updates_received >= start + n).await;
}

/// `GET /healthz` as JSON.
async fn health(server: &TestServer) -> serde_json::Value {
    let (code, body) = server.http_get("/healthz").await;
    assert_eq!(code, 200, "healthz: {body}");
    serde_json::from_str(&body).expect("healthz json")
}

/// Polls `/healthz` until its status is `want`, for at most `within`.
async fn wait_health(server: &TestServer, want: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let h = health(server).await;
        if h["status"] == want {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "healthz never reported {want:?} within {within:?}; last: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// A `tandem` process on port 0; killed (SIGKILL) when dropped.
struct Tandem {
    child: Child,
    addr: SocketAddr,
}

impl Tandem {
    /// Spawns the binary on `db_url` and waits for its `listening on <addr>` log line.
    async fn spawn(db_url: &str, extra: &[&str]) -> Tandem {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--log",
                "info",
                "--database-url",
                db_url,
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tandem");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        // Reads stderr to the end (so the process never blocks on a full pipe) and forwards
        // every line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(strip_ansi(&line)).is_err() {
                    // Nobody listens any more: keep draining.
                    continue;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = timeout(Duration::from_secs(30), async {
            while let Some(line) = rx.recv().await {
                if let Some(addr) = listening_addr(&line) {
                    return Some(addr);
                }
                seen.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!(
                "tandem did not report its address; stderr:\n{}",
                seen.join("\n")
            );
        };
        Tandem { child, addr }
    }

    fn url(&self, doc: &str) -> String {
        format!("ws://{}/{}", self.addr, doc)
    }

    /// SIGKILL (std's `Child::kill` sends SIGKILL on Unix): no shutdown, no flush, no final
    /// snapshot.
    fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("wait");
        assert!(!status.success(), "killed process exited cleanly: {status}");
    }
}

impl Drop for Tandem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI escape sequences (`ESC [ ... final-byte`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn log_line_parsing() {
    let line = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                \u{1b}[2mtandem\u{1b}[0m\u{1b}[2m:\u{1b}[0m listening on 127.0.0.1:4321";
    assert_eq!(
        listening_addr(&strip_ansi(line)),
        Some("127.0.0.1:4321".parse().unwrap())
    );
    assert_eq!(listening_addr("INFO tandem: storage ready"), None);
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Serve → edit → stop → serve again on the same database: a new client sees the content.
#[tokio::test]
async fn content_survives_a_restart() {
    for db in Db::all("content_survives_a_restart").await {
        let started = Instant::now();
        let server = start(&db.url).await;
        let mut a = Client::join(&server.url("restart")).await;
        for i in 0..20u32 {
            let len = a.text("text").len() as u32;
            a.insert("text", len, &format!("line {i}\n")).await;
        }
        let map = a.doc.get_or_insert_map("meta");
        a.edit(|_, txn| {
            yrs::Map::insert(&map, txn, "title", "durable");
        })
        .await;
        a.pump_until(|c| c.updates_received == 21).await;
        let (text, sv) = (a.text("text"), a.state_vector());
        drop(a);
        server.stop().await;

        let server = start(&db.url).await;
        let b = Client::join(&server.url("restart")).await;
        assert_eq!(b.text("text"), text, "{}", db.label);
        assert_eq!(b.state_vector(), sv, "{}", db.label);
        let map = b.doc.get_or_insert_map("meta");
        let title = {
            let txn = b.doc.transact();
            yrs::Map::get(&map, &txn, "title").map(|v| v.to_string(&txn))
        };
        assert_eq!(title.as_deref(), Some("durable"), "{}", db.label);
        server.stop().await;
        println!(
            "{}: restart kept content in {:?}",
            db.label,
            started.elapsed()
        );
        db.finish().await;
    }
}

/// One burst client: pushes `c{i}-{k}` tokens into root array `tokens` as fast as a 1 ms
/// pacing allows, until `n` are sent, the socket fails or `stop` is set. Reads and discards
/// what the server sends so its queue never backs up. Returns how many it sent.
async fn burst_client(url: String, i: usize, n: usize, stop: Arc<AtomicBool>) -> usize {
    let Ok((ws, _)) = connect_async(url.as_str()).await else {
        return 0;
    };
    let (mut sink, mut stream) = ws.split();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let doc = Doc::new();
    let array = doc.get_or_insert_array("tokens");
    let mut sent = 0;
    for k in 0..n {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let update = {
            let mut txn = doc.transact_mut();
            array.push_back(&mut txn, format!("c{i}-{k}"));
            txn.encode_update_v1()
        };
        if sink
            .send(Message::binary(frame(0, Some(2), &update)))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    reader.abort();
    sent
}

/// The durability promise under a real crash: 10 clients send unique tokens while an
/// observer records what it receives; the process is SIGKILLed mid-burst and restarted on the
/// same database; a fresh client holds every token the observer had received, and its state
/// vector dominates the observer's. (Snapshots every 50 updates, so the restart loads a
/// snapshot plus a log tail, written by a process that never shut down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_nothing_a_peer_received() {
    const CLIENTS: usize = 10;
    const PER_CLIENT: usize = 3000;
    const KILL_AFTER: usize = 1500;
    for db in Db::all("kill_9_mid_burst_loses_nothing_a_peer_received").await {
        let started = Instant::now();
        // No per-connection rate limit: the burst is the point.
        let args = [
            "--snapshot-every-updates",
            "50",
            "--max-messages-per-sec",
            "0",
        ];
        let mut tandem = Tandem::spawn(&db.url, &args).await;
        let url = tandem.url("burst");

        let (reached_tx, reached) = oneshot::channel();
        let observer = tokio::spawn({
            let url = url.clone();
            async move {
                let mut c = Client::join(&url).await;
                c.pump_until(|c| c.updates_received >= KILL_AFTER).await;
                let _ = reached_tx.send(());
                // Record everything until the socket dies with the process.
                let _ = timeout(Duration::from_secs(30), async {
                    while c.recv_one().await {}
                })
                .await;
                c
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..CLIENTS)
            .map(|i| tokio::spawn(burst_client(url.clone(), i, PER_CLIENT, stop.clone())))
            .collect();

        timeout(Duration::from_secs(60), reached)
            .await
            .expect("observer saw the burst in time")
            .expect("observer task");
        tandem.kill_9();
        let killed_at = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for s in senders {
            sent += s.await.expect("burst client");
        }
        let observer = observer.await.expect("observer");
        let seen = tokens(&observer.doc);
        let seen_sv = observer.state_vector();
        assert!(seen.len() >= KILL_AFTER, "{}", db.label);
        assert!(sent >= seen.len(), "{}", db.label);
        assert!(
            sent < CLIENTS * PER_CLIENT,
            "{}: the process died mid-burst, not after it",
            db.label
        );

        // What the restart will load: the newest snapshot the crashed process wrote, plus
        // the log rows after it.
        let store = db.store().await;
        let on_disk = store.load("burst").await.expect("load");
        let snapshot_seq = on_disk.snapshot.as_ref().map(|s| s.seq);
        assert!(
            snapshot_seq.is_some(),
            "{}: snapshots were written",
            db.label
        );
        drop(store);

        let tandem = Tandem::spawn(&db.url, &args).await;
        let fresh = Client::join(&tandem.url("burst")).await;
        let recovered: HashSet<String> = tokens(&fresh.doc).into_iter().collect();
        let missing: Vec<&String> = seen.iter().filter(|t| !recovered.contains(*t)).collect();
        assert!(
            missing.is_empty(),
            "{}: {} of {} observed tokens lost by the crash, e.g. {:?}",
            db.label,
            missing.len(),
            seen.len(),
            &missing[..missing.len().min(5)]
        );
        assert_dominates(&fresh.state_vector(), &seen_sv, db.label);
        assert_eq!(recovered.len(), tokens(&fresh.doc).len(), "no duplicates");
        println!(
            "{}: sent {sent}, observer had {}, recovered {} after kill -9 at {killed_at:?} \
             (loaded snapshot at {snapshot_seq:?} + {} log rows); total {:?}",
            db.label,
            seen.len(),
            recovered.len(),
            on_disk.updates.len(),
            started.elapsed()
        );
        drop(tandem);
        db.finish().await;
    }
}

/// What takes the database away and gives it back.
enum Outage {
    /// Postgres: the proxy between server and database.
    Proxy(Proxy),
    /// SQLite: another connection holds the write lock (writers fail with SQLITE_BUSY after
    /// the 5 s busy timeout; reads still work).
    Lock(String, Option<SqliteWriteLock>),
}

impl Outage {
    async fn begin(&mut self) {
        match self {
            Outage::Proxy(p) => p.cut(),
            Outage::Lock(url, lock) => *lock = Some(SqliteWriteLock::acquire(url).await),
        }
    }

    async fn end(&mut self) {
        match self {
            Outage::Proxy(p) => p.restore(),
            Outage::Lock(_, lock) => {
                if let Some(lock) = lock.take() {
                    lock.release().await;
                }
            }
        }
    }
}

/// The database goes away mid-edit and comes back: the server stays up and reports
/// `degraded` with a backlog; the editor keeps editing from memory while relays (and echoes)
/// are held until durable; a client joining meanwhile gets its SyncStep2 once durable; after
/// the database returns everything is relayed, health is `ok`, the backlog is empty, and a
/// restart loses nothing.
#[tokio::test]
async fn database_outage_mid_edit_degrades_then_recovers_without_loss() {
    for db in Db::all("database_outage_mid_edit_degrades_then_recovers_without_loss").await {
        let started = Instant::now();
        let (mut outage, url) = if db.is_postgres() {
            let (proxy, url) = db.proxied().await;
            (Outage::Proxy(proxy), url)
        } else {
            (Outage::Lock(db.url.clone(), None), db.url.clone())
        };
        let server = start(&url).await;
        let doc_url = server.url("outage");
        let mut editor = Client::join(&doc_url).await;
        let mut observer = Client::join(&doc_url).await;
        editor.insert("text", 0, "before;").await;
        editor.pump_until(|c| c.updates_received == 1).await;
        observer.pump_until(|c| c.updates_received == 1).await;
        assert_eq!(health(&server).await["status"], "ok");

        outage.begin().await;
        for i in 0..20 {
            let len = editor.text("text").len() as u32;
            editor.insert("text", len, &format!("during{i};")).await;
        }
        // A stalled commit reports "degraded" after 2 s; SQLite waits out its 5 s busy
        // timeout before the first commit fails and the error is known.
        let h = wait_health(&server, "degraded", Duration::from_secs(20)).await;
        assert!(h["storage"]["backlog_updates"].as_u64() > Some(0), "{h}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !health(&server).await["storage"]["last_error"].is_string() {
            assert!(
                Instant::now() < deadline,
                "no storage error reported while degraded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let backlog = server.metric("tandem_storage_backlog_updates", "").await;
        assert!(backlog > 0.0, "{}: backlog metric {backlog}", db.label);
        assert!(
            server.metric("tandem_storage_degraded", "").await > 0.0,
            "{}",
            db.label
        );
        // A joiner during the outage: the room is in memory, so the join succeeds, but its
        // SyncStep2 carries non-durable updates and is held with them.
        let mut joiner = Client::connect(&doc_url).await;
        let sv = joiner.state_vector();
        joiner
            .send_raw(frame(
                0,
                Some(0),
                &yrs::updates::encoder::Encode::encode_v1(&sv),
            ))
            .await;
        // Persist before relay: nobody, not even the sender, gets the held updates yet.
        observer.pump_for(Duration::from_millis(300)).await;
        editor.pump_for(Duration::from_millis(100)).await;
        joiner.pump_for(Duration::from_millis(100)).await;
        assert_eq!(observer.updates_received, 1, "{}", db.label);
        assert_eq!(editor.updates_received, 1, "{}", db.label);
        assert!(!joiner.synced, "{}", db.label);
        assert!(editor.text("text").ends_with("during19;"));
        let outage_len = started.elapsed();

        outage.end().await;
        let recovered_at = Instant::now();
        let long = Duration::from_secs(20);
        timeout(long, observer.pump_until(|c| c.updates_received == 21))
            .await
            .expect("relays after recovery");
        let recovery = recovered_at.elapsed();
        editor.pump_until(|c| c.updates_received == 21).await;
        joiner.pump_until(|c| c.synced).await;
        let text = editor.text("text");
        assert_eq!(observer.text("text"), text, "{}", db.label);
        assert_eq!(joiner.text("text"), text, "{}", db.label);
        let h = wait_health(&server, "ok", WAIT).await;
        assert_eq!(h["storage"]["backlog_updates"], 0, "{h}");
        assert_eq!(
            server.metric("tandem_storage_backlog_updates", "").await,
            0.0
        );
        // Editing goes on normally.
        editor.insert("text", text.len() as u32, "after;").await;
        editor.pump_until(|c| c.updates_received == 22).await;
        let text = editor.text("text");
        let sv = editor.state_vector();
        drop((editor, observer, joiner));
        server.stop().await;
        drop(outage);

        // Straight to the database (no proxy): everything is there.
        let server = start(&db.url).await;
        let fresh = Client::join(&server.url("outage")).await;
        assert_eq!(fresh.text("text"), text, "{}", db.label);
        assert_eq!(fresh.state_vector(), sv, "{}", db.label);
        server.stop().await;
        println!(
            "{}: outage after {outage_len:?}, relays {recovery:?} after recovery, total {:?}",
            db.label,
            started.elapsed()
        );
        db.finish().await;
    }
}

/// Writes `n` real yrs updates (one character each into `text`) straight into the log of
/// `name`, with no snapshot, so the server's next load applies all of them. Returns the
/// document they make.
async fn seed_log(store: &Store, name: &str, n: usize) -> Doc {
    let id = doc_id(store, name).await;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    let mut rows = Vec::with_capacity(500);
    for i in 0..n {
        let update = {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &format!("{}", i % 10));
            txn.encode_update_v1()
        };
        rows.push(NewUpdate {
            doc_id: id,
            seq: i as i64 + 1,
            data: Bytes::from(update),
            author: None,
            created_at: std::time::SystemTime::now(),
        });
        if rows.len() == 500 {
            store.append(&rows).await.expect("append");
            rows.clear();
        }
    }
    store.append(&rows).await.expect("append");
    doc
}

/// Thirty clients join while the document is still loading: every one ends with the full
/// content (none sees a partial or empty document), and the document is loaded once.
/// Postgres: the database connection is stalled during the load. SQLite: the document is a
/// log of 5,000 updates (no snapshot) and the clients join the moment the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clients_joining_during_a_slow_load_all_get_the_full_document() {
    const JOINERS: usize = 30;
    const UPDATES: usize = 5000;
    for db in Db::all("thirty_clients_joining_during_a_slow_load_all_get_the_full_document").await {
        let started = Instant::now();
        let store = db.store().await;
        let expected = seed_log(&store, "crowd", UPDATES).await;
        let (text, sv) = (text_of(&expected), expected.transact().state_vector());
        let seeded = started.elapsed();

        let proxy = if db.is_postgres() {
            Some(db.proxied().await)
        } else {
            None
        };
        let url = proxy.as_ref().map_or(db.url.clone(), |(_, u)| u.clone());
        let server = start(&url).await;
        if let Some((proxy, _)) = &proxy {
            proxy.stall();
        }
        let connected = Arc::new(AtomicUsize::new(0));
        let synced = Arc::new(AtomicUsize::new(0));
        // How many had connected when the first one was served: they joined during the load.
        let waiting_at_first_sync = Arc::new(AtomicUsize::new(0));
        let doc_url = server.url("crowd");
        let joins_started = Instant::now();
        let joins: Vec<_> = (0..JOINERS)
            .map(|_| {
                let doc_url = doc_url.clone();
                let (connected, synced) = (connected.clone(), synced.clone());
                let waiting = waiting_at_first_sync.clone();
                tokio::spawn(async move {
                    let mut c = Client::connect(&doc_url).await;
                    connected.fetch_add(1, Ordering::SeqCst);
                    timeout(Duration::from_secs(30), c.sync())
                        .await
                        .expect("join in time");
                    if synced.fetch_add(1, Ordering::SeqCst) == 0 {
                        waiting.store(connected.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    (text_of(&c.doc), c.state_vector())
                })
            })
            .collect();
        if let Some((proxy, _)) = &proxy {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                synced.load(Ordering::SeqCst),
                0,
                "nobody is served while the load is stalled"
            );
            proxy.restore();
        }
        for join in joins {
            let (got_text, got_sv) = join.await.expect("joiner");
            assert_eq!(got_text.len(), text.len(), "{}: partial document", db.label);
            assert_eq!(got_text, text, "{}", db.label);
            assert_eq!(got_sv, sv, "{}", db.label);
        }
        let all_served = joins_started.elapsed();
        let loads = server.metric("tandem_documents_loaded_total", "").await;
        assert_eq!(loads, 1.0, "{}: the document is loaded once", db.label);
        let waiting = waiting_at_first_sync.load(Ordering::SeqCst);
        if db.is_postgres() {
            // They all connected during the stall, before the load could finish.
            assert_eq!(waiting, JOINERS, "{}", db.label);
        }
        server.stop().await;
        println!(
            "{}: seeded {UPDATES} updates in {seeded:?}; {waiting} of {JOINERS} had joined \
             when the first was served; all full after {all_served:?}; total {:?}",
            db.label,
            started.elapsed()
        );
        db.finish().await;
    }
}

/// Compaction keeps content and history: with a snapshot every 10 updates, after 100 updates
/// the log still has every row, snapshots exist, loading snapshot + tail (by the store and by a
/// second server) gives the same content and state vector, and so does a restart.
#[tokio::test]
async fn compaction_keeps_content_history_and_state_vector() {
    for db in Db::all("compaction_keeps_content_history_and_state_vector").await {
        let started = Instant::now();
        let mut cfg = server_config(&db.url);
        cfg.snapshot_every_updates = 10;
        let server = start_with(cfg.clone()).await;
        let mut a = Client::join(&server.url("compact")).await;
        type_chars(&mut a, 100).await;
        let store = db.store().await;
        let id = doc_id(&store, "compact").await;
        // Settled: fewer than 10 rows after the newest snapshot.
        let s = &store;
        eventually("a snapshot past seq 90", || async move {
            newest_snapshot_seq(s, id).await > Some(90)
        })
        .await;
        let mut sent = 100;
        if newest_snapshot_seq(&store, id).await == Some(100) {
            // Make sure a tail exists after the snapshot (1 row: no new snapshot is due).
            type_chars(&mut a, 1).await;
            sent += 1;
        }
        let seqs = log_seqs(&store, id).await;
        assert_eq!(seqs, (1..=sent).collect::<Vec<i64>>(), "{}", db.label);

        let loaded = store.load("compact").await.expect("load");
        let snap = loaded.snapshot.as_ref().expect("snapshot");
        assert!(!loaded.updates.is_empty() && loaded.updates.len() < 10);
        assert_eq!(snap.seq + loaded.updates.len() as i64, sent);
        let rebuilt = Doc::new();
        {
            let mut txn = rebuilt.transact_mut();
            for bytes in std::iter::once(&snap.state).chain(loaded.updates.iter().map(|r| &r.data))
            {
                let u = yrs::Update::decode_v1(bytes).expect("stored update");
                txn.apply_update(u).expect("apply");
            }
        }
        let (text, sv) = (a.text("text"), a.state_vector());
        assert_eq!(text_of(&rebuilt), text, "{}", db.label);
        assert_eq!(rebuilt.transact().state_vector(), sv, "{}", db.label);

        // A second server on the same database loads snapshot + tail itself.
        let second = start_with(cfg.clone()).await;
        let b = Client::join(&second.url("compact")).await;
        assert_eq!(b.text("text"), text, "{}", db.label);
        assert_eq!(b.state_vector(), sv, "{}", db.label);
        drop(b);
        second.stop().await;
        drop(a);
        server.stop().await;

        // Shutdown wrote a final snapshot; no history was deleted.
        assert_eq!(newest_snapshot_seq(&store, id).await, Some(sent));
        assert_eq!(log_seqs(&store, id).await.len() as i64, sent);
        let server = start_with(cfg).await;
        let c = Client::join(&server.url("compact")).await;
        assert_eq!(c.text("text"), text, "{}", db.label);
        assert_eq!(c.state_vector(), sv, "{}", db.label);
        server.stop().await;
        println!(
            "{}: {sent} updates, snapshot at {} + {} tail rows; total {:?}",
            db.label,
            snap.seq,
            loaded.updates.len(),
            started.elapsed()
        );
        db.finish().await;
    }
}

/// With log retention 0 s, rows a snapshot covers are pruned; the content after a restart is
/// still identical.
#[tokio::test]
async fn retention_prunes_covered_rows_and_keeps_content() {
    for db in Db::all("retention_prunes_covered_rows_and_keeps_content").await {
        let started = Instant::now();
        let mut cfg = server_config(&db.url);
        cfg.snapshot_every_updates = 10;
        cfg.log_retention = Some(Duration::ZERO);
        let server = start_with(cfg.clone()).await;
        let mut a = Client::join(&server.url("retain")).await;
        type_chars(&mut a, 100).await;
        let store = db.store().await;
        let id = doc_id(&store, "retain").await;
        let s = &store;
        eventually("covered rows pruned", || async move {
            let seqs = log_seqs(s, id).await;
            seqs.len() < 100 && seqs.iter().all(|&q| q > 80)
        })
        .await;
        let left = log_seqs(&store, id).await;
        let snap = newest_snapshot_seq(&store, id).await.expect("snapshot");
        assert!(left.iter().all(|&q| q <= 100), "{left:?}");
        let (text, sv) = (a.text("text"), a.state_vector());
        drop(a);
        server.stop().await;

        let server = start_with(cfg).await;
        let b = Client::join(&server.url("retain")).await;
        assert_eq!(b.text("text"), text, "{}", db.label);
        assert_eq!(b.state_vector(), sv, "{}", db.label);
        server.stop().await;
        println!(
            "{}: {} rows left (seq {:?}..) after pruning, snapshot at {snap}; total {:?}",
            db.label,
            left.len(),
            left.first(),
            started.elapsed()
        );
        db.finish().await;
    }
}

/// A load that fails refuses the join with 4003 and creates nothing: no room is kept, nothing
/// is written, and once the database is back the join gets the real content.
/// Postgres: the proxy is cut before the first join of a document with content. SQLite: the
/// write lock is held by another connection while a new document is opened, which now
/// succeeds (loading never writes), and its first change becomes durable once the lock is
/// released.
#[tokio::test]
async fn unreachable_database_refuses_join_with_4003_and_creates_nothing() {
    for db in Db::all("unreachable_database_refuses_join_with_4003_and_creates_nothing").await {
        let started = Instant::now();
        let store = db.store().await;
        let name = "precious";
        // Content written before, through a server that talks to the database directly.
        let server = start(&db.url).await;
        let mut a = Client::join(&server.url(name)).await;
        a.insert("text", 0, "written before").await;
        a.pump_until(|c| c.updates_received == 1).await;
        let (text, sv) = (a.text("text"), a.state_vector());
        drop(a);
        server.stop().await;
        let id = doc_id(&store, name).await;
        let rows_before = log_seqs(&store, id).await;
        let snap_before = newest_snapshot_seq(&store, id).await;

        let mut outage;
        let (server, doc) = if db.is_postgres() {
            let (proxy, url) = db.proxied().await;
            let server = start(&url).await;
            outage = Outage::Proxy(proxy);
            (server, name)
        } else {
            let server = start(&db.url).await;
            outage = Outage::Lock(db.url.clone(), None);
            (server, "brand-new")
        };
        outage.begin().await;
        let mut c = Client::connect(&server.url(doc)).await;
        if db.is_postgres() {
            let code = timeout(Duration::from_secs(20), c.expect_close())
                .await
                .expect("refused in time");
            assert_eq!(code, Some(4003), "{}", db.label);
            assert!(!c.synced, "{}", db.label);
            assert_eq!(health(&server).await["documents_open"], 0, "{}", db.label);
            assert_eq!(
                server.metric("tandem_documents_loaded_total", "").await,
                0.0
            );
        } else {
            // Loading only reads (a document's row comes with its first change), and WAL
            // readers do not wait for a writer: a name never written opens, empty, even
            // while another process holds the write lock.
            c.sync().await;
            assert_eq!(c.text("text"), "", "{}", db.label);
        }
        outage.end().await;

        let mut b = Client::join(&server.url(doc)).await;
        if db.is_postgres() {
            assert_eq!(b.text("text"), text, "{}", db.label);
            assert_eq!(b.state_vector(), sv, "{}", db.label);
        } else {
            assert_eq!(b.text("text"), "", "{}", db.label);
            b.insert("text", 0, "new doc works").await;
            b.pump_until(|c| c.updates_received == 1).await;
        }
        drop(b);
        server.stop().await;
        drop(outage);
        // The original document is untouched (on Postgres the join after recovery wrote no
        // rows: it made no edit).
        assert_eq!(log_seqs(&store, id).await, rows_before, "{}", db.label);
        assert_eq!(
            newest_snapshot_seq(&store, id).await,
            snap_before,
            "{}",
            db.label
        );
        let server = start(&db.url).await;
        let check = Client::join(&server.url(name)).await;
        assert_eq!(check.text("text"), text, "{}", db.label);
        server.stop().await;
        println!(
            "{}: 4003 then recovery in {:?}",
            db.label,
            started.elapsed()
        );
        db.finish().await;
    }
}

/// A stored update that cannot be decoded makes the load fail: the join is refused with 4003,
/// the document is not served (or snapshotted) empty, and nothing in the log is overwritten.
/// Once an operator writes a snapshot past the bad row, the document loads with its content.
#[tokio::test]
async fn undecodable_stored_update_refuses_join_with_4003_and_overwrites_nothing() {
    for db in
        Db::all("undecodable_stored_update_refuses_join_with_4003_and_overwrites_nothing").await
    {
        let started = Instant::now();
        let store = db.store().await;
        let good = seed_log(&store, "corrupt", 10).await;
        let id = doc_id(&store, "corrupt").await;
        store
            .append(&[NewUpdate {
                doc_id: id,
                seq: 11,
                // One client, two structs, client id 3, then nothing: truncated.
                data: Bytes::from_static(&[0x01, 0x02, 0x03]),
                author: None,
                created_at: std::time::SystemTime::now(),
            }])
            .await
            .expect("append bad row");

        let server = start(&db.url).await;
        for _ in 0..2 {
            // Refused every time: a failed room is not kept.
            let mut c = Client::connect(&server.url("corrupt")).await;
            assert_eq!(c.expect_close().await, Some(4003), "{}", db.label);
            assert!(!c.synced);
        }
        assert_eq!(health(&server).await["documents_open"], 0);
        assert_eq!(log_seqs(&store, id).await, (1..=11).collect::<Vec<i64>>());
        assert_eq!(newest_snapshot_seq(&store, id).await, None, "{}", db.label);

        // Repair: a snapshot at seq 11 made from the good state; the bad row stays in history.
        let (state, sv) = {
            let txn = good.transact();
            (
                txn.encode_state_as_update_v1(&StateVector::default()),
                txn.state_vector(),
            )
        };
        let sv_bytes = yrs::updates::encoder::Encode::encode_v1(&sv);
        store
            .write_snapshot(id, 11, &state, &sv_bytes)
            .await
            .expect("snapshot");
        let b = Client::join(&server.url("corrupt")).await;
        assert_eq!(b.text("text"), text_of(&good), "{}", db.label);
        assert_eq!(b.state_vector(), sv, "{}", db.label);
        server.stop().await;
        println!("{}: total {:?}", db.label, started.elapsed());
        db.finish().await;
    }
}
