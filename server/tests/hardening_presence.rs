//! Hardening of presence and client-id ownership (issue 10, items 3, 5 and 8): awareness
//! limits per connection, ghosts left by silent peers and by echoes, and client-id squatting.
//!
//! y-websocket clients send back every awareness change they receive, other users' included;
//! [`Echo`] does the same so the rules are tested against that traffic.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, RawWs, TestServer, WAIT, awareness_frame, client_frame, config, frame, op};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tandem::Config;
use tandem::config::AuthMode;
use tokio::time::Instant;
use yrs::{Doc, GetString, ReadTxn, Text, Transact};

const FOREIGN: &str = "tandem_awareness_foreign_total";
const CLOSED: &str = "tandem_connections_closed_total";
const SECRET: &str = "hardening-presence-secret-of-at-least-32-bytes";

fn state(name: &str) -> String {
    format!(r##"{{"user":{{"name":"{name}","color":"#30bced"}},"cursor":null}}"##)
}

fn label(reason: &str) -> String {
    format!("reason=\"{reason}\"")
}

/// Everything `c` was ever told about `id`, in order.
fn history(c: &Client, id: u64) -> Vec<(u32, Option<String>)> {
    c.awareness_log
        .iter()
        .filter(|(i, _, _)| *i == id)
        .map(|(_, clock, s)| (*clock, s.clone()))
        .collect()
}

/// Sends back what a y-websocket client would: every awareness entry received since the last
/// call, as one message (y-websocket echoes each change it applies; echoing every entry is a
/// superset of that).
struct Echo {
    seen: usize,
}

impl Echo {
    fn new() -> Echo {
        Echo { seen: 0 }
    }

    /// The entries received since the last call, without sending them.
    fn take(&mut self, c: &Client) -> Vec<(u64, u32, String)> {
        let new = c.awareness_log[self.seen..]
            .iter()
            .map(|(id, clock, s)| (*id, *clock, s.clone().unwrap_or_else(|| "null".into())))
            .collect();
        self.seen = c.awareness_log.len();
        new
    }

    /// Pumps `c` for `d` and echoes what arrived.
    async fn pump(&mut self, c: &mut Client, d: Duration) {
        c.pump_for(d).await;
        let entries = self.take(c);
        send_entries(c, &entries).await;
    }
}

async fn send_entries(c: &mut Client, entries: &[(u64, u32, String)]) {
    if entries.is_empty() {
        return;
    }
    let refs: Vec<(u64, u32, &str)> = entries
        .iter()
        .map(|(id, clock, s)| (*id, *clock, s.as_str()))
        .collect();
    c.send_raw(awareness_frame(&refs)).await;
}

/// Short timers: pings every 200 ms, silence closed after 1 s, awareness expiry after 2 s.
fn short_timers() -> Config {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_millis(200);
    cfg.ping_timeout = Duration::from_secs(1);
    cfg.awareness_timeout = Duration::from_secs(2);
    cfg
}

/// A raw client that syncs and announces `id`, then never reads or writes again.
async fn silent_peer(server: &TestServer, room: &str, id: u64, rcvbuf: Option<u32>) -> RawWs {
    let path = format!("/{room}");
    let mut raw = match rcvbuf {
        Some(rcvbuf) => RawWs::connect_with_rcvbuf(server.addr, &path, rcvbuf).await,
        None => RawWs::connect(server.addr, &path).await,
    };
    raw.write(&client_frame(op::BINARY, &frame(0, Some(0), &[0])))
        .await;
    raw.write(&client_frame(
        op::BINARY,
        &awareness_frame(&[(id, 1, &state("silent"))]),
    ))
    .await;
    raw
}

/// Pumps `observer` and `echoer` (echoing) in turn for `d`; panics unless `id` was removed
/// for `observer` when the watch began and no state for it arrived since.
async fn watch_no_ghost(
    observer: &mut Client,
    echoer: &mut Client,
    echo: &mut Echo,
    id: u64,
    d: Duration,
) {
    let start = history(observer, id);
    assert!(
        start.last().is_some_and(|(_, s)| s.is_none()),
        "{id} is not removed: {start:?}"
    );
    let until = Instant::now() + d;
    while Instant::now() < until {
        echo.pump(echoer, Duration::from_millis(50)).await;
        observer.pump_for(Duration::from_millis(50)).await;
    }
    let h = history(observer, id);
    assert!(
        h[start.len()..].iter().all(|(_, s)| s.is_none()),
        "{id} came back after its removal: {h:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 8: ghosts

/// A peer that announces itself and goes silent (TCP open, never reads, never pongs), in a
/// room with a y-websocket-like client echoing everything: the observer sees the removal at
/// the ping timeout, and nothing brings the state back for several expiry periods.
#[tokio::test]
async fn a_silent_peer_is_removed_for_everyone_and_stays_removed() {
    let server = TestServer::start(short_timers()).await;
    let room = "ghost-silent";
    let mut observer = Client::join(&server.url(room)).await;
    let mut echoer = Client::join(&server.url(room)).await;
    let mut echo = Echo::new();
    echoer.set_awareness(200, 1, &state("echoer")).await;
    let silent = silent_peer(&server, room, 777, None).await;
    observer
        .pump_until(|c| c.awareness_state(777).is_some())
        .await;
    let t = Instant::now();
    while observer.awareness.get(&777) != Some(&(1, None)) {
        assert!(
            t.elapsed() < WAIT,
            "the silent peer's state was never removed"
        );
        echo.pump(&mut echoer, Duration::from_millis(50)).await;
        observer.pump_for(Duration::from_millis(50)).await;
    }
    server
        .wait_metric(CLOSED, &label("ping_timeout"), 1.0)
        .await;
    watch_no_ghost(
        &mut observer,
        &mut echoer,
        &mut echo,
        777,
        Duration::from_secs(5),
    )
    .await;
    assert!(observer.closed.is_none() && echoer.closed.is_none());
    drop(silent);
    server.stop().await;
}

/// The slow path: the silent peer also stopped reading, in a busy room, so the server's
/// writes to it are stuck. Its state must still leave everyone's view (by the close, or at
/// the latest by expiry, which does not depend on the connection at all).
#[tokio::test]
async fn a_silent_peer_that_stopped_reading_in_a_busy_room_is_removed() {
    let server = TestServer::start(short_timers()).await;
    let room = "ghost-busy";
    let mut observer = Client::join(&server.url(room)).await;
    let mut writer = Client::join(&server.url(room)).await;
    let silent = silent_peer(&server, room, 778, Some(4096)).await;
    observer
        .pump_until(|c| c.awareness_state(778).is_some())
        .await;
    let chunk = "x".repeat(16 * 1024);
    let t = Instant::now();
    let mut sent = 0u32;
    while observer.awareness.get(&778) != Some(&(1, None)) {
        assert!(
            t.elapsed() < WAIT,
            "the state of a peer that stopped reading was never removed"
        );
        writer.insert("text", 0, &chunk).await;
        sent += 1;
        writer.pump_for(Duration::from_millis(20)).await;
        observer.pump_for(Duration::from_millis(20)).await;
    }
    assert!(sent > 0);
    // Nobody else lost anything.
    writer
        .pump_until(|c| c.updates_received as u32 == sent)
        .await;
    observer
        .pump_until(|c| c.text("text").len() == chunk.len() * sent as usize)
        .await;
    drop(silent);
    server.stop().await;
}

/// Item 8 (b): an echo of a departed user's last state, arriving just after the removal,
/// does not bring the user back; the user reconnecting still does, one clock higher.
#[tokio::test]
async fn a_delayed_echo_of_a_departed_user_does_not_bring_it_back() {
    let server = TestServer::start(config()).await;
    let url = server.url("ghost-echo");
    let mut observer = Client::join(&url).await;
    let mut echoer = Client::join(&url).await;
    let mut echo = Echo::new();
    let mut b = Client::join(&url).await;
    let sb = state("b");
    b.set_awareness(501, 5, &sb).await;
    echoer
        .pump_until(|c| c.awareness_state(501).is_some())
        .await;
    observer
        .pump_until(|c| c.awareness_state(501).is_some())
        .await;
    // The echo is held back (a proxy, a Redis hop) until b has gone.
    let held = echo.take(&echoer);
    assert!(held.iter().any(|(id, _, _)| *id == 501));
    let foreign_before = server.metric(FOREIGN, "").await;

    b.close().await;
    observer
        .pump_until(|c| c.awareness.get(&501) == Some(&(5, None)))
        .await;
    send_entries(&mut echoer, &held).await;
    // The echoer's own state is the barrier: the room handles its messages in order.
    echoer.set_awareness(601, 1, &state("echoer")).await;
    observer
        .pump_until(|c| c.awareness.contains_key(&601))
        .await;
    assert_eq!(
        history(&observer, 501),
        vec![(5, Some(sb.clone())), (5, None)],
        "b came back as a ghost"
    );
    assert!(server.metric(FOREIGN, "").await > foreign_before);
    assert!(echoer.closed.is_none(), "echoing is not a reason to close");

    // A late joiner does not see b either.
    let late = Client::join(&url).await;
    assert_eq!(late.awareness.get(&501), None);

    // b's provider reconnects and re-sends its state at the clock the server removed: it is
    // relayed one clock higher, and the echoes of that change are harmless.
    let mut again = Client::join(&url).await;
    again.set_awareness(501, 5, &sb).await;
    observer
        .pump_until(|c| c.awareness.get(&501) == Some(&(6, Some(sb.clone()))))
        .await;
    echo.pump(&mut echoer, Duration::from_millis(300)).await;
    again.close().await;
    observer
        .pump_until(|c| c.awareness.get(&501) == Some(&(6, None)))
        .await;
    watch_no_ghost(
        &mut observer,
        &mut echoer,
        &mut echo,
        501,
        Duration::from_millis(500),
    )
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Item 5: awareness limits per connection

/// One frame announcing 1,000,000 client ids: the sender is closed with 1008 after its first
/// 8, the others and joiners get at most those 8, and the server stays up.
#[tokio::test]
async fn a_million_awareness_ids_in_one_frame_close_the_sender_with_1008() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-million");
    let mut observer = Client::join(&url).await;
    let mut attacker = Client::join(&url).await;
    let entries: Vec<(u64, u32, &str)> = (1..=1_000_000).map(|id| (id, 1, "{}")).collect();
    let big = awareness_frame(&entries);
    assert!(big.len() < 16 << 20);
    attacker.send_raw(big).await;
    let code = attacker.expect_close().await;
    assert_eq!(code, Some(1008));
    let reason = attacker
        .closed
        .clone()
        .flatten()
        .map(|f| f.reason.to_string());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("awareness limit")),
        "{reason:?}"
    );
    server
        .wait_metric(CLOSED, &label("awareness_limit"), 1.0)
        .await;
    // Everything the attacker announced is removed again; joiners get nothing of it.
    observer
        .pump_until(|c| c.awareness.len() <= 8 && c.awareness.values().all(|(_, s)| s.is_none()))
        .await;
    let joiner = Client::join(&url).await;
    assert!(
        joiner.awareness.is_empty(),
        "{} states",
        joiner.awareness.len()
    );
    // The room still works for everyone else.
    observer
        .set_awareness(5_000_001, 1, &state("observer"))
        .await;
    observer
        .pump_until(|c| c.awareness_state(5_000_001).is_some())
        .await;
    server.stop().await;
}

/// Bytes: one state above the per-connection budget closes its sender with 1008.
#[tokio::test]
async fn an_oversized_awareness_state_closes_the_sender_with_1008() {
    let mut cfg = config();
    cfg.max_awareness_bytes_per_conn = 1024;
    let server = TestServer::start(cfg).await;
    let url = server.url("aw-bytes");
    let mut observer = Client::join(&url).await;
    let mut fat = Client::join(&url).await;
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(2000));
    fat.set_awareness(42, 1, &big).await;
    assert_eq!(fat.expect_close().await, Some(1008));
    server
        .wait_metric(CLOSED, &label("awareness_limit"), 1.0)
        .await;
    // A normal state from another connection is fine.
    observer.set_awareness(43, 1, &state("ok")).await;
    observer
        .pump_until(|c| c.awareness_state(43).is_some())
        .await;
    assert_eq!(observer.awareness_state(42), None);
    server.stop().await;
}

