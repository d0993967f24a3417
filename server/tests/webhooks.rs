//! Signed webhooks with a real receiver (an HTTP server in the test): events with valid
//! signatures (created, coalesced changes with their range and authors, restored, deleted),
//! retries under the same idempotency key, and a receiver that is away while the server
//! restarts and then comes back: nothing lost.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use common::admin::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const HOOK_SECRET: &str = "webhook-secret-for-tests-8d2f";

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Hook {
    id: String,
    event: String,
    attempt: u32,
    signature: String,
    raw: String,
    body: Value,
}

/// A webhook receiver: records every delivery and answers 500 to the next `fail` of them.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Hook>>>,
    fail: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let fail = Arc::new(AtomicUsize::new(0));
        let (h_got, h_fail) = (got.clone(), fail.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, raw: String| {
                let (got, fail) = (h_got.clone(), h_fail.clone());
                async move { receive(&got, &fail, &headers, raw) }
            }),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("receiver");
        });
        Receiver {
            addr,
            got,
            fail,
            stop,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `n` deliveries answered 2xx arrived (every delivery received after the
    /// failures is one) and returns them all, failed ones included.
    async fn wait_for(&self, n: usize) -> Vec<Hook> {
        let got = self.got.clone();
        eventually(&format!("{n} deliveries"), || {
            let got = got.clone();
            async move { got.lock().expect("lock").len() >= n }
        })
        .await;
        self.hooks()
    }

    /// Stops listening and closes every connection.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn receive(
    got: &Mutex<Vec<Hook>>,
    fail: &AtomicUsize,
    headers: &HeaderMap,
    raw: String,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let hook = Hook {
        id: header("tandem-webhook-id"),
        event: header("tandem-event"),
        attempt: header("tandem-attempt").parse().unwrap_or(0),
        signature: header("tandem-signature"),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
    };
    got.lock().expect("lock").push(hook);
    let failing = fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Checks `Tandem-Signature: t=<unix>,v1=<hex>` the way the README tells receivers to.
fn assert_signed(hook: &Hook) {
    let (t, v1) = hook
        .signature
        .split_once(",v1=")
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1)))
        .unwrap_or_else(|| panic!("signature header: {hook:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.{}", hook.raw).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature of {hook:?}");
    let t: u64 = t.parse().expect("t");
    assert!(now().abs_diff(t) < 60, "timestamp {t} is not now");
    assert_eq!(hook.body["id"], hook.id.as_str(), "{hook:?}");
    assert_eq!(hook.body["type"], hook.event.as_str(), "{hook:?}");
}

fn hook_config(db: &Db, urls: &[String]) -> Config {
    let mut c = admin_config(db);
    c.webhook_urls = urls.to_vec();
    c.webhook_secret = Some(HOOK_SECRET.into());
    c.webhook_coalesce = Duration::from_secs(1);
    c.webhook_retry_min = Duration::from_millis(200);
    c.webhook_retry_max = Duration::from_secs(1);
    c.webhook_timeout = Duration::from_secs(2);
    c
}

