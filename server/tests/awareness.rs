//! Awareness (presence): relay to everyone including the sender, states for joiners, removal
//! on disconnect and on expiry, query awareness, ownership of client ids, re-announcement
//! after a reconnect.
//!
//! Ordering is the barrier throughout: the room relays one connection's messages in order, so
//! once a later message from the same sender has arrived, an earlier one that was going to be
//! relayed would have arrived too.

mod common;

use std::time::Duration;

use common::{Client, TestServer, config};
use tokio::time::Instant;

const FOREIGN: &str = "tandem_awareness_foreign_total";
const EXPIRED: &str = "tandem_awareness_expired_total";

fn state(name: &str) -> String {
    format!(r##"{{"user":{{"name":"{name}","color":"#30bced"}},"cursor":null}}"##)
}

/// Everything `c` was ever told about `id`, in order.
fn history(c: &Client, id: u64) -> Vec<(u32, Option<String>)> {
    c.awareness_log
        .iter()
        .filter(|(i, _, _)| *i == id)
        .map(|(_, clock, s)| (*clock, s.clone()))
        .collect()
}

fn entry(clock: u32, s: &str) -> Option<(u32, Option<String>)> {
    Some((clock, Some(s.to_string())))
}

#[tokio::test]
async fn updates_reach_others_and_the_sender() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-relay");
    let mut a = Client::join(&url).await;
    let mut b = Client::join(&url).await;
    let (s1, s2) = (state("a"), state("a, moved"));

    a.set_awareness(101, 1, &s1).await;
    b.pump_until(|c| c.awareness_state(101) == Some(&s1)).await;
    a.pump_until(|c| c.awareness_state(101) == Some(&s1)).await;

    a.set_awareness(101, 2, &s2).await;
    b.pump_until(|c| c.awareness.get(&101) == entry(2, &s2).as_ref())
        .await;
    a.pump_until(|c| c.awareness.get(&101) == entry(2, &s2).as_ref())
        .await;

    // Stale (older clock) and same-clock changes are not relayed; 102 is the barrier.
    a.set_awareness(101, 1, &state("stale")).await;
    a.set_awareness(101, 2, &state("same clock")).await;
    a.set_awareness(102, 1, &s1).await;
    b.pump_until(|c| c.awareness.contains_key(&102)).await;
    a.pump_until(|c| c.awareness.contains_key(&102)).await;
    for c in [&a, &b] {
        assert_eq!(
            history(c, 101),
            vec![(1, Some(s1.clone())), (2, Some(s2.clone()))],
            "only the two accepted states were relayed"
        );
    }

    // The owner removes its state with `null` at the same clock; everyone is told.
    a.send_raw(common::awareness_frame(&[(101, 2, "null")]))
        .await;
    b.pump_until(|c| c.awareness.get(&101) == Some(&(2, None)))
        .await;
    a.pump_until(|c| c.awareness.get(&101) == Some(&(2, None)))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_joiner_receives_the_existing_states() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-join");
    let mut a = Client::join(&url).await;
    let mut b = Client::join(&url).await;
    a.set_awareness(101, 3, &state("a")).await;
    a.set_awareness(102, 1, &state("a, second tab")).await;
    a.send_raw(common::awareness_frame(&[(102, 1, "null")]))
        .await;
    b.set_awareness(201, 7, &state("b")).await;
    a.pump_until(|c| c.awareness.get(&102) == Some(&(1, None)) && c.awareness.contains_key(&201))
        .await;
    b.pump_until(|c| c.awareness.get(&102) == Some(&(1, None)) && c.awareness.contains_key(&201))
        .await;

    // `join` returns once synced; the states come right after the server's SyncStep1.
    let c = Client::join(&url).await;
    let mut got: Vec<_> = c
        .awareness
        .iter()
        .map(|(id, (clock, s))| (*id, *clock, s.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(101, 3, Some(state("a"))), (201, 7, Some(state("b"))),],
        "live states only: the removed 102 is not sent to joiners"
    );
    server.stop().await;
}

