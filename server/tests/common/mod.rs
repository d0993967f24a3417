//! Test harness: a real server on port 0 and real WebSocket clients holding yrs documents.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tandem::Config;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Default wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Holds the SQLite file of a server started without a database URL.
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A config suited to tests (short timers where a test wants them).
pub fn config() -> Config {
    let mut c = Config::default();
    c.addr = "127.0.0.1:0".parse().expect("addr");
    c
}

impl TestServer {
    /// Starts a server; without a database URL it gets a fresh SQLite file of its own.
    pub async fn start(mut config: Config) -> TestServer {
        let dir = if config.database_url.is_none() {
            let dir = tempfile::tempdir().expect("tempdir");
            config.database_url = Some(format!("sqlite://{}/tandem.db", dir.path().display()));
            Some(dir)
        } else {
            None
        };
        Self::start_with(config, dir).await
    }

    /// Starts a server with exactly `config`, keeping `dir` alive as long as the server.
    pub async fn start_with(config: Config, dir: Option<tempfile::TempDir>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            tandem::serve(listener, config, shutdown)
                .await
                .expect("serve");
        });
        TestServer {
            addr,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/{}", self.addr, room)
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }

    /// Reads one metric's value from /metrics (sum over label sets matching `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter(|l| {
                let rest = &l[name.len()..];
                rest.starts_with(' ') || rest.starts_with('{')
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Minimal HTTP/1.1 GET over a raw socket, returning status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A y-websocket client holding its own yrs document.
pub struct Client {
    pub ws: Ws,
    pub doc: Doc,
    pub synced: bool,
    /// Awareness entries seen: client id -> (clock, state json or None).
    pub awareness: std::collections::HashMap<u64, (u32, Option<String>)>,
    /// Close frame received, if any.
    pub closed: Option<Option<CloseFrame>>,
    /// Sync updates (type 0/2) received, own echoes included.
    pub updates_received: usize,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = connect_async(url).await.expect("connect");
        Client {
            ws,
            doc: Doc::new(),
            synced: false,
            awareness: Default::default(),
            closed: None,
            updates_received: 0,
        }
    }

    /// Connects and completes the handshake (SyncStep1 → SyncStep2).
    pub async fn join(url: &str) -> Client {
        let mut c = Client::connect(url).await;
        c.sync().await;
        c
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    pub async fn sync(&mut self) {
        let sv = self.doc.transact().state_vector();
        self.send_raw(frame(0, Some(0), &sv.encode_v1())).await;
        self.pump_until(|c| c.synced).await;
    }

    /// Inserts text locally and sends the update.
    pub async fn insert(&mut self, name: &str, index: u32, s: &str) {
        let update = {
            let text = self.doc.get_or_insert_text(name);
            let mut txn = self.doc.transact_mut();
            text.insert(&mut txn, index, s);
            txn.encode_update_v1()
        };
        self.send_raw(frame(0, Some(2), &update)).await;
    }

    /// Runs `f` in a local transaction and sends the resulting update.
    pub async fn edit(&mut self, f: impl FnOnce(&Doc, &mut yrs::TransactionMut)) {
        let update = {
            let mut txn = self.doc.transact_mut();
            f(&self.doc, &mut txn);
            txn.encode_update_v1()
        };
        self.send_raw(frame(0, Some(2), &update)).await;
    }

    pub fn text(&self, name: &str) -> String {
        let text = self.doc.get_or_insert_text(name);
        text.get_string(&self.doc.transact())
    }

    pub fn state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Sends an awareness entry.
    pub async fn set_awareness(&mut self, client_id: u64, clock: u32, json: &str) {
        self.send_raw(awareness_frame(&[(client_id, clock, json)]))
            .await;
    }

    /// Handles one incoming message; returns false when the socket ended.
    pub async fn recv_one(&mut self) -> bool {
        let msg = match self.ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(_)) | None => {
                if self.closed.is_none() {
                    self.closed = Some(None);
                }
                return false;
            }
        };
        match msg {
            Message::Binary(data) => self.handle(&data).await,
            Message::Close(f) => {
                self.closed = Some(f);
                return false;
            }
            _ => {}
        }
        true
    }

    async fn handle(&mut self, data: &[u8]) {
        let mut r = Reader(data, 0);
        let kind = r.var();
        match kind {
            0 => {
                let sub = r.var();
                let payload = r.bytes();
                match sub {
                    0 => {
                        let sv = StateVector::decode_v1(payload).expect("sv");
                        let update = self.doc.transact().encode_state_as_update_v1(&sv);
                        self.send_raw(frame(0, Some(1), &update)).await;
                    }
                    1 | 2 => {
                        let u = Update::decode_v1(payload).expect("update from server");
                        self.doc.transact_mut().apply_update(u).expect("apply");
                        if sub == 1 {
                            self.synced = true;
                        } else {
                            self.updates_received += 1;
                        }
                    }
                    _ => panic!("unknown sync type {sub}"),
                }
            }
            1 => {
                let payload = r.bytes();
                let mut a = Reader(payload, 0);
                let n = a.var();
                for _ in 0..n {
                    let id = a.var();
                    let clock = a.var() as u32;
                    let json = String::from_utf8(a.bytes().to_vec()).expect("utf8");
                    let state = (json != "null").then_some(json);
                    self.awareness.insert(id, (clock, state));
                }
            }
            other => panic!("unexpected message type {other}"),
        }
    }

    /// Processes messages until `cond` holds; panics after [`WAIT`].
    pub async fn pump_until(&mut self, mut cond: impl FnMut(&Client) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.recv_one()).await {
                Ok(true) => {}
                Ok(false) => {
                    assert!(
                        cond(self),
                        "socket closed before condition: {:?}",
                        self.closed
                    );
                    return;
                }
                Err(_) => panic!("condition not reached within {WAIT:?}"),
            }
        }
    }

    /// Processes messages for `d`, whatever arrives.
    pub async fn pump_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match timeout(left, self.recv_one()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    /// Reads until the server closes the socket; returns the close code (None if no frame).
    pub async fn expect_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.recv_one()).await {
                Ok(true) => {}
                Ok(false) => {
                    return self.closed.clone().flatten().map(|f| u16::from(f.code));
                }
                Err(_) => panic!("server did not close the socket within {WAIT:?}"),
            }
        }
    }
}

/// Builds `[kind][sub?][varUint8Array(payload)]`.
pub fn frame(kind: u64, sub: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_var(&mut out, kind);
    if let Some(sub) = sub {
        put_var(&mut out, sub);
    }
    put_var(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

pub fn awareness_frame(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    let mut inner = Vec::new();
    put_var(&mut inner, entries.len() as u64);
    for (id, clock, json) in entries {
        put_var(&mut inner, *id);
        put_var(&mut inner, u64::from(*clock));
        put_var(&mut inner, json.len() as u64);
        inner.extend_from_slice(json.as_bytes());
    }
    frame(1, None, &inner)
}

pub fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8], usize);

impl Reader<'_> {
    fn var(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.0[self.1];
            self.1 += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    fn bytes(&mut self) -> &[u8] {
        let n = self.var() as usize;
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        s
    }
}

/// Waits until `f` is true, polling; panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not reached within {WAIT:?}: {what}");
}