/// The deliveries of one event type, in arrival order.
fn of(hooks: &[Hook], event: &str) -> Vec<Hook> {
    hooks.iter().filter(|h| h.event == event).cloned().collect()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_are_signed_coalesced_and_complete() {
    on_every_db!("events_are_signed_coalesced_and_complete", events);
}

async fn events(db: &Db) {
    let receiver = Receiver::start().await;
    let server = TestServer::start(hook_config(db, &[receiver.url()])).await;
    let name = "hooks/plan";
    let mut alice = join(&server, name, "alice").await;
    let mut bob = join(&server, name, "bob").await;
    // Three changes inside one window: one created, one changed [1, 3].
    write(&mut alice, "The").await;
    write(&mut alice, " plan").await;
    write(&mut alice, ".").await;
    let hooks = receiver.wait_for(2).await;
    let created = of(&hooks, "document.created");
    assert_eq!(created.len(), 1, "{hooks:?}");
    assert_eq!(created[0].body["document"], name);
    assert_eq!(created[0].body["data"], json!({"seq": 1}));
    let changed = of(&hooks, "document.changed");
    assert_eq!(changed.len(), 1, "{hooks:?}");
    assert_eq!(
        changed[0].body["data"],
        json!({"first_seq": 1, "last_seq": 3, "changes": 3, "authors": ["alice"]})
    );

    // Two authors in the next window.
    bob.pump_until(|c| c.text(TEXT) == "The plan.").await;
    write(&mut bob, " Yes").await;
    write(&mut alice, "!").await;
    let hooks = receiver.wait_for(3).await;
    assert_eq!(
        hooks[2].body["data"],
        json!({"first_seq": 4, "last_seq": 5, "changes": 2, "authors": ["alice", "bob"]}),
        "{hooks:?}"
    );

    // A restore: its own event, and its change in a changed event by "admin".
    let (status, r) = post(&server, &doc_path(name, "/restore"), &json!({"seq": 3})).await;
    assert_eq!(status, 200, "{r}");
    let hooks = receiver.wait_for(5).await;
    let restored = of(&hooks, "document.restored");
    assert_eq!(restored.len(), 1, "{hooks:?}");
    assert_eq!(
        restored[0].body["data"],
        json!({"seq": 6, "restored_to": 3, "author": "admin"})
    );
    let changed = of(&hooks, "document.changed");
    assert_eq!(
        changed[2].body["data"],
        json!({"first_seq": 6, "last_seq": 6, "changes": 1, "authors": ["admin"]})
    );

    // A change just before the delete is announced before the deletion.
    write(&mut bob, "?").await;
    let (status, r) = delete(&server, &doc_path(name, "")).await;
    assert_eq!(status, 200, "{r}");
    let hooks = receiver.wait_for(7).await;
    let changed = of(&hooks, "document.changed");
    assert_eq!(changed.len(), 4, "{hooks:?}");
    assert_eq!(changed[3].body["data"]["first_seq"], 7, "{hooks:?}");
    let deleted = of(&hooks, "document.deleted");
    assert_eq!(deleted.len(), 1, "{hooks:?}");
    assert_eq!(deleted[0].body["document"], name);

    // Every delivery signed, first attempts only, ids unique.
    let ids: BTreeSet<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids.len(), hooks.len(), "{hooks:?}");
    for hook in &hooks {
        assert_signed(hook);
        assert_eq!(hook.attempt, 1, "{hook:?}");
    }
    server
        .wait_metric("tandem_webhook_delivered_total", "", 7.0)
        .await;
    server.wait_metric("tandem_webhook_pending", "", 0.0).await;
    assert_eq!(server.metric("tandem_webhook_failed_total", "").await, 0.0);
    drop((alice, bob));
    server.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id() {
    on_every_db!("failed_deliveries_are_retried_with_the_same_id", retried);
}

async fn retried(db: &Db) {
    let receiver = Receiver::start().await;
    // Two receivers: the failing one must not hold up the other.
    let other = Receiver::start().await;
    receiver.fail.store(3, Ordering::SeqCst);
    let server = TestServer::start(hook_config(db, &[receiver.url(), other.url()])).await;
    let mut alice = join(&server, "hooks/retry", "alice").await;
    write(&mut alice, "x").await;
    let fine = other.wait_for(2).await;
    assert!(fine.iter().all(|h| h.attempt == 1), "{fine:?}");
    // created and changed: 3 failed attempts, then both answered 2xx.
    let hooks = receiver.wait_for(5).await;
    for event in ["document.created", "document.changed"] {
        let tries = of(&hooks, event);
        assert!(tries.len() >= 2, "{event}: {hooks:?}");
        assert!(
            tries
                .iter()
                .all(|h| h.id == tries[0].id && h.raw == tries[0].raw),
            "one id and body for every attempt: {tries:?}"
        );
        let attempts: Vec<u32> = tries.iter().map(|h| h.attempt).collect();
        assert_eq!(attempts, (1..=tries.len() as u32).collect::<Vec<_>>());
        // The other receiver got the same event under the same id.
        assert!(fine.iter().any(|h| h.id == tries[0].id), "{fine:?}");
        tries.iter().for_each(assert_signed);
    }
    server
        .wait_metric("tandem_webhook_delivered_total", "", 4.0)
        .await;
    server.wait_metric("tandem_webhook_pending", "", 0.0).await;
    assert_eq!(server.metric("tandem_webhook_failed_total", "").await, 3.0);
    drop(alice);
    server.stop().await;
    receiver.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn receiver_away_across_a_restart_loses_nothing() {
    on_every_db!("receiver_away_across_a_restart_loses_nothing", away);
}

async fn away(db: &Db) {
    // A port nobody listens on (yet).
    let port = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = port.local_addr().expect("addr");
    drop(port);
    let url = format!("http://{addr}/hook");
    let mut config = hook_config(db, std::slice::from_ref(&url));
    config.webhook_coalesce = Duration::from_secs(30);
    let name = "hooks/away";
    {
        // The window is 30 s: these changes are still unannounced when the server stops.
        let server = TestServer::start(config.clone()).await;
        let mut alice = join(&server, name, "alice").await;
        write(&mut alice, "a").await;
        write(&mut alice, "b").await;
        drop(alice);
        server.stop().await;
    }
    // Restarted (the changes are announced from the log at start), receiver still away.
    config.webhook_coalesce = Duration::from_millis(300);
    let server = TestServer::start(config.clone()).await;
    server.wait_metric("tandem_webhook_pending", "", 2.0).await;
    eventually("attempts fail", || async {
        server.metric("tandem_webhook_failed_total", "").await >= 2.0
    })
    .await;
    let mut bob = join(&server, name, "bob").await;
    write(&mut bob, "c").await;
    server.wait_metric("tandem_webhook_pending", "", 3.0).await;
    drop(bob);
    server.stop().await;

    // Restarted again with everything pending, and the receiver back.
    let server = TestServer::start(config).await;
    let receiver = Receiver::start_on(addr).await;
    let hooks = receiver.wait_for(3).await;
    server.wait_metric("tandem_webhook_pending", "", 0.0).await;
    let created = of(&hooks, "document.created");
    assert_eq!(created.len(), 1, "{hooks:?}");
    assert_eq!(created[0].body["data"], json!({"seq": 1}));
    let mut ranges: Vec<Value> = of(&hooks, "document.changed")
        .iter()
        .map(|h| h.body["data"].clone())
        .collect();
    ranges.sort_by_key(|d| d["first_seq"].as_i64());
    assert_eq!(
        ranges,
        [
            json!({"first_seq": 1, "last_seq": 2, "changes": 2, "authors": ["alice"]}),
            json!({"first_seq": 3, "last_seq": 3, "changes": 1, "authors": ["bob"]}),
        ],
        "{hooks:?}"
    );
    for hook in &hooks {
        assert_signed(hook);
        if hook.body["data"]["first_seq"] != 3 {
            assert!(hook.attempt > 1, "retried after failures: {hook:?}");
        }
    }
    server.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn bad_webhook_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = || {
        let mut c = config();
        c.database_url = Some(format!("sqlite://{}/t.db", dir.path().display()));
        c.webhook_urls = vec!["http://hooks.example.com/tandem".into()];
        c.webhook_secret = Some(HOOK_SECRET.into());
        c
    };
    let refused = |c: Config| async move {
        match tandem::open(c, tandem::Drain::default()).await {
            Err(tandem::ServerError::Config(msg)) => msg,
            Err(e) => panic!("not a configuration error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    };
    let mut c = base();
    c.webhook_secret = None;
    assert!(refused(c).await.contains("needs --webhook-secret"));
    let mut c = base();
    c.webhook_secret = Some("short".into());
    assert!(refused(c).await.contains("at least 16 bytes"));
    for bad in [
        "ftp://example.com/",
        "example.com/hook",
        "https://u:p@example.com/",
    ] {
        let mut c = base();
        c.webhook_urls = vec![bad.into()];
        let msg = refused(c).await;
        assert!(msg.contains("invalid webhook URL"), "{bad}: {msg}");
    }
    let mut c = base();
    c.database_url = Some("memory".into());
    assert!(refused(c).await.contains("durable storage"));
    // The command line refuses a bad URL before anything starts.
    let err = tandem::config::Cli::try_parse_from(["tandem", "--webhook-url", "ws://x/"])
        .expect_err("refused")
        .to_string();
    assert!(err.contains("only http and https"), "{err}");
    // And a good configuration starts.
    assert!(tandem::open(base(), tandem::Drain::default()).await.is_ok());
}

/// Delivery throughput: `DELIVERIES` events queued in the outbox at once, delivered to a local
/// receiver answering 204. Run in release:
/// `cargo test --release -p tandem-server --test webhooks -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn webhook_delivery_throughput() {
    on_every_db!("webhook_delivery_throughput", throughput);
}

const DELIVERIES: usize = 10_000;

async fn throughput(db: &Db) {
    let receiver = Receiver::start().await;
    let store = crdt_store::Store::open(&db.url, &crdt_store::StoreOptions::default())
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let due = SystemTime::now();
    let queued: Vec<crdt_store::NewDelivery> = (0..DELIVERIES)
        .map(|i| crdt_store::NewDelivery {
            event_id: format!("bench.{i}"),
            url: receiver.url(),
            event: "document.changed".into(),
            body: json!({"id": format!("bench.{i}"), "type": "document.changed",
                         "document": "bench/doc", "data": {"first_seq": i, "last_seq": i,
                         "changes": 1, "authors": ["ada"]}})
            .to_string(),
            due,
        })
        .collect();
    assert!(
        store
            .enqueue_webhooks(None, &queued)
            .await
            .expect("enqueue")
    );
    let started = std::time::Instant::now();
    let server = TestServer::start(hook_config(db, &[receiver.url()])).await;
    let got = receiver.got.clone();
    let done = testkit::eventually(Duration::from_secs(300), || {
        let got = got.clone();
        async move { got.lock().expect("lock").len() >= DELIVERIES }
    })
    .await;
    assert!(done, "all delivered");
    server.wait_metric("tandem_webhook_pending", "", 0.0).await;
    let elapsed = started.elapsed();
    println!(
        "webhook_delivery_throughput: {}: {DELIVERIES} deliveries in {elapsed:.2?} = {:.0}/s",
        db.label,
        DELIVERIES as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(receiver.hooks().len(), DELIVERIES, "each delivered once");
    server.stop().await;
    receiver.stop().await;
}