#[tokio::test]
async fn closing_a_socket_removes_its_states_at_once() {
    // Expiry and the ping timeout are far away: only the disconnect can explain a removal.
    let server = TestServer::start(config()).await;
    let url = server.url("aw-leave");
    let mut observer = Client::join(&url).await;
    let mut a = Client::join(&url).await;
    let mut a2 = Client::join(&url).await;
    a.send_raw(common::awareness_frame(&[
        (101, 4, &state("a")),
        (102, 9, &state("a, other doc client")),
    ]))
    .await;
    a2.set_awareness(103, 1, &state("a2")).await;
    observer
        .pump_until(|c| {
            [101, 102, 103]
                .iter()
                .all(|id| c.awareness_state(*id).is_some())
        })
        .await;

    // A clean close.
    let t = Instant::now();
    a.close().await;
    observer
        .pump_until(|c| {
            c.awareness.get(&101) == Some(&(4, None)) && c.awareness.get(&102) == Some(&(9, None))
        })
        .await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "removal took {:?}",
        t.elapsed()
    );
    assert!(
        observer.awareness_state(103).is_some(),
        "other connections keep theirs"
    );

    // An abrupt one: the TCP connection just goes away, no close frame.
    let t = Instant::now();
    drop(a2);
    observer
        .pump_until(|c| c.awareness.get(&103) == Some(&(1, None)))
        .await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "removal took {:?}",
        t.elapsed()
    );

    // A late joiner sees nobody.
    let late = Client::join(&url).await;
    assert!(late.awareness.is_empty(), "{:?}", late.awareness);
    server.stop().await;
}

#[tokio::test]
async fn unrenewed_states_expire_renewed_ones_stay() {
    let timeout = Duration::from_secs(1);
    let mut cfg = config();
    cfg.awareness_timeout = timeout;
    let server = TestServer::start(cfg).await;
    let url = server.url("aw-expiry");
    let mut observer = Client::join(&url).await;
    let mut renewing = Client::join(&url).await;
    let mut silent = Client::join(&url).await;

    // The renewed state is set first, so it is the older one: if renewal did not count it
    // would expire no later than the silent one.
    let mut clock = 1;
    renewing.set_awareness(201, clock, &state("renewing")).await;
    observer
        .pump_until(|c| c.awareness.contains_key(&201))
        .await;
    silent.set_awareness(101, 1, &state("silent")).await;
    let set_at = Instant::now();
    observer
        .pump_until(|c| c.awareness.contains_key(&101))
        .await;

    // Renew like y-protocols does (same state, clock + 1) until the silent one is removed.
    let deadline = Instant::now() + common::WAIT;
    while observer.awareness.get(&101) != Some(&(1, None)) {
        assert!(Instant::now() < deadline, "the silent state never expired");
        clock += 1;
        renewing.set_awareness(201, clock, &state("renewing")).await;
        observer.pump_for(Duration::from_millis(200)).await;
    }
    let expired_after = set_at.elapsed();
    assert!(
        expired_after >= timeout,
        "expired after {expired_after:?}, before the {timeout:?} timeout"
    );
    assert!(
        history(&observer, 201).iter().all(|(_, s)| s.is_some()),
        "the renewed state was removed: {:?}",
        history(&observer, 201)
    );
    assert_eq!(
        history(&observer, 101),
        vec![(1, Some(state("silent"))), (1, None)]
    );
    server.wait_metric(EXPIRED, "", 1.0).await;

    // Expiry is not a disconnect: the silent client's socket is fine, and when it speaks
    // again at its old clock it is visible at once (relayed one clock higher).
    silent.set_awareness(101, 1, &state("silent")).await;
    observer
        .pump_until(|c| c.awareness.get(&101) == entry(2, &state("silent")).as_ref())
        .await;
    silent
        .pump_until(|c| c.awareness.get(&101) == entry(2, &state("silent")).as_ref())
        .await;
    assert!(silent.closed.is_none());
    server.stop().await;
}