/// An honest y-websocket client in a big room echoes thousands of other users' entries in
/// one message: they are ignored and counted, and the client is not closed.
#[tokio::test]
async fn echoing_thousands_of_foreign_entries_is_not_refused() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-big-room");
    let mut owners = Vec::new();
    for n in 0..125u64 {
        let mut c = Client::join(&url).await;
        let entries: Vec<(u64, u32, String)> = (0..8)
            .map(|i| (10_000 + n * 8 + i, 1, state("owner")))
            .collect();
        send_entries(&mut c, &entries).await;
        owners.push(c);
    }
    let mut honest = Client::join(&url).await;
    honest
        .pump_until(|c| c.awareness.values().filter(|(_, s)| s.is_some()).count() == 1000)
        .await;
    let mut echoed: Vec<(u64, u32, String)> = honest
        .awareness
        .iter()
        .map(|(id, (clock, s))| (*id, *clock, s.clone().unwrap_or_default()))
        .collect();
    echoed.push((1, 1, state("honest")));
    let before = server.metric(FOREIGN, "").await;
    send_entries(&mut honest, &echoed).await;
    honest.pump_until(|c| c.awareness_state(1).is_some()).await;
    server.wait_metric(FOREIGN, "", before + 1000.0).await;
    assert!(honest.closed.is_none());
    assert_eq!(server.metric(CLOSED, &label("awareness_limit")).await, 0.0);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Item 3: client-id squatting

