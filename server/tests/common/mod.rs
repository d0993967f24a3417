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

pub mod admin;
pub mod bin;
pub mod sse;

/// Runs `case` (an async fn taking `&Db`) once per database: SQLite, and Postgres when
/// `TANDEM_TEST_DATABASE_URL` is set; each run is timed and its database cleaned up.
// Not every test crate that includes this module runs on every database.
#[allow(unused_macros)]
macro_rules! on_every_db {
    ($test:literal, $case:path) => {
        for db in $crate::common::Db::all($test).await {
            println!("{}: {}", $test, db.label);
            let started = std::time::Instant::now();
            $case(&db).await;
            println!("{}: {} took {:?}", $test, db.label, started.elapsed());
            db.finish().await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_db;

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
    Config {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    }
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
    pub async fn stop(self) {
        self.stop_timed().await;
    }

    /// Stops the server and returns how long `serve` took to return after being told to stop.
    pub async fn stop_timed(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
        started.elapsed()
    }

    /// Polls /metrics until `name{labels}` equals `expected`; panics with the last value after
    /// [`WAIT`].
    pub async fn wait_metric(&self, name: &str, labels: &str, expected: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.metric(name, labels).await;
            if value == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{labels}}} is {value}, expected {expected} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
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

/// An HS256 token signed with `secret`, granting `docs` with `access` to user `sub` for an
/// hour.
pub fn doc_token(secret: &str, sub: &str, docs: &[&str], access: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({ "sub": sub, "docs": docs, "access": access, "exp": exp });
    let key = EncodingKey::from_secret(secret.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode token")
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
    /// Every awareness entry received, in order: (client id, clock, state json or None).
    pub awareness_log: Vec<(u64, u32, Option<String>)>,
    /// Awareness frames received (an empty answer to a query counts too).
    pub awareness_frames: usize,
    /// The entries of the most recent awareness frame.
    pub last_awareness_frame: Vec<(u64, u32, Option<String>)>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = connect_async(url).await.expect("connect");
        Client::from_ws(ws)
    }

    /// A client around a socket opened some other way (custom headers, subprotocols).
    pub fn from_ws(ws: Ws) -> Client {
        Client {
            ws,
            doc: Doc::new(),
            synced: false,
            awareness: Default::default(),
            closed: None,
            updates_received: 0,
            awareness_log: Vec::new(),
            awareness_frames: 0,
            last_awareness_frame: Vec::new(),
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
        let mut r = Reader::new(data);
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
                let mut a = Reader::new(payload);
                let n = a.var();
                self.awareness_frames += 1;
                self.last_awareness_frame.clear();
                for _ in 0..n {
                    let id = a.var();
                    let clock = a.var() as u32;
                    let json = String::from_utf8(a.bytes().to_vec()).expect("utf8");
                    let state = (json != "null").then_some(json);
                    self.awareness_log.push((id, clock, state.clone()));
                    self.last_awareness_frame.push((id, clock, state.clone()));
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

/// Builds `[kind][sub?][varUint8Array(payload)]` (see [`tandem_wire::raw`] for more hostile
/// shapes).
pub fn frame(kind: u64, sub: Option<u64>, payload: &[u8]) -> Vec<u8> {
    tandem_wire::raw::message(kind, sub, payload)
}

/// An awareness message; each state is written as given (`"null"` announces a removal).
pub fn awareness_frame(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    tandem_wire::raw::awareness(entries)
}

/// Appends a lib0 varUint.
pub fn put_var(out: &mut Vec<u8>, v: u64) {
    tandem_wire::put_var_uint(out, v);
}

/// The test client trusts the server: anything it cannot read is a failed test.
struct Reader<'a>(tandem_wire::Reader<'a>);

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader(tandem_wire::Reader::new(data))
    }
    fn var(&mut self) -> u64 {
        self.0.var_uint().expect("varint from server")
    }
    fn bytes(&mut self) -> &'a [u8] {
        self.0.var_bytes().expect("bytes from server")
    }
}

/// Waits until `f` is true, polling; panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !testkit::eventually(WAIT, f).await {
        panic!("not reached within {WAIT:?}: {what}");
    }
}

/// A Yjs v1 update that inserts `s` into root text `name` of a fresh document.
pub fn text_update(name: &str, s: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(name);
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}

impl Client {
    /// The live awareness state this client knows for `id`, if any.
    pub fn awareness_state(&self, id: u64) -> Option<&str> {
        self.awareness.get(&id).and_then(|(_, s)| s.as_deref())
    }