#[tokio::test]
async fn query_awareness_is_answered_with_all_states() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-query");
    let mut a = Client::join(&url).await;
    let mut b = Client::join(&url).await;
    a.set_awareness(101, 2, &state("a")).await;
    b.set_awareness(201, 5, &state("b")).await;
    let mut c = Client::join(&url).await;
    c.pump_until(|c| c.awareness.len() == 2).await;

    let frames = c.awareness_frames;
    c.send_raw(vec![3]).await;
    c.pump_until(|c| c.awareness_frames > frames).await;
    let mut answer = c.last_awareness_frame.clone();
    answer.sort();
    assert_eq!(
        answer,
        vec![(101, 2, Some(state("a"))), (201, 5, Some(state("b")))]
    );
    // Only the asker is answered: a and b see nothing more than the two states.
    a.set_awareness(102, 1, &state("barrier")).await;
    b.pump_until(|c| c.awareness.contains_key(&102)).await;
    assert_eq!(b.awareness_frames, 2 + 1, "b got the query answer too");

    // In a room without states the answer is an empty update.
    let mut lonely = Client::join(&server.url("aw-query-empty")).await;
    lonely.send_raw(vec![3]).await;
    lonely.pump_until(|c| c.awareness_frames == 1).await;
    assert!(lonely.last_awareness_frame.is_empty());
    a.pump_until(|c| c.awareness.contains_key(&102)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_connection_cannot_change_or_remove_ids_another_owns() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-owner");
    let mut a = Client::join(&url).await;
    let mut b = Client::join(&url).await;
    let mut observer = Client::join(&url).await;
    let sa = state("a");
    a.set_awareness(101, 1, &sa).await;
    for c in [&mut a, &mut b, &mut observer] {
        c.pump_until(|c| c.awareness_state(101) == Some(&sa)).await;
    }

    b.set_awareness(101, 5, &state("impostor")).await;
    b.send_raw(common::awareness_frame(&[(101, 6, "null")]))
        .await;
    b.send_raw(common::awareness_frame(&[
        (101, 1000, &state("impostor")),
        (201, 1, &state("b")),
    ]))
    .await;
    // 201 is the barrier: when it arrives, anything b said about 101 would have too.
    for c in [&mut a, &mut b, &mut observer] {
        c.pump_until(|c| c.awareness.contains_key(&201)).await;
        assert_eq!(
            history(c, 101),
            vec![(1, Some(sa.clone()))],
            "a's state must not change for anyone"
        );
    }
    server.wait_metric(FOREIGN, "", 3.0).await;
    assert!(
        b.closed.is_none(),
        "refusing foreign ids is not a reason to close"
    );

    let fresh = Client::join(&url).await;
    assert_eq!(fresh.awareness.get(&101), entry(1, &sa).as_ref());
    assert_eq!(fresh.awareness.get(&201), entry(1, &state("b")).as_ref());

    // The owner itself still can.
    a.set_awareness(101, 2, &state("a, renamed")).await;
    observer
        .pump_until(|c| c.awareness.get(&101) == entry(2, &state("a, renamed")).as_ref())
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_reconnecting_client_is_visible_again_at_its_old_clock() {
    let server = TestServer::start(config()).await;
    let url = server.url("aw-reconnect");
    let mut observer = Client::join(&url).await;
    let sa = state("a");
    let mut a = Client::join(&url).await;
    a.set_awareness(101, 5, &sa).await;
    observer
        .pump_until(|c| c.awareness_state(101) == Some(&sa))
        .await;

    a.close().await;
    observer
        .pump_until(|c| c.awareness.get(&101) == Some(&(5, None)))
        .await;

    // The provider reconnects and re-sends its local state, whose clock has not moved. Peers
    // would ignore clock 5 (not newer than the removal), so the server relays it as 6.
    let mut again = Client::join(&url).await;
    again.set_awareness(101, 5, &sa).await;
    observer
        .pump_until(|c| c.awareness.get(&101) == entry(6, &sa).as_ref())
        .await;
    again
        .pump_until(|c| c.awareness.get(&101) == entry(6, &sa).as_ref())
        .await;
    let late = Client::join(&url).await;
    assert_eq!(late.awareness.get(&101), entry(6, &sa).as_ref());

    // The new connection owns the id now: the observer cannot remove it.
    observer
        .send_raw(common::awareness_frame(&[(101, 6, "null"), (301, 1, "{}")]))
        .await;
    observer
        .pump_until(|c| c.awareness.contains_key(&301))
        .await;
    assert_eq!(observer.awareness.get(&101), entry(6, &sa).as_ref());
    server.wait_metric(FOREIGN, "", 1.0).await;
    server.stop().await;
}
