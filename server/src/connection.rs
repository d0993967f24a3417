//! The WebSocket adapter: one task per socket that reads, writes, pings and keeps timers.
//!
//! It decodes frames and hands messages to the room, drains the peer's queue in batches (feed
//! many, flush once) and sends pings. Generic over `Sink`/`Stream` so it does not care whether
//! the socket is axum's or a test double.

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
use crate::registry::{JoinError, Registry};
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
    let peer = Arc::new(peer.with_grant(&grant).within(&shared.shutdown));
    let expires = grant.expires_at;
    drop(grant);
    async move {
        let metrics = &shared.metrics;
        metrics.connections.inc();
        metrics.connections_accepted.inc();
        debug!("open");
        shared.register(peer.clone());
        let mut socket = std::pin::pin!(socket);
        let mut outbox = outbox;
        // Boxed: a future's size is that of its largest await, and this one and `finish` are
        // each awaited once, so keeping them out of line shrinks every idle connection.
        match Box::pin(registry.join(&name, peer.clone())).await {
            Ok(room) => {
                drive(&mut socket, &mut outbox, &room, &peer, &shared, expires).await;
                let _ = room.send(RoomMsg::Leave { conn: id }).await;
            }
            Err(e) => {
                debug!(error = %e, "join failed");
                peer.close(match e {
                    JoinError::Deleted => CloseReason::DELETED,
                    JoinError::Unavailable | JoinError::LoadFailed => UNAVAILABLE,
                });
            }
        }
        Box::pin(finish(&mut socket, &mut outbox, &peer, &shared.metrics)).await;
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
    /// When the next ping is due.
    ping: Instant,
}

impl Deadlines {
    /// The earliest deadline, and the close it means (`None`: it is only time to ping).
    fn next(&self) -> (Instant, Option<CloseReason>) {
        let mut next = (self.ping, None);
        for (at, reason) in [
            (Some(self.liveness), PING_TIMEOUT),
            (self.handshake, HANDSHAKE_TIMEOUT),
            (Some(self.idle), IDLE_TIMEOUT),
            (self.expiry, TOKEN_EXPIRED),
        ] {
            if let Some(at) = at.filter(|at| *at <= next.0) {
                next = (at, Some(reason));
            }
        }
        next
    }
}

/// What woke the connection's loop.
enum Event {
    /// A frame (or the end) from the client.
    Inbound(Option<Result<Message, axum::Error>>),
    /// A frame from the room to send.
    Outbound(Bytes),
    /// The connection is closing (its peer was closed, or the server shuts down).
    Closing,
    /// The room's inbox had room for the held message (`false`: the room is gone).
    RoomReady(bool),
    /// A deadline passed.
    Deadline(Option<CloseReason>),
}

