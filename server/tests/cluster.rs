//! Several nodes sharing documents through Postgres and Redis (`--redis-url`): real nodes on
//! port 0 (in-process, or the real binary where a node must die with `kill -9`), real clients
//! spread across them, Redis cut through a TCP proxy or restarted.
//!
//! Needs `TANDEM_TEST_DATABASE_URL` (Postgres) and `TANDEM_TEST_REDIS_URL`; each test uses a
//! schema and a Redis channel prefix of its own, so they run in parallel. Without them the
//! tests say they are skipped and pass. The Redis restart test starts a private
//! `redis-server` and is skipped when there is none.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU32;

use futures::SinkExt;

use common::admin::*;
use common::bin::Bin;
use common::{Db, WAIT};

const REDIS_ENV: &str = "TANDEM_TEST_REDIS_URL";

/// The Redis to use, or `None` (after saying so) when the environment names none.
fn redis_url(test: &str) -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {test}: set {REDIS_ENV} (and TANDEM_TEST_DATABASE_URL) to run it");
            None
        }
    }
}

/// A channel prefix no other test uses.
fn prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "tandem-test-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos()
    )
}

use std::sync::atomic::Ordering;

/// One node's configuration: token auth with the admin API, the shared log, the cluster.
fn node_config(db: &Db, redis: &str, prefix: &str) -> Config {
    let mut c = admin_config(db);
    c.redis_url = Some(redis.to_string());
    c.redis_prefix = prefix.to_string();
    c
}

/// `n` nodes of one cluster, with the Postgres schema they share; `None` when Postgres or
/// Redis is not configured.
async fn cluster(test: &str, n: usize) -> Option<(Db, Vec<TestServer>)> {
    let redis = redis_url(test)?;
    let db = Db::postgres(test).await?;
    let nodes = start_nodes(&db, &redis, n).await;
    Some((db, nodes))
}

/// `n` nodes of a new cluster on `db` and `redis`, once each reports itself healthy.
async fn start_nodes(db: &Db, redis: &str, n: usize) -> Vec<TestServer> {
    let prefix = prefix();
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(TestServer::start(node_config(db, redis, &prefix)).await);
    }
    for node in &nodes {
        wait_health(node, "ok").await;
    }
    nodes
}

async fn health(node: &TestServer) -> Value {
    let (_, body) = node.http_get("/healthz").await;
    serde_json::from_str(&body).expect("healthz JSON")
}

async fn wait_health(node: &TestServer, status: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let last = health(node).await;
        if last["status"] == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never said {status}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_all(db: Db, nodes: Vec<TestServer>) {
    for node in nodes {
        node.stop().await;
    }
    db.finish().await;
}

/// The log rows of `name` as the database holds them: their sequence numbers.
async fn log_seqs(db: &Db, name: &str) -> Vec<i64> {
    let store = db.store().await;
    let id = store
        .find_doc_id(name)
        .await
        .expect("find document")
        .expect("document exists");
    store
        .log_range(id, 0, i64::MAX)
        .await
        .expect("log")
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test]
async fn clustering_refuses_to_start_without_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.database_url = Some(format!("sqlite://{}/t.db", dir.path().display()));
    config.redis_url = Some("redis://127.0.0.1:6379".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = tandem::serve(listener, config, std::future::pending())
        .await
        .expect_err("SQLite with --redis-url is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("--redis-url") && msg.contains("postgres"),
        "{msg}"
    );
}

#[tokio::test]
async fn clients_on_three_nodes_converge_on_one_log() {
    let Some((db, nodes)) = cluster("cluster_converge", 3).await else {
        return;
    };
    let name = "plan";
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        clients.push(join(node, name, &format!("user{i}")).await);
    }
    // Interleaved writes from all three nodes, each waiting for its own durable echo.
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            write(c, &format!("[{i}.{round}]")).await;
        }
    }
    let complete = |c: &Client| {
        let t = c.text(TEXT);
        (0..3).all(|i| (0..5).all(|round| t.contains(&format!("[{i}.{round}]"))))
    };
    for c in &mut clients {
        c.pump_until(complete).await;
    }
    let want = clients[0].text(TEXT);
    for c in &clients {
        assert_eq!(c.text(TEXT), want);
    }
    // One log, numbered 1..=15 with no gap or duplicate, although three nodes appended.
    assert_eq!(log_seqs(&db, name).await, (1..=15).collect::<Vec<_>>());
    // A client that joins a fourth way (a node where the document was open all along)
    // gets the same content.
    let late = join(&nodes[1], name, "late").await;
    assert_eq!(late.text(TEXT), want);
    stop_all(db, nodes).await;
}