    /// Sends a close frame (1000) and reads until the server answers or drops the socket.
    /// Returns the server's close code, if it sent one (it echoes ours).
    pub async fn close(&mut self) -> Option<u16> {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        self.expect_close().await
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket: a hand-written client for inputs a well-behaved library refuses to produce.
// ---------------------------------------------------------------------------------------------

/// The sample key from RFC 6455 §1.3 and the accept value the server must derive from it.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// WebSocket opcodes.
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A fixed masking key: masking is about proxies, not secrecy, so tests may reuse one.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Encodes one WebSocket frame. `rsv` holds the three reserved bits (0..=7); `mask` is `None`
/// for an unmasked frame (illegal from a client).
pub fn ws_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = ws_header(fin, rsv, opcode, mask, payload.len() as u64);
    match mask {
        Some(key) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// Encodes a frame header announcing `len` payload bytes (which the caller may never send).
pub fn ws_header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A well-formed, masked, final client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    ws_frame(true, 0, opcode, Some(MASK), payload)
}

/// One frame from the server.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame (1005, "no status", for an empty close payload).
    pub fn close_code(&self) -> Option<u16> {
        if self.opcode != op::CLOSE {
            return None;
        }
        Some(match self.payload.as_slice() {
            [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
            _ => 1005,
        })
    }
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parses a response head (status line and headers, without the blank line).
    pub fn from_head(head: &[u8], body: Vec<u8>) -> HttpResponse {
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The request a browser sends to open a WebSocket on `path`.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client socket speaking WebSocket by hand.
pub struct RawWs {
    pub stream: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects, upgrades `path` and checks the 101 answer.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawWs::upgrade(stream, addr, path).await
    }

    /// Like [`RawWs::connect`], with the socket's receive buffer set to `rcvbuf` bytes before
    /// connecting (so the advertised TCP window stays small).
    pub async fn connect_with_rcvbuf(addr: SocketAddr, path: &str, rcvbuf: u32) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        RawWs::upgrade(stream, addr, path).await
    }

    async fn upgrade(stream: TcpStream, addr: SocketAddr, path: &str) -> RawWs {
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        raw.write(upgrade_request(addr, path).as_bytes()).await;
        let response = raw.read_response_head().await;
        assert_eq!(response.status, 101, "upgrade refused: {response:?}");
        assert_eq!(response.header("sec-websocket-accept"), Some(WS_ACCEPT));
        raw
    }

    /// Writes raw bytes; a write error (the server already closed) is ignored, since the
    /// interesting part is what the server answered.
    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads more bytes into the buffer; false at end of stream (or reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        match timeout(WAIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    async fn read_response_head(&mut self) -> HttpResponse {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill().await, "connection closed inside HTTP head");
        };
        let response = HttpResponse::from_head(&self.buf[..end], Vec::new());
        self.buf.drain(..end + 4);
        response
    }

    /// Reads the next frame; `None` when the connection ended first.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads (and discards) frames until a close frame arrives; returns its code, or `None`
    /// if the server ended the TCP connection without one.
    pub async fn expect_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = timeout(left, self.read_frame())
                .await
                .expect("server neither closed nor dropped the socket in time")?;
            if let Some(code) = frame.close_code() {
                return Some(code);
            }
        }
    }

    /// After a close frame: true if the server then ends the TCP connection.
    pub async fn expect_eof(&mut self) -> bool {
        timeout(WAIT, async { while self.read_frame().await.is_some() {} })
            .await
            .is_ok()
    }
}

/// Parses one unmasked server frame at the start of `buf`: the frame and the bytes it used.
fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).expect("frame length");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    let frame = RawFrame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload,
    };
    Some((frame, at))
}

/// Sends `request` verbatim and reads one response (head and `Content-Length` body).
pub async fn http_request(addr: SocketAddr, request: &str) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut raw = RawWs {
        stream,
        buf: Vec::new(),
    };
    raw.write(request.as_bytes()).await;
    let mut response = raw.read_response_head().await;
    let len: usize = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while raw.buf.len() < len {
        assert!(raw.fill().await, "connection closed inside HTTP body");
    }
    response.body = raw.buf[..len].to_vec();
    response
}

// ---------------------------------------------------------------------------------------------
// Added for the admin tests (tests/admin_*.rs): HTTP requests with any method, headers and a binary body.
// ---------------------------------------------------------------------------------------------

/// Sends `method path` with `headers` and `body` (its `Content-Length` is added) on a fresh
/// connection (`Connection: close`) and reads the whole response; a chunked body is de-chunked.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request).await.expect("write request");
    let mut buf = Vec::new();
    timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("no complete HTTP response in time")
        .expect("read response");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&buf)));
    let mut response = HttpResponse::from_head(&buf[..end], Vec::new());
    let rest = &buf[end + 4..];
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else if let Some(len) = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    response
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_line = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).expect("chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One test's database ([`testkit::TestDb`]: its label, URL and backend read through), with a
/// way to open a store on it.
pub struct Db(testkit::TestDb);

impl std::ops::Deref for Db {
    type Target = testkit::TestDb;

    fn deref(&self) -> &testkit::TestDb {
        &self.0
    }
}

impl Db {
    /// SQLite always, Postgres when configured.
    pub async fn all(test: &str) -> Vec<Db> {
        testkit::TestDb::all(test)
            .await
            .into_iter()
            .map(Db)
            .collect()
    }

    /// Postgres only (clustering needs it), when configured.
    pub async fn postgres(test: &str) -> Option<Db> {
        testkit::TestDb::postgres(test).await.map(Db)
    }

    /// A store on the same database, for reading the log in assertions (migrated, so it also
    /// works before any server ran).
    pub async fn store(&self) -> crdt_store::Store {
        let opts = crdt_store::StoreOptions {
            max_connections: 2,
            ..crdt_store::StoreOptions::default()
        };
        let store = crdt_store::Store::open(&self.url, &opts)
            .await
            .expect("open store");
        store.migrate().await.expect("migrate");
        store
    }

    /// Drops the Postgres schema, if any.
    pub async fn finish(self) {
        self.0.finish().await;
    }
}