/// A Yjs v1 update holding one GC range of `len` clocks for `client` from `clock`.
fn gc_update(client: u64, clock: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [1, 1, client, clock] {
        common::put_var(&mut out, v);
    }
    out.push(0); // GC
    common::put_var(&mut out, len);
    out.push(0); // empty delete set
    out
}

fn client_id(c: &Client) -> u64 {
    c.doc.client_id().get()
}

/// Announces `c`'s document client id in awareness, as a y-websocket provider does on connect.
async fn announce(c: &mut Client, name: &str) {
    let id = client_id(c);
    c.set_awareness(id, 1, &state(name)).await;
    c.pump_until(|c| c.awareness_state(id).is_some()).await;
}

/// Inserts at the end of text "t" and waits until the server relays it back (durable).
async fn type_and_wait(c: &mut Client, s: &str) {
    let before = c.updates_received;
    let len = c.text("t").len() as u32;
    c.insert("t", len, s).await;
    c.pump_until(|c| c.updates_received > before).await;
}

/// Stored content of root text "t", through the admin export... or simply a fresh client.
async fn content(url: &str) -> String {
    Client::join(url).await.text("t")
}

#[tokio::test]
async fn writing_under_a_live_users_client_id_closes_the_writer_with_1008() {
    let server = TestServer::start(config()).await;
    let url = server.url("squat-live");
    let mut victim = Client::join(&url).await;
    announce(&mut victim, "victim").await;
    type_and_wait(&mut victim, "hello").await;
    let mut third = Client::join(&url).await;
    let mut attacker = Client::join(&url).await;

    let v = client_id(&victim);
    let clock = u64::from(victim.state_vector().get(&victim.doc.client_id()));
    attacker
        .send_raw(frame(0, Some(2), &gc_update(v, clock, 1_000_000)))
        .await;
    assert_eq!(attacker.expect_close().await, Some(1008));
    server
        .wait_metric(CLOSED, &label("foreign_client_id"), 1.0)
        .await;

    // The victim's next edits are kept, reach others and are stored.
    type_and_wait(&mut victim, " world").await;
    third.pump_until(|c| c.text("t") == "hello world").await;
    assert_eq!(content(&url).await, "hello world");

    // Deleting others' content is normal editing.
    let mut editor = Client::join(&url).await;
    let before = editor.updates_received;
    let text = editor.doc.get_or_insert_text("t");
    editor
        .edit(move |_, txn| text.remove_range(txn, 0, 6))
        .await;
    editor.pump_until(|c| c.updates_received > before).await;
    third.pump_until(|c| c.text("t") == "world").await;
    assert!(editor.closed.is_none());
    server.stop().await;
}

