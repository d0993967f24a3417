//! The Hocuspocus protocol at the socket level: auth per document, multiplexing, per-document
//! closes, sync-status acks, ping/pong, and the envelope errors that close the whole socket.
//! (The real `@hocuspocus/provider` is exercised in tests/js.)

mod common;

use std::time::Duration;

use common::{Client, TestServer, WAIT, config, text_update};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tandem::config::AuthMode;
use tandem_wire::hocuspocus as hp;
use tokio::time::timeout;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Transact, Update};

const SECRET: &str = "tandem-hocuspocus-tests-hs256-secret-012345";

/// One decoded server frame.
#[derive(Debug)]
enum In {
    /// `[key][type][body]`.
    Doc(String, u64, Vec<u8>),
    /// A bare ping or pong.
    Bare(u8),
    /// The socket closed with this code.
    Closed(Option<u16>),
}

/// A Hocuspocus client speaking the envelope by hand.
struct Hp {
    ws: common::Ws,
}

impl Hp {
    async fn connect(server: &TestServer) -> Hp {
        let (ws, _) = connect_async(format!("ws://{}", server.addr))
            .await
            .expect("connect");
        Hp { ws }
    }

    async fn send(&mut self, frame: Vec<u8>) {
        self.ws.send(Message::binary(frame)).await.expect("send");
    }

    async fn recv(&mut self) -> In {
        loop {
            let msg = timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Binary(data))) => {
                    if data.len() == 1 {
                        return In::Bare(data[0]);
                    }
                    let env = hp::envelope(&data).expect("server envelope");
                    return In::Doc(env.key.to_string(), env.kind, env.body.to_vec());
                }
                Some(Ok(Message::Close(frame))) => {
                    return In::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return In::Closed(None),
            }
        }
    }

    /// Reads until `pick` accepts a frame; fails on a socket close.
    async fn until<T>(&mut self, mut pick: impl FnMut(&In) -> Option<T>) -> T {
        loop {
            let got = self.recv().await;
            if let Some(t) = pick(&got) {
                return t;
            }
            assert!(!matches!(got, In::Closed(_)), "socket closed: {got:?}");
        }
    }

    /// Sends the auth message and returns the reply: `Ok(scope)` or `Err(reason)`.
    async fn auth(&mut self, key: &str, token: &str) -> Result<String, String> {
        self.send(hp::auth_token(key, token, "4.8.0")).await;
        self.until(|m| match m {
            In::Doc(k, hp::AUTH, body) if k == key => hp::read_auth_reply(body),
            _ => None,
        })
        .await
    }

    /// Opens `key` and completes its sync handshake.
    async fn open(&mut self, key: &str, token: &str) -> Result<String, String> {
        let scope = self.auth(key, token).await?;
        self.send(hp::wrap(key, &tandem_wire::STEP1_EMPTY)).await;
        // The server's own SyncStep1 comes on join, then the answer to ours.
        self.until(|m| match m {
            In::Doc(k, hp::SYNC, body) if k == key && body.first() == Some(&1) => Some(()),
            _ => None,
        })
        .await;
        Ok(scope)
    }

    /// Sends an update for `key` and waits for its sync status.
    async fn update(&mut self, key: &str, update: &[u8]) -> bool {
        self.send(hp::wrap(key, &tandem_wire::update(update))).await;
        self.status(key).await
    }

    async fn status(&mut self, key: &str) -> bool {
        self.until(|m| match m {
            In::Doc(k, hp::SYNC_STATUS, body) if k == key => Some(body == &[1]),
            _ => None,
        })
        .await
    }

    /// Waits for the close message of `key`; its reason.
    async fn closed(&mut self, key: &str) -> String {
        self.until(|m| match m {
            In::Doc(k, hp::CLOSE, body) if k == key => {
                let mut r = tandem_wire::Reader::new(body);
                let text = r.var_bytes().expect("reason");
                Some(String::from_utf8_lossy(text).into_owned())
            }
            _ => None,
        })
        .await
    }

    /// Waits for the socket's close code.
    async fn socket_closed(&mut self) -> Option<u16> {
        loop {
            if let In::Closed(code) = self.recv().await {
                return code;
            }
        }
    }
}