/// Runs the connection: one task both reads the client's frames (handing them to the room)
/// and writes the room's frames (in batches: feed many, flush once), plus pings and timers.
/// One task instead of a reader and a writer halves the per-connection tasks and needs no
/// lock around the socket.
///
/// The loop never blocks on the room: when the room's inbox is full the message is held and
/// reading pauses (backpressure on this client only) while writing goes on, so a busy room
/// cannot make a healthy client look slow. On return the peer has a close reason.
async fn drive<S>(
    socket: &mut S,
    outbox: &mut Outbox,
    room: &mpsc::Sender<RoomMsg>,
    peer: &Peer,
    shared: &Shared,
    expires_at: Option<SystemTime>,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let metrics = &shared.metrics;
    let config = &shared.config;
    let limits = protocol::FrameLimits::from_config(config);
    let now = Instant::now();
    let mut deadlines = Deadlines {
        liveness: now + config.ping_timeout,
        handshake: Some(now + config.handshake_timeout),
        idle: now + config.idle_timeout,
        expiry: expires_at.map(deadline_at),
        ping: now + config.ping_interval,
    };
    let mut rate = RateLimiter::new(
        config.max_messages_per_sec,
        config.message_burst,
        now.into_std(),
    );
    // A message the room's full inbox could not take yet.
    let mut held: Option<RoomMsg> = None;
    loop {
        let (deadline, expired) = deadlines.next();
        // Every future of this `select!` is stored in the connection's task while it idles, so
        // it waits on as few as possible: one token (closing includes shutdown), one timer.
        let event = if held.is_none() {
            tokio::select! {
                biased;
                _ = peer.closing().cancelled() => Event::Closing,
                _ = sleep_until(deadline) => Event::Deadline(expired),
                frame = outbox.recv() => Event::Outbound(frame),
                frame = socket.next() => Event::Inbound(frame),
            }
        } else {
            tokio::select! {
                biased;
                _ = peer.closing().cancelled() => Event::Closing,
                permit = room.reserve() => Event::RoomReady(permit.is_ok()),
                frame = outbox.recv() => Event::Outbound(frame),
            }
        };
        match event {
            Event::Deadline(Some(reason)) => {
                peer.close(reason);
                return;
            }
            Event::Deadline(None) => {
                deadlines.ping = Instant::now() + config.ping_interval;
                let ping = socket.send(Message::Ping(Bytes::new()));
                tokio::select! {
                    r = ping => if r.is_err() {
                        peer.close(CLIENT_CLOSED);
                        return;
                    },
                    _ = peer.closing().cancelled() => return,
                }
            }
            Event::Closing => {
                if peer.close_reason().is_none() {
                    peer.close(CloseReason::SHUTDOWN);
                }
                return;
            }
            Event::RoomReady(true) => {
                // The permit was released with the select; the inbox has room, and only this
                // task sends for this connection, so `try_send` normally succeeds (if another
                // connection took the place, the message is simply held again).
                if let Some(msg) = held.take() {
                    match room.try_send(msg) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(msg)) => held = Some(msg),
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            peer.close(CloseReason::INTERNAL);
                            return;
                        }
                    }
                }
            }
            Event::RoomReady(false) => {
                peer.close(CloseReason::INTERNAL);
                return;
            }
            Event::Outbound(first) => {
                let batch = write_batch(socket, outbox, first, metrics);
                tokio::select! {
                    r = batch => if r.is_err() {
                        peer.close(CLIENT_CLOSED);
                        return;
                    },
                    // Closed while a write is stuck (typically a client that stopped reading:
                    // 4001). `finish` still tries to queue the close frame, bounded.
                    _ = peer.closing().cancelled() => return,
                }
            }
            Event::Inbound(frame) => {
                let now = Instant::now();
                deadlines.liveness = now + config.ping_timeout;
                let Some(msg) = inbound(frame, peer, metrics, &limits, &mut rate, now) else {
                    return;
                };
                let Some(msg) = msg else {
                    continue;
                };
                deadlines.handshake = None;
                deadlines.idle = now + config.idle_timeout;
                match room.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(msg)) => held = Some(msg),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        peer.close(CloseReason::INTERNAL);
                        return;
                    }
                }
            }
        }
    }
}

/// Handles one frame from the client. `None`: the connection must end (the peer has its close
/// reason); `Some(None)`: nothing for the room (a ping or pong); `Some(Some(msg))`: for the room.
fn inbound(
    frame: Option<Result<Message, axum::Error>>,
    peer: &Peer,
    metrics: &crate::metrics::Metrics,
    limits: &protocol::FrameLimits,
    rate: &mut RateLimiter,
    now: Instant,
) -> Option<Option<RoomMsg>> {
    let reason = match frame {
        Some(Ok(Message::Binary(data))) => {
            metrics.bytes_in.inc_by(data.len() as u64);
            match protocol::decode_frame_with(&data, limits) {
                Ok(msgs) => {
                    metrics.messages_in.inc_by(msgs.len() as u64);
                    let count = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
                    if rate.allow(count, now.into_std()) {
                        return Some(Some(RoomMsg::Frame {
                            conn: peer.id,
                            msgs,
                        }));
                    }
                    RATE_LIMITED
                }
                Err(e) => {
                    debug!(error = %e, "bad frame");
                    CloseReason {
                        code: e.close_code(),
                        reason: e.reason(),
                        label: e.label(),
                    }
                }
            }
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Some(None),
        Some(Ok(Message::Text(_))) => TEXT_FRAME,
        Some(Ok(Message::Close(Some(frame)))) if frame.code == close::PROTOCOL_ERROR => {
            CLIENT_BAD_CLOSE
        }
        Some(Ok(Message::Close(_))) | None => CLIENT_CLOSED,
        Some(Err(e)) => {
            let reason = classify(e);
            debug!(reason = reason.label, "socket error");
            reason
        }
    };
    peer.close(reason);
    None
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

/// Ends the connection: delivers what is still queued (unless the peer is being dropped for
/// being slow) and the close frame with its reason, within a grace period.
async fn finish<S>(
    sink: &mut S,
    outbox: &mut Outbox,
    peer: &Peer,
    metrics: &crate::metrics::Metrics,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
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
