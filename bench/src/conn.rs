//! Opening y-websocket connections: target parsing, source-address binding, the sync handshake.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Error;
use crate::proto::{self, Incoming};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Where the server listens, parsed from `ws://IP:PORT[/prefix]`.
#[derive(Debug, Clone)]
pub struct Target {
    /// Socket address of the server (always in 127.0.0.0/8).
    pub addr: SocketAddr,
    /// Path prefix before the room name, without a trailing slash (usually empty).
    pub prefix: String,
}

impl Target {
    /// Parses a comma-separated list of `ws://` URLs: the nodes of a cluster, which clients
    /// are spread over in turn (client `i` uses node `i % n`).
    pub fn parse_many(urls: &str) -> Result<Vec<Self>, Error> {
        urls.split(',').map(|u| Target::parse(u.trim())).collect()
    }

    /// Parses a `ws://` URL. Only loopback IPv4 literals are accepted: load goes nowhere else.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("url {url:?}: only ws:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let addr: SocketAddr = authority.parse().map_err(|e| {
            format!(
                "url {url:?}: host must be an IP literal with a port (like 127.0.0.1:1234): {e}"
            )
        })?;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {}
            _ => return Err(format!("url {url:?}: load is only sent to 127.0.0.0/8").into()),
        }
        Ok(Target {
            addr,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL of a room.
    pub fn room_url(&self, room: &str) -> String {
        format!("ws://{}{}/{}", self.addr, self.prefix, room)
    }
}

/// `127.0.0.<base + index % count>`: the source address of connection `index`.
pub fn source_ip(base: u8, count: u8, index: usize) -> Ipv4Addr {
    let n = count.max(1) as usize;
    let last = (base as usize + index % n).min(254) as u8;
    Ipv4Addr::new(127, 0, 0, last)
}

/// WebSocket settings: `read_buffer` bytes are allocated eagerly per connection, so idle tests
/// with tens of thousands of sockets use a small one.
pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(read_buffer)
}

/// Opens a WebSocket to `url`, optionally from a given loopback source address.
pub async fn connect(
    target: &Target,
    url: &str,
    source: Option<Ipv4Addr>,
    config: WebSocketConfig,
) -> Result<Ws, Error> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source {
        // Lets the port of a TIME_WAIT socket from an earlier run be reused.
        socket
            .set_reuseaddr(true)
            .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| match source {
            Some(ip) => format!("connect {} from {ip}: {e}", target.addr),
            None => format!("connect {}: {e}", target.addr),
        })?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (ws, _response) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("websocket handshake {url}: {e}"))?;
    Ok(ws)
}

/// Runs the y-websocket sync handshake: sends SyncStep1 (empty state vector), answers the
/// server's SyncStep1 with an empty SyncStep2, and returns once the server's SyncStep2 arrives.
///
/// Returns the size of the server's SyncStep2 payload.
pub async fn sync_handshake(ws: &mut Ws, timeout: Duration) -> Result<usize, Error> {
    sync_handshake_with(ws, timeout, |u| u.len()).await
}

/// [`sync_handshake`] returning a copy of the server's SyncStep2 payload (the whole document).
pub async fn sync_handshake_update(ws: &mut Ws, timeout: Duration) -> Result<Vec<u8>, Error> {
    sync_handshake_with(ws, timeout, <[u8]>::to_vec).await
}

async fn sync_handshake_with<T>(
    ws: &mut Ws,
    timeout: Duration,
    take: impl Fn(&[u8]) -> T,
) -> Result<T, Error> {
    let run = async {
        ws.send(Message::Binary(Bytes::from_static(&proto::STEP1_EMPTY)))
            .await
            .map_err(|e| format!("send SyncStep1: {e}"))?;
        loop {
            let msg = match ws.next().await {
                None => return Err("connection closed before SyncStep2".to_owned()),
                Some(Err(e)) => return Err(format!("read before SyncStep2: {e}")),
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Binary(b) => match proto::parse_frame(&b) {
                    Ok(Incoming::Step1(_)) => {
                        ws.send(Message::Binary(Bytes::from_static(&proto::STEP2_EMPTY)))
                            .await
                            .map_err(|e| format!("send SyncStep2: {e}"))?;
                    }
                    Ok(Incoming::Step2(update)) => return Ok(take(update)),
                    Ok(_) => {}
                    Err(e) => return Err(format!("bad frame before SyncStep2: {e}")),
                },
                Message::Close(frame) => {
                    return Err(format!("server closed before SyncStep2: {frame:?}"));
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(format!("no SyncStep2 within {timeout:?}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("ws://127.0.0.1:1234").expect("parse");
        assert_eq!(t.room_url("r1"), "ws://127.0.0.1:1234/r1");
        let t = Target::parse("ws://127.0.0.3:80/base/").expect("parse");
        assert_eq!(t.room_url("x"), "ws://127.0.0.3:80/base/x");
        assert!(Target::parse("ws://10.0.0.1:80").is_err());
        assert!(Target::parse("ws://localhost:80").is_err());
        assert!(Target::parse("http://127.0.0.1:80").is_err());
    }

    #[test]
    fn source_ips_cycle() {
        assert_eq!(source_ip(2, 4, 0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(2, 4, 5), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_ip(2, 0, 5), Ipv4Addr::new(127, 0, 0, 2));
    }
}
