//! A Server-Sent Events reader over a raw socket (chunked HTTP/1.1), for the change feeds and
//! the fallback sync transport.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{HttpResponse, WAIT};

/// An open event stream.
pub struct Sse {
    stream: TcpStream,
    /// De-chunked bytes not yet parsed into events.
    text: String,
    raw: Vec<u8>,
    /// The terminating chunk arrived, or the socket closed.
    ended: bool,
}

/// One event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("{} data is not JSON ({e}): {:?}", self.event, self.data))
    }
}

impl Sse {
    /// `GET path` with a bearer token (and `Last-Event-ID`). Returns the status and the
    /// stream (for a status other than 200, its body is left unread).
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        bearer: &str,
        last_event_id: Option<&str>,
    ) -> (u16, Sse) {
        let auth = format!("Bearer {bearer}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID", id));
        }
        let (response, sse) = Sse::open_with(addr, path, &headers).await;
        (response.status, sse)
    }

    /// `GET path` with `headers`. Returns the response head and the stream.
    pub async fn open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (HttpResponse, Sse) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut sse = Sse {
            stream,
            text: String::new(),
            raw: Vec::new(),
            ended: false,
        };
        let end = loop {
            if let Some(i) = sse.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            sse.fill().await;
        };
        let response = HttpResponse::from_head(&sse.raw[..end], Vec::new());
        sse.raw.drain(..end + 4);
        assert!(
            response.status != 200
                || response
                    .header("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
            "{:?}",
            response.headers
        );
        (response, sse)
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 8192];
        let n = timeout(WAIT, self.stream.read(&mut buf))
            .await
            .expect("no SSE bytes in time")
            .expect("read");
        assert!(n > 0, "SSE stream closed");
        self.raw.extend_from_slice(&buf[..n]);
    }

    /// Moves complete chunks from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_line = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_line.trim(), 16).expect("chunk size");
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            if size == 0 {
                self.ended = true;
            }
            let chunk = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..line_end + 2 + size + 2);
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event (comments such as heartbeats are skipped).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(event) = self.try_next() {
                return event;
            }
            assert!(!self.ended, "the stream ended: {:?}", self.text);
            self.fill().await;
        }
    }

    /// The next complete event already received, if any.
    fn try_next(&mut self) -> Option<SseEvent> {
        loop {
            self.dechunk();
            let end = self.text.find("\n\n")?;
            let block: String = self.text.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = ("message".to_string(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                return Some(SseEvent { event, id, data });
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        loop {
            let event = self.next().await;
            if event.event == name {
                return event;
            }
        }
    }

    /// Whether the response ends (its last chunk arrives) within [`WAIT`], reading and
    /// dropping any events before it.
    pub async fn ends(&mut self) -> bool {
        let read = async {
            loop {
                self.dechunk();
                if self.ended {
                    return true;
                }
                let mut buf = [0u8; 8192];
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                }
            }
        };
        timeout(WAIT, read).await.unwrap_or(false)
    }
}