/// The same squat, through an update whose blocks would wait in the pending set (they start
/// beyond the victim's clock): refused too.
#[tokio::test]
async fn a_pending_squat_beyond_the_victims_clock_is_refused() {
    let server = TestServer::start(config()).await;
    let url = server.url("squat-pending");
    let mut victim = Client::join(&url).await;
    announce(&mut victim, "victim").await;
    type_and_wait(&mut victim, "a").await;
    let mut attacker = Client::join(&url).await;
    let v = client_id(&victim);
    attacker
        .send_raw(frame(0, Some(2), &gc_update(v, 10, 1_000_000)))
        .await;
    assert_eq!(attacker.expect_close().await, Some(1008));
    for s in ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"] {
        type_and_wait(&mut victim, s).await;
    }
    assert_eq!(content(&url).await, "abcdefghijklm");
    server.stop().await;
}

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims =
        json!({"sub": sub, "docs": ["*"], "access": "rw", "exp": now + 3600, "iat": now - 1});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

fn token_config() -> Config {
    let mut cfg = config();
    cfg.auth = AuthMode::Token;
    cfg.jwt_secret = Some(SECRET.into());
    cfg
}

/// Joins `url` as `sub`, with `doc` (keeping its client id and content) when given.
async fn join_as(url: &str, sub: &str, doc: Option<Doc>) -> Client {
    let mut c = Client::connect(&format!("{url}?token={}", token(sub))).await;
    if let Some(doc) = doc {
        c.doc = doc;
    }
    c.sync().await;
    c
}

