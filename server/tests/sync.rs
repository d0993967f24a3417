//! Document sync with real WebSocket clients holding yrs documents.

mod common;

use common::{Client, TestServer, config, frame};
use yrs::types::ToJson;
use yrs::{Array, Map, ReadTxn, Transact};

#[tokio::test]
async fn concurrent_edits_to_text_map_and_array_converge() {
    let server = TestServer::start(config()).await;
    let url = server.url("shared");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::join(&url).await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.insert("text", 0, &format!("[{i}]")).await;
        // Root types are fetched before the transaction: yrs would deadlock otherwise.
        let map = c.doc.get_or_insert_map("map");
        let array = c.doc.get_or_insert_array("array");
        c.edit(|_, txn| {
            map.insert(txn, format!("k{i}"), i as i64);
            map.insert(txn, "same-key", i as i64);
            array.push_back(txn, format!("item{i}"));
        })
        .await;
    }
    // Each client has 3 × 2 updates relayed to it (including its own echoes).
    for c in clients.iter_mut() {
        c.pump_until(|c| c.updates_received == 6).await;
    }
    let first = &clients[0];
    let expect_text = first.text("text");
    let json = |c: &Client| {
        let map = c.doc.get_or_insert_map("map");
        let array = c.doc.get_or_insert_array("array");
        let txn = c.doc.transact();
        (map.to_json(&txn), array.to_json(&txn))
    };
    let expect = json(first);
    for c in &clients[1..] {
        assert_eq!(c.text("text"), expect_text);
        assert_eq!(json(c), expect);
        assert_eq!(c.state_vector(), first.state_vector());
    }
    assert_eq!(expect_text.len(), 9);
    server.stop().await;
}

#[tokio::test]
async fn late_joiner_gets_the_full_state() {
    let server = TestServer::start(config()).await;
    let url = server.url("late");
    let mut a = Client::join(&url).await;
    for i in 0..50 {
        a.insert("text", i, "x").await;
    }
    a.pump_until(|c| c.updates_received == 50).await;
    let b = Client::join(&url).await;
    assert_eq!(b.text("text"), "x".repeat(50));
    assert_eq!(b.state_vector(), a.state_vector());
    server.stop().await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = TestServer::start(config()).await;
    let mut a = Client::join(&server.url("room-a")).await;
    let mut b = Client::join(&server.url("room-b")).await;
    a.insert("text", 0, "only in a").await;
    b.insert("text", 0, "only in b").await;
    a.pump_until(|c| c.updates_received == 1).await;
    b.pump_until(|c| c.updates_received == 1).await;
    let late_a = Client::join(&server.url("room-a")).await;
    assert_eq!(late_a.text("text"), "only in a");
    server.stop().await;
}

#[tokio::test]
async fn room_names_follow_the_documented_mapping() {
    let server = TestServer::start(config()).await;
    // Percent-encoded and raw forms of the same name reach the same document (escaped slashes
    // excepted: see hardening_auth.rs); route-like names are rooms when upgraded.
    let cases = [
        ("with%20space", "with%20space"),
        ("%C3%BC-%E6%96%87", "%c3%bc-%e6%96%87"),
        ("a/b/c", "%61/%62/c"),
        ("metrics", "metrics"),
        ("api/v1/admin", "api/v1/admin"),
        ("healthz", "healthz"),
    ];
    for (i, (one, other)) in cases.iter().enumerate() {
        let mut a = Client::join(&server.url(one)).await;
        let marker = format!("case{i}");
        a.insert("text", 0, &marker).await;
        a.pump_until(|c| c.updates_received == 1).await;
        let b = Client::join(&server.url(other)).await;
        assert_eq!(
            b.text("text"),
            marker,
            "{one} and {other} should be one document"
        );
    }
    // Plain HTTP on those paths is still the API.
    let (status, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn several_messages_in_one_frame_are_all_handled() {
    let server = TestServer::start(config()).await;
    let url = server.url("multi");
    let mut observer = Client::join(&url).await;
    let mut c = Client::connect(&url).await;
    // SyncStep1 + an update + an awareness entry + query awareness, in a single frame.
    let update = {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        yrs::Text::insert(&t, &mut txn, 0, "batched");
        txn.encode_update_v1()
    };
    let mut bytes = frame(0, Some(0), &yrs::StateVector::default().encode_v1_bytes());
    bytes.extend(frame(0, Some(2), &update));
    bytes.extend(common::awareness_frame(&[(4242, 1, "{\"name\":\"m\"}")]));
    bytes.push(3);
    c.send_raw(bytes).await;
    c.pump_until(|c| c.synced && c.text("text") == "batched" && c.awareness.contains_key(&4242))
        .await;
    observer
        .pump_until(|o| o.text("text") == "batched" && o.awareness.contains_key(&4242))
        .await;
    server.stop().await;
}

trait EncodeBytes {
    fn encode_v1_bytes(&self) -> Vec<u8>;
}

impl EncodeBytes for yrs::StateVector {
    fn encode_v1_bytes(&self) -> Vec<u8> {
        yrs::updates::encoder::Encode::encode_v1(self)
    }
}

#[tokio::test]
async fn offline_edits_merge_on_reconnect() {
    let server = TestServer::start(config()).await;
    let url = server.url("offline");
    let mut a = Client::join(&url).await;
    let mut b = Client::join(&url).await;
    a.insert("text", 0, "base ").await;
    b.pump_until(|c| c.text("text") == "base ").await;
    a.pump_until(|c| c.updates_received == 1).await;
    // A goes offline: it edits its own doc without a socket, then rejoins with the same doc.
    let _ = a.ws.close(None).await;
    let offline_doc = a.doc;
    {
        let t = offline_doc.get_or_insert_text("text");
        let mut txn = offline_doc.transact_mut();
        yrs::Text::insert(&t, &mut txn, 5, "offline-a ");
    }
    b.insert("text", 0, "online-b ").await;
    b.pump_until(|c| c.text("text").starts_with("online-b"))
        .await;
    let mut a2 = Client::connect(&url).await;
    a2.doc = offline_doc;
    a2.sync().await;
    a2.pump_until(|c| c.text("text").contains("online-b") && c.text("text").contains("offline-a"))
        .await;
    b.pump_until(|c| c.text("text").contains("offline-a")).await;
    assert_eq!(a2.text("text"), b.text("text"));
    assert_eq!(
        a2.doc.transact().state_vector(),
        b.doc.transact().state_vector()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_simultaneous_joins_load_the_document_once() {
    let mut cfg = config();
    cfg.unload_after = std::time::Duration::from_millis(200);
    let server = TestServer::start(cfg).await;
    let url = server.url("stampede");
    {
        let mut seed = Client::join(&url).await;
        seed.insert("text", 0, "seeded").await;
        seed.pump_until(|c| c.updates_received == 1).await;
    }
    // Let the document unload so the stampede meets a cold document.
    common::eventually("the document unloads", || async {
        server.metric("tandem_documents_open", "").await == 0.0
    })
    .await;
    let loaded_before = server.metric("tandem_documents_loaded_total", "").await;
    let joins = (0..1000).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Client::join(&url).await })
    });
    let clients = futures::future::join_all(joins).await;
    for c in &clients {
        let c = c.as_ref().expect("join task");
        assert_eq!(c.text("text"), "seeded");
    }
    let loaded = server.metric("tandem_documents_loaded_total", "").await - loaded_before;
    assert_eq!(loaded, 1.0, "the document must be loaded exactly once");
    drop(clients);
    server.stop().await;
}