fn text_of(updates: &[Vec<u8>]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    for u in updates {
        let update = Update::decode_v1(u).expect("update");
        doc.transact_mut().apply_update(update).expect("apply");
    }
    text.get_string(&doc.transact())
}

/// The update (v1) of a relayed `[key][0][2][update]` body.
fn relayed(body: &[u8]) -> Option<Vec<u8>> {
    let mut r = tandem_wire::Reader::new(body);
    (r.var_uint().ok()? == tandem_wire::SYNC_UPDATE)
        .then(|| r.var_bytes().ok().map(<[u8]>::to_vec))?
}

#[tokio::test]
async fn one_socket_many_documents_each_acked_after_it_is_stored() {
    let server = TestServer::start(config()).await;
    let mut c = Hp::connect(&server).await;
    assert_eq!(c.open("a", "").await, Ok("read-write".into()));
    assert_eq!(c.open("b", "").await, Ok("read-write".into()));
    // A y-websocket client on "a" sees the Hocuspocus client's edit, and the other way round.
    let mut y = Client::join(&server.url("a")).await;
    let hello = text_update("text", "hello");
    assert!(c.update("a", &hello).await);
    y.pump_until(|y| y.text("text") == "hello").await;
    y.insert("text", 5, "!").await;
    // Relays come to the sender too (its own "hello" first); read until the "!" arrives.
    let mut seen = vec![hello];
    while text_of(&seen) != "hello!" {
        let got = c
            .until(|m| match m {
                In::Doc(k, hp::SYNC, body) if k == "a" => relayed(body),
                _ => None,
            })
            .await;
        seen.push(got);
    }
    // "b" is its own document.
    assert!(c.update("b", &text_update("text", "bee")).await);
    let mut yb = Client::join(&server.url("b")).await;
    yb.pump_until(|y| y.text("text") == "bee").await;
    // Detaching "a" leaves "b" working on the same socket.
    c.send(hp::detach("a")).await;
    assert!(c.update("b", &text_update("text", "more")).await);
    server.stop().await;
}

#[tokio::test]
async fn a_bad_message_closes_its_document_not_the_socket() {
    let server = TestServer::start(config()).await;
    let mut c = Hp::connect(&server).await;
    c.open("good", "").await.expect("open");
    c.open("bad", "").await.expect("open");
    // Not a Yjs update: y-websocket would close with 1007; here only "bad" closes.
    c.send(hp::wrap("bad", &[0, 2, 3, 0xff, 0xff, 0xff])).await;
    let reason = c.closed("bad").await;
    assert!(reason.starts_with("1007"), "reason: {reason}");
    assert!(c.update("good", &text_update("text", "still here")).await);
    // The closed document's later messages are dropped, not answered, and it can reopen.
    c.send(hp::wrap(
        "bad",
        &tandem_wire::update(&text_update("text", "x")),
    ))
    .await;
    assert_eq!(c.open("bad", "").await, Ok("read-write".into()));
    server.stop().await;
}

#[tokio::test]
async fn messages_before_auth_are_dropped_and_ping_is_answered() {
    let server = TestServer::start(config()).await;
    let mut c = Hp::connect(&server).await;
    c.send(hp::wrap(
        "early",
        &tandem_wire::update(&text_update("text", "lost")),
    ))
    .await;
    c.send(vec![hp::PING]).await;
    c.until(|m| matches!(m, In::Bare(hp::PONG)).then_some(()))
        .await;
    c.open("early", "").await.expect("open");
    let y = Client::join(&server.url("early")).await;
    assert_eq!(y.text("text"), "");
    server.stop().await;
}

#[tokio::test]
async fn a_broken_envelope_closes_the_socket() {
    let server = TestServer::start(config()).await;
    let mut c = Hp::connect(&server).await;
    // A name announced 5 bytes long, with one.
    c.send(vec![5, b'a']).await;
    assert_eq!(c.socket_closed().await, Some(1002));
    server.stop().await;
}