/// The brief-reconnect variant: the victim's socket drops, the attacker writes under its id
/// during the gap and is refused; the victim reconnects with the same client id, resends what
/// it typed offline and keeps typing: nothing is lost.
#[tokio::test]
async fn squatting_a_briefly_disconnected_users_id_is_refused_and_the_user_takes_it_back() {
    let server = TestServer::start(token_config()).await;
    let url = server.url("squat-reconnect");
    let mut victim = join_as(&url, "victim", None).await;
    announce(&mut victim, "victim").await;
    type_and_wait(&mut victim, "one").await;
    let mut third = join_as(&url, "third", None).await;
    let v = client_id(&victim);

    victim.close().await;
    let doc = std::mem::replace(&mut victim.doc, Doc::new());
    // Typed while offline: not sent yet.
    {
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 3, " two");
    }
    let clock = u64::from(doc.transact().state_vector().get(&doc.client_id()));
    let mut attacker = join_as(&url, "attacker", None).await;
    attacker
        .send_raw(frame(0, Some(2), &gc_update(v, clock - 4, 1_000_000)))
        .await;
    assert_eq!(attacker.expect_close().await, Some(1008));
    server
        .wait_metric(CLOSED, &label("foreign_client_id"), 1.0)
        .await;

    // The victim reconnects with the same document: its sync resends the offline edit.
    let mut again = join_as(&url, "victim", Some(doc)).await;
    again.set_awareness(v, 1, &state("victim")).await;
    third.pump_until(|c| c.text("t") == "one two").await;
    type_and_wait(&mut again, " three").await;
    third.pump_until(|c| c.text("t") == "one two three").await;
    assert!(again.closed.is_none());
    let stored = join_as(&url, "third", None).await;
    assert_eq!(stored.text("t"), "one two three");
    server.stop().await;
}

/// Relaying: structs of a client that is not connected here are accepted from anyone (an
/// offline user's edits passed on by a peer); structs of a client that is connected here are
/// refused from a relayer, who reconnects and loses nothing because the owner sends them.
#[tokio::test]
async fn relayed_structs_are_accepted_unless_their_owner_is_here() {
    let server = TestServer::start(config()).await;
    let url = server.url("squat-relay");
    let mut third = Client::join(&url).await;

    // Absent owner: its edit arrives through a relayer.
    let absent = Doc::new();
    let offline_edit = {
        let text = absent.get_or_insert_text("t");
        let mut txn = absent.transact_mut();
        text.insert(&mut txn, 0, "from afar;");
        txn.encode_update_v1()
    };
    let mut relayer = Client::join(&url).await;
    relayer.send_raw(frame(0, Some(2), &offline_edit)).await;
    third.pump_until(|c| c.text("t") == "from afar;").await;
    assert!(relayer.closed.is_none());

    // Live owner: it typed, and a relayer got the edit first (say over WebRTC).
    let mut owner = Client::join(&url).await;
    announce(&mut owner, "owner").await;
    let edit = {
        let text = owner.doc.get_or_insert_text("t");
        let mut txn = owner.doc.transact_mut();
        text.insert(&mut txn, 10, " here");
        txn.encode_update_v1()
    };
    relayer.send_raw(frame(0, Some(2), &edit)).await;
    assert_eq!(relayer.expect_close().await, Some(1008));
    owner.send_raw(frame(0, Some(2), &edit)).await;
    third.pump_until(|c| c.text("t") == "from afar; here").await;
    // The relayer reconnects with its document and resyncs: nothing lost, not refused.
    let doc = std::mem::replace(&mut relayer.doc, Doc::new());
    let mut back = Client::connect(&url).await;
    back.doc = doc;
    back.sync().await;
    assert_eq!(
        back.doc
            .get_or_insert_text("t")
            .get_string(&back.doc.transact()),
        "from afar; here"
    );
    assert!(back.closed.is_none());
    server.stop().await;
}