#[tokio::test]
async fn a_document_opened_later_on_another_node_misses_nothing() {
    let Some((db, nodes)) = cluster("cluster_late_open", 2).await else {
        return;
    };
    let mut a = join(&nodes[0], "late-open", "ada").await;
    for i in 0..20 {
        write(&mut a, &format!("<{i}>")).await;
    }
    // Node 1 opens the document only now, and keeps up with writes made meanwhile.
    let mut b = join(&nodes[1], "late-open", "bob").await;
    for i in 20..30 {
        write(&mut a, &format!("<{i}>")).await;
    }
    let want = a.text(TEXT);
    converge(&mut b, &want).await;
    write(&mut b, "<b>").await;
    converge(&mut a, &format!("{want}<b>")).await;
    stop_all(db, nodes).await;
}

#[tokio::test]
async fn awareness_crosses_nodes_and_goes_with_its_client_or_node() {
    let Some((db, mut nodes)) = cluster("cluster_awareness", 3).await else {
        return;
    };
    let mut a = join(&nodes[0], "aw", "ada").await;
    let mut b = join(&nodes[1], "aw", "bob").await;
    let mut c = join(&nodes[2], "aw", "cy").await;
    a.set_awareness(101, 1, r#"{"user":"ada"}"#).await;
    c.set_awareness(303, 1, r#"{"user":"cy"}"#).await;
    b.pump_until(|b| b.awareness_state(101).is_some() && b.awareness_state(303).is_some())
        .await;
    // A client that closes: removed on the other nodes at once.
    a.close().await;
    b.pump_until(|b| b.awareness_state(101).is_none()).await;
    // A node that stops: its clients' states go with it.
    let node2 = nodes.remove(2);
    node2.stop().await;
    b.pump_until(|b| b.awareness_state(303).is_none()).await;
    drop(c);
    stop_all(db, nodes).await;
}

#[tokio::test]
async fn admin_actions_and_revocations_reach_every_node() {
    let Some((db, nodes)) = cluster("cluster_admin", 3).await else {
        return;
    };
    // Restore on node 0: a client on node 1 sees the old content come back.
    let mut a = join(&nodes[0], "adm", "ada").await;
    let mut b = join(&nodes[1], "adm", "bob").await;
    write(&mut a, "first").await;
    converge(&mut b, "first").await;
    write(&mut b, " second").await;
    converge(&mut a, "first second").await;
    let (status, body) = post(
        &nodes[0],
        &format!("{API}/documents/adm/restore"),
        &json!({"seq": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["seq"], 3,
        "the restore is the log's third change: {body}"
    );
    converge(&mut b, "first").await;
    converge(&mut a, "first").await;

    // Disconnect on node 2 closes bob on node 1 (4000).
    let (status, body) = post(
        &nodes[2],
        &format!("{API}/documents/adm/disconnect"),
        &json!({"user": "bob"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(b.expect_close().await, Some(4000));

    // Revoking cy on node 0 closes cy's connection on node 2 (4403).
    let mut c = join(&nodes[2], "adm", "cy").await;
    let (status, body) = post(
        &nodes[0],
        &format!("{API}/revocations"),
        &json!({"user": "cy"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.expect_close().await, Some(4403));

    // Deleting on node 1 closes ada on node 0 (4410); joins anywhere are refused with 410.
    let mut d = join(&nodes[2], "adm", "dee").await;
    let (status, body) = delete(&nodes[1], &format!("{API}/documents/adm")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.expect_close().await, Some(4410));
    assert_eq!(d.expect_close().await, Some(4410));
    for node in &nodes {
        let r = http_request(
            node.addr,
            &upgrade_request(node.addr, &ws_path("adm", "ada")),
        )
        .await;
        assert_eq!(
            r.status, 410,
            "node {} still serves the deleted document",
            node.addr
        );
    }
    stop_all(db, nodes).await;
}

/// Nodes whose Redis is reached through a proxy that a test can cut.
async fn proxied_cluster(test: &str, n: usize) -> Option<(Db, Vec<TestServer>, testkit::Proxy)> {
    let redis = redis_url(test)?;
    let db = Db::postgres(test).await?;
    let proxy = testkit::Proxy::start(testkit::upstream_addr(&redis)).await;
    let nodes = start_nodes(&db, &format!("redis://{}", proxy.addr), n).await;
    Some((db, nodes, proxy))
}

#[tokio::test]
async fn a_redis_outage_degrades_but_loses_nothing_and_heals() {
    let Some((db, nodes, proxy)) = proxied_cluster("cluster_redis_outage", 2).await else {
        return;
    };
    let mut a = join(&nodes[0], "outage", "ada").await;
    let mut b = join(&nodes[1], "outage", "bob").await;
    write(&mut a, "before ").await;
    converge(&mut b, "before ").await;

    proxy.cut();
    for node in &nodes {
        wait_health(node, "degraded").await;
    }
    // Each node keeps serving its clients; the other node's writes arrive through the log.
    write(&mut a, "during-a ").await;
    write(&mut b, "during-b ").await;
    let both = |c: &Client| {
        let t = c.text(TEXT);
        t.contains("during-a") && t.contains("during-b")
    };
    a.pump_until(both).await;
    b.pump_until(both).await;

    proxy.restore();
    for node in &nodes {
        wait_health(node, "ok").await;
    }
    write(&mut a, "after").await;
    let want = a.text(TEXT);
    converge(&mut b, &want).await;
    // Awareness flows again once Redis is back.
    b.set_awareness(202, 1, r#"{"user":"bob"}"#).await;
    a.pump_until(|a| a.awareness_state(202).is_some()).await;
    stop_all(db, nodes).await;
}

/// A private `redis-server` on a free port, which a test can stop and start again.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<PrivateRedis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(PrivateRedis {
            port,
            child: Some(child),
        })
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn a_redis_restart_heals_without_restarting_nodes() {
    if redis_url("cluster_redis_restart").is_none() {
        return;
    }
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        eprintln!("SKIPPED cluster_redis_restart: no redis-server on this machine");
        return;
    };
    let Some(db) = Db::postgres("cluster_redis_restart").await else {
        return;
    };
    let nodes = start_nodes(&db, &redis.url(), 2).await;
    let mut a = join(&nodes[0], "restart", "ada").await;
    let mut b = join(&nodes[1], "restart", "bob").await;
    write(&mut a, "one ").await;
    converge(&mut b, "one ").await;

    redis.stop();
    wait_health(&nodes[0], "degraded").await;
    write(&mut b, "two ").await;
    converge(&mut a, "one two ").await;

    let mut redis = PrivateRedis::start(port).expect("redis-server starts again");
    for node in &nodes {
        wait_health(node, "ok").await;
    }
    write(&mut a, "three").await;
    converge(&mut b, "one two three").await;
    redis.stop();
    stop_all(db, nodes).await;
}

/// A writer that keeps its own document, so after its node dies it can reconnect elsewhere
/// and send everything it wrote (as y-websocket providers do).
struct Writer {
    id: usize,
    client: Client,
}

#[tokio::test]
async fn kill_9_of_a_node_mid_burst_loses_no_update() {
    let Some(redis) = redis_url("cluster_kill9") else {
        return;
    };
    let Some(db) = Db::postgres("cluster_kill9").await else {
        return;
    };
    let prefix = prefix();
    let args = [
        "--database-url",
        &db.url,
        "--redis-url",
        &redis,
        "--redis-prefix",
        &prefix,
        "--max-messages-per-sec",
        "100000",
        "--message-burst",
        "100000",
    ];
    let mut bins: Vec<Bin> = (0..3).map(|_| Bin::start(&args)).collect();
    let mut addrs = Vec::new();
    for b in &bins {
        addrs.push(b.addr().await);
    }
    let url = |node: usize| format!("ws://{}/burst", addrs[node]);

    let mut writers = Vec::new();
    for id in 0..10 {
        writers.push(Writer {
            id,
            client: Client::join(&url(id % 3)).await,
        });
    }
    // Someone on node 0 is visible on node 1; when node 0 dies, they must not stay a ghost.
    writers[0]
        .client
        .set_awareness(9000, 1, r#"{"user":"on node 0"}"#)
        .await;
    let mut watcher = Client::join(&url(1)).await;
    watcher
        .pump_until(|w| w.awareness_state(9000).is_some())
        .await;
    // Ten writers, 30 updates each, without waiting for echoes; node 0 dies a third of the
    // way through.
    let mut killed_at = None;
    for round in 0..30 {
        if round == 10 {
            bins[0].kill9();
            killed_at = Some(std::time::Instant::now());
        }
        for w in &mut writers {
            // A writer whose node died keeps editing offline, as an editor does.
            let piece = format!("<{}.{round}>", w.id);
            let len = u32::try_from(w.client.text(TEXT).len()).expect("len");
            let update = {
                let text = w.client.doc.get_or_insert_text(TEXT);
                let mut txn = w.client.doc.transact_mut();
                text.insert(&mut txn, len, &piece);
                txn.encode_update_v1()
            };
            if w.client.closed.is_some() {
                continue;
            }
            let sent = w
                .client
                .ws
                .send(tokio_tungstenite::tungstenite::Message::binary(
                    common::frame(0, Some(2), &update),
                ))
                .await;
            if sent.is_err() {
                w.client.closed = Some(None);
            }
        }
    }
    // Writers of the dead node reconnect to the next one and send all they have (their
    // provider's SyncStep2 after the server's SyncStep1; here: the whole state).
    for w in &mut writers {
        w.client.pump_for(Duration::from_millis(50)).await;
        if w.id % 3 == 0 || w.client.closed.is_some() {
            let state = w.client.state();
            let mut fresh = Client::join(&url(1)).await;
            fresh.send_raw(common::frame(0, Some(2), &state)).await;
            fresh
                .doc
                .transact_mut()
                .apply_update(Update::decode_v1(&state).expect("state"))
                .expect("apply");
            w.client = fresh;
        }
    }
    let mut reader = Client::join(&url(2)).await;
    let all_in = |c: &Client| {
        let t = c.text(TEXT);
        (0..10).all(|id| (0..30).all(|r| t.contains(&format!("<{id}.{r}>"))))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !all_in(&reader) && std::time::Instant::now() < deadline {
        reader.pump_for(Duration::from_millis(200)).await;
    }
    if !all_in(&reader) {
        let t = reader.text(TEXT);
        let missing: Vec<String> = (0..10)
            .flat_map(|id| (0..30).map(move |r| format!("<{id}.{r}>")))
            .filter(|p| !t.contains(p.as_str()))
            .collect();
        panic!(
            "missing {missing:?}\nnode 1:\n{}\nnode 2:\n{}",
            bins[1].output(),
            bins[2].output()
        );
    }
    // The dead node's client is removed on node 1 within the documented bound (10 s).
    watcher
        .pump_until(|w| w.awareness_state(9000).is_none())
        .await;
    let gone_after = killed_at.expect("killed").elapsed();
    assert!(
        gone_after <= Duration::from_secs(10),
        "ghost for {gone_after:?}"
    );
    // The log holds every change once numbered, with no gap.
    let seqs = log_seqs(&db, "burst").await;
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    for b in &mut bins[1..] {
        assert!(b.stop().await, "node exits cleanly:\n{}", b.output());
    }
    drop(bins);
    db.finish().await;
}
