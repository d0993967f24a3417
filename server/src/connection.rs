//! The WebSocket adapter: one reader (this task) and one writer task per socket.
//!
//! The reader decodes frames and hands messages to the room; the writer drains the peer's
//! queue in batches (feed many, flush once) and sends pings. Generic over `Sink`/`Stream` so it
//! does not care whether the socket is axum's or a test double.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{Instrument, debug, debug_span};

use crate::auth::Grant;
use crate::close;
use crate::limits::RateLimiter;
use crate::peer::{CloseReason, Outbox, Peer};
use crate::protocol;
use crate::registry::Registry;
use crate::room::RoomMsg;
use crate::state::Shared;

/// Frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a closing connection may take to deliver what is queued and its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The client closed the socket itself.
const CLIENT_CLOSED: CloseReason = CloseReason {
    code: close::NORMAL,
    reason: "",
    label: "client_closed",
};
/// The client's close frame carried a code that may not be sent on the wire (1005, 1006,
/// 1015, below 1000, reserved ranges). tungstenite answers it with 1002 itself and hands us
/// 1002 in place of the client's code; counting it as `client_closed` hid the violation. (A
/// client that itself closes with 1002 is counted the same way: it saw a violation too.)
const CLIENT_BAD_CLOSE: CloseReason = CloseReason {
    code: close::PROTOCOL_ERROR,
    reason: "websocket protocol violation",
    label: "ws_protocol_error",
};
/// Nothing arrived within the ping timeout.
const PING_TIMEOUT: CloseReason = CloseReason {
    code: close::PING_TIMEOUT,
    reason: "ping timeout",
    label: "ping_timeout",
};
/// The client sent a text frame.
const TEXT_FRAME: CloseReason = CloseReason {
    code: close::UNSUPPORTED_DATA,
    reason: "text frames are not supported; send binary y-websocket messages",
    label: "text_frame",
};
/// The token's `exp` passed while connected.
const TOKEN_EXPIRED: CloseReason = CloseReason {
    code: close::TOKEN_EXPIRED,
    reason: "token expired",
    label: "token_expired",
};
/// No message within the handshake timeout.
const HANDSHAKE_TIMEOUT: CloseReason = CloseReason {
    code: close::HANDSHAKE_TIMEOUT,
    reason: "handshake timeout: send SyncStep1",
    label: "handshake_timeout",
};
/// No message within the idle timeout.
const IDLE_TIMEOUT: CloseReason = CloseReason {
    code: close::IDLE_TIMEOUT,
    reason: "idle timeout",
    label: "idle_timeout",
};
/// Above the message rate.
const RATE_LIMITED: CloseReason = CloseReason {
    code: close::RATE_LIMITED,
    reason: "too many messages per second",
    label: "rate_limited",
};
/// The document could not be opened.
const UNAVAILABLE: CloseReason = CloseReason {
    code: close::LOAD_FAILED,
    reason: "document unavailable, retry later",
    label: "load_failed",
};