fn token(docs: &[&str], access: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ada", "docs": docs, "access": access, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

#[tokio::test]
async fn tokens_per_document_with_scopes_and_reasons() {
    let mut cfg = config();
    cfg.auth = AuthMode::Token;
    cfg.jwt_secret = Some(SECRET.into());
    let server = TestServer::start(cfg).await;
    let mut c = Hp::connect(&server).await;
    let rw = token(&["team/*"], "rw");
    let ro = token(&["public"], "ro");
    let missing = c.auth("team/x", "").await.expect_err("no token");
    assert!(!missing.is_empty());
    assert!(c.auth("other", &rw).await.is_err(), "outside the grant");
    assert!(c.auth("team/x", "not-a-jwt").await.is_err());
    assert_eq!(c.open("team/x", &rw).await, Ok("read-write".into()));
    assert_eq!(c.open("public", &ro).await, Ok("readonly".into()));
    // A reader's write is refused (status 0) and not applied; the writer's is saved.
    assert!(!c.update("public", &text_update("text", "nope")).await);
    assert!(c.update("team/x", &text_update("text", "yes")).await);
    server.stop().await;
}

const ADMIN: &str = "hocuspocus-tests-admin-token-5d1e";

#[tokio::test]
async fn deleting_one_document_closes_it_alone_with_4410() {
    let mut cfg = config();
    cfg.admin_token = Some(ADMIN.into());
    let server = TestServer::start(cfg).await;
    let mut c = Hp::connect(&server).await;
    c.open("doomed", "").await.expect("open");
    c.open("kept", "").await.expect("open");
    assert!(c.update("doomed", &text_update("text", "x")).await);
    let auth = format!("Bearer {ADMIN}");
    let r = common::http_send(
        server.addr,
        "DELETE",
        "/api/v1/admin/documents/doomed",
        &[("Authorization", auth.as_str())],
        &[],
    )
    .await;
    assert!(r.status < 300, "delete: {}", r.status);
    let reason = c.closed("doomed").await;
    assert!(reason.starts_with("4410"), "reason: {reason}");
    assert!(c.update("kept", &text_update("text", "y")).await);
    // The deleted name is refused from now on, with a reason.
    assert_eq!(c.auth("doomed", "").await, Err("document deleted".into()));
    server.stop().await;
}

#[tokio::test]
async fn an_expired_token_closes_its_document_with_4401_and_the_socket_stays() {
    let mut cfg = config();
    cfg.auth = AuthMode::Token;
    cfg.jwt_secret = Some(SECRET.into());
    let server = TestServer::start(cfg).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let short = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ada", "docs": ["short", "renewed"], "access": "rw", "exp": now + 2}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    let mut c = Hp::connect(&server).await;
    c.open("short", &short).await.expect("open");
    c.open("renewed", &short).await.expect("open");
    c.open("long", &token(&["long"], "rw")).await.expect("open");
    // A fresh token sent on an open document (`provider.sendToken()`) extends it.
    assert_eq!(
        c.auth("renewed", &token(&["renewed"], "rw")).await,
        Ok("read-write".into())
    );
    let reason = c.closed("short").await;
    assert!(reason.starts_with("4401"), "reason: {reason}");
    assert!(c.update("long", &text_update("text", "still")).await);
    assert!(c.update("renewed", &text_update("text", "renewed")).await);
    server.stop().await;
}

#[tokio::test]
async fn the_sync_status_waits_for_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/tandem.db", dir.path().display());
    let mut cfg = config();
    cfg.database_url = Some(url.clone());
    let server = TestServer::start_with(cfg, None).await;
    let mut c = Hp::connect(&server).await;
    c.open("slow", "").await.expect("open");
    assert!(c.update("slow", &text_update("text", "first")).await);
    // Another connection holds SQLite's write lock: the next update is applied, not stored.
    let lock = testkit::SqliteWriteLock::acquire(&url).await;
    c.send(hp::wrap(
        "slow",
        &tandem_wire::update(&text_update("text", "second")),
    ))
    .await;
    let early = timeout(Duration::from_millis(1500), c.status("slow")).await;
    assert!(early.is_err(), "acknowledged before the commit");
    lock.release().await;
    assert!(c.status("slow").await, "acknowledged once committed");
    server.stop().await;
}