/// What the HTTP layer established about a connection before the upgrade.
#[derive(Debug)]
pub struct Admission {
    /// The document.
    pub name: Arc<str>,
    /// Identity and rights from the token (or open mode).
    pub grant: Grant,
    /// Places held in the per-address and per-document limits; released when the connection
    /// ends.
    pub slots: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Serves one WebSocket connection until it closes.
///
/// A plain function returning the connection's future, not an `async fn`: the socket is split
/// and the admission unpacked *before* the future is built, so the future (which lives as long
/// as the connection) stores only the small halves instead of a dead copy of the whole socket
/// state. Measured: 2.5 KiB less per connection.
pub fn run<S>(
    socket: S,
    admission: Admission,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Send
        + 'static,
{
    let id = shared.next_conn_id();
    let Admission { name, grant, slots } = admission;
    // Debug level: a live span costs ~0.5 KiB per connection in the subscriber, a tenth of an
    // idle connection's footprint. `--log tandem=debug` turns it on.
    let span = debug_span!("conn", id, doc = %name, user = grant.user.as_deref().unwrap_or(""));
    let config = &shared.config;
    let (peer, outbox) = Peer::new(id, config.outbox_frames, config.outbox_bytes);
    let peer = Arc::new(peer.with_grant(&grant));
    let expires = grant.expires_at;
    drop(grant);
    let (sink, stream) = socket.split();
    async move {
        let metrics = &shared.metrics;
        metrics.connections.inc();
        metrics.connections_accepted.inc();
        debug!("open");
        shared.register(peer.clone());
        let writer =
            tokio::spawn(write_loop(sink, outbox, peer.clone(), shared.clone()).in_current_span());

        match registry.join(&name, peer.clone()).await {
            Ok(room) => {
                read_loop(stream, &room, &peer, &shared, expires).await;
                let _ = room.send(RoomMsg::Leave { conn: id }).await;
            }
            Err(e) => {
                debug!(error = %e, "join failed");
                peer.close(UNAVAILABLE);
            }
        }
        let _ = writer.await;
        shared.unregister(id);
        drop(slots);
        let reason = peer.close_reason().unwrap_or(CLIENT_CLOSED);
        metrics.closed(reason.label);
        metrics.connections.dec();
        debug!(code = reason.code, reason = reason.label, "closed");
    }
    .instrument(span)
}

/// Converts a wall-clock expiry into a timer deadline.
fn deadline_at(at: SystemTime) -> Instant {
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// The timers a reading connection is subject to; the earliest one that passes closes it.
struct Deadlines {
    /// Nothing at all (not even a pong) for `ping_timeout`.
    liveness: Instant,
    /// No message yet within `handshake_timeout` of the upgrade; `None` once one arrived.
    handshake: Option<Instant>,
    /// No message (pongs aside) for `idle_timeout`.
    idle: Instant,
    /// The token's `exp`.
    expiry: Option<Instant>,
}

impl Deadlines {
    fn next(&self) -> (Instant, CloseReason) {
        let mut next = (self.liveness, PING_TIMEOUT);
        for (at, reason) in [
            (self.handshake, HANDSHAKE_TIMEOUT),
            (Some(self.idle), IDLE_TIMEOUT),
            (self.expiry, TOKEN_EXPIRED),
        ] {
            if let Some(at) = at.filter(|at| *at < next.0) {
                next = (at, reason);
            }
        }
        next
    }
}

/// Reads frames until the connection ends; on return the peer has a close reason.
async fn read_loop<S>(
    mut stream: S,
    room: &mpsc::Sender<RoomMsg>,
    peer: &Peer,
    shared: &Shared,
    expires_at: Option<SystemTime>,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let metrics = &shared.metrics;
    let config = &shared.config;
    let now = Instant::now();
    let mut deadlines = Deadlines {
        liveness: now + config.ping_timeout,
        handshake: Some(now + config.handshake_timeout),
        idle: now + config.idle_timeout,
        expiry: expires_at.map(deadline_at),
    };
    let mut rate = RateLimiter::new(
        config.max_messages_per_sec,
        config.message_burst,
        now.into_std(),
    );
    loop {
        let (deadline, expired) = deadlines.next();
        let frame = tokio::select! {
            biased;
            _ = peer.closing().cancelled() => return,
            _ = shared.shutdown.cancelled() => {
                peer.close(CloseReason::SHUTDOWN);
                return;
            }
            _ = sleep_until(deadline) => {
                peer.close(expired);
                return;
            }
            frame = stream.next() => frame,
        };
        let now = Instant::now();
        deadlines.liveness = now + config.ping_timeout;
        match frame {
            Some(Ok(Message::Binary(data))) => {
                deadlines.handshake = None;
                deadlines.idle = now + config.idle_timeout;
                metrics.bytes_in.inc_by(data.len() as u64);
                match protocol::decode_frame(&data) {
                    Ok(msgs) => {
                        metrics.messages_in.inc_by(msgs.len() as u64);
                        let count = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
                        if !rate.allow(count, now.into_std()) {
                            peer.close(RATE_LIMITED);
                            return;
                        }
                        let msg = RoomMsg::Frame {
                            conn: peer.id,
                            msgs,
                        };
                        if room.send(msg).await.is_err() {
                            peer.close(CloseReason::INTERNAL);
                            return;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "bad frame");
                        peer.close(CloseReason {
                            code: e.close_code(),
                            reason: e.label(),
                            label: e.label(),
                        });
                        return;
                    }
                }
            }
            Some(Ok(Message::Text(_))) => {
                peer.close(TEXT_FRAME);
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(Some(frame)))) if frame.code == close::PROTOCOL_ERROR => {
                peer.close(CLIENT_BAD_CLOSE);
                return;
            }
            Some(Ok(Message::Close(_))) | None => {
                peer.close(CLIENT_CLOSED);
                return;
            }
            Some(Err(e)) => {
                let reason = classify(e);
                debug!(reason = reason.label, "socket error");
                peer.close(reason);
                return;
            }
        }
    }
}

/// Maps a WebSocket-layer error to the close it earns.
fn classify(e: axum::Error) -> CloseReason {
    use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
    let connection_error = CloseReason {
        code: close::PROTOCOL_ERROR,
        reason: "connection error",
        label: "io_error",
    };
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        // The TCP connection ended without a close frame: a network drop or a killed client,
        // like an I/O error. It used to count as `ws_protocol_error`, drowning real violations
        // in ordinary disconnects.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => connection_error,
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => CloseReason {
            code: close::MESSAGE_TOO_BIG,
            reason: "message too big",
            label: "message_too_big",
        },
        Some(WsError::Capacity(_)) => CloseReason {
            code: close::MESSAGE_TOO_BIG,
            reason: "frame too big",
            label: "message_too_big",
        },
        Some(WsError::Protocol(_)) => CloseReason {
            code: close::PROTOCOL_ERROR,
            reason: "websocket protocol violation",
            label: "ws_protocol_error",
        },
        Some(WsError::Utf8(_)) => CloseReason {
            code: close::INVALID_PAYLOAD,
            reason: "invalid UTF-8",
            label: "invalid_utf8",
        },
        _ => connection_error,
    }
}

/// Drains the peer's queue onto the socket and pings it; on close, delivers what is queued
/// (unless the peer is being dropped for being slow) and a close frame, within a grace period.
async fn write_loop<S>(mut sink: S, mut outbox: Outbox, peer: Arc<Peer>, shared: Arc<Shared>)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let metrics = &shared.metrics;
    let mut next_ping = Instant::now() + shared.config.ping_interval;
    loop {
        let first = tokio::select! {
            biased;
            _ = peer.closing().cancelled() => break,
            frame = outbox.recv() => frame,
            _ = sleep_until(next_ping) => {
                next_ping = Instant::now() + shared.config.ping_interval;
                let ping = sink.send(Message::Ping(Bytes::new()));
                tokio::select! {
                    r = ping => if r.is_err() { break },
                    _ = peer.closing().cancelled() => break,
                }
                continue;
            }
        };
        let batch = write_batch(&mut sink, &mut outbox, first, metrics);
        tokio::select! {
            r = batch => if r.is_err() {
                peer.close(CLIENT_CLOSED);
                break;
            },
            // Closed while a write is stuck (typically a peer that stopped reading, 4001). Do
            // not wait for the batch, but still try to queue the close frame behind what the
            // socket holds, bounded by CLOSE_GRACE: a client that resumes reading then learns
            // why (4001) and resyncs. Returning here dropped the socket without a close frame,
            // so even such a client saw only an abnormal closure (1006).
            _ = peer.closing().cancelled() => break,
        }
    }
    let reason = peer.close_reason().unwrap_or(CLIENT_CLOSED);
    let _ = timeout(CLOSE_GRACE, async {
        if reason != CloseReason::SLOW_CONSUMER {
            while let Some(frame) = outbox.try_recv() {
                metrics.frames_out.inc();
                metrics.bytes_out.inc_by(frame.len() as u64);
                // Refused once the client has sent its close frame: nothing more to deliver.
                if sink.feed(Message::Binary(frame)).await.is_err() {
                    break;
                }
            }
        }
        let frame = CloseFrame {
            code: reason.code,
            reason: reason.reason.into(),
        };
        // When the client closed first, tungstenite refuses this (`SendAfterClosing`) but has
        // already queued its reply echoing the client's code; only `close()` flushes that
        // reply, so an error here must not skip it (it did: clients never got their close
        // answered and saw the TCP connection drop instead).
        let _ = sink.send(Message::Close(Some(frame))).await;
        sink.close().await
    })
    .await;
}

/// Writes `first` and whatever else is already queued (up to a batch), then flushes once.
async fn write_batch<S>(
    sink: &mut S,
    outbox: &mut Outbox,
    first: Bytes,
    metrics: &crate::metrics::Metrics,
) -> Result<(), axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let mut frame = first;
    let mut written = 0;
    loop {
        let len = frame.len();
        sink.feed(Message::Binary(frame)).await?;
        metrics.frames_out.inc();
        metrics.bytes_out.inc_by(len as u64);
        written += 1;
        if written >= WRITE_BATCH {
            break;
        }
        match outbox.try_recv() {
            Some(next) => frame = next,
            None => break,
        }
    }
    sink.flush().await
}
