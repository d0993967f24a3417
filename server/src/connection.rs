//! The WebSocket adapter: one task per socket that reads, writes, pings and keeps timers.
//!
//! It decodes frames and hands messages to the room, drains the peer's queue in batches (feed
//! many, flush once) and sends pings. Generic over `Sink`/`Stream` so it does not care whether
//! the socket is axum's or a test double.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{Instrument, debug, debug_span};

use crate::auth::Grant;
use crate::close::{self, Close};
use crate::limits::{RateLimiter, Verdict};
use crate::peer::{Outbox, Peer};
use crate::presence::ConnId;
use crate::protocol;
use crate::registry::{JoinError, Registry};
use crate::room::RoomMsg;
use crate::state::Shared;

/// Frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a closing connection may take to deliver what is queued and its close frame; and
/// then, separately, the longest it keeps reading what the client still sends (see [`finish`]).
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// After the close frame is out, a client silent for this long has nothing more in flight: the
/// socket can be dropped without a reset.
const CLOSE_QUIET: Duration = Duration::from_millis(500);
/// Most bytes a closing connection reads and discards after its close frame; beyond it the
/// socket is dropped even if the client still sends.
const CLOSE_DRAIN_BYTES: usize = 4 << 20;

/// What the HTTP layer established about a connection before the upgrade.
#[derive(Debug)]
pub(crate) struct Admission {
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
pub(crate) fn run<S>(
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
        // Boxed: a future's size is that of its largest await, and this one and `finish` are
        // each awaited once, so keeping them out of line shrinks every idle connection.
        match Box::pin(registry.join(&name, peer.clone())).await {
            Ok(room) => {
                drive(&mut socket, &outbox, &room, &peer, &shared, expires).await;
                let _ = room.send(RoomMsg::Leave { conn: id }).await;
            }
            Err(e) => {
                debug!(error = %e, "join failed");
                peer.close(match e {
                    JoinError::Deleted => Close::Deleted,
                    JoinError::Unavailable | JoinError::LoadFailed => Close::LoadFailed,
                });
            }
        }
        // Counted when decided, not after the lingering close (which may take seconds).
        let reason = peer.close_reason().unwrap_or(Close::ClientClosed);
        metrics.closed(reason.label());
        Box::pin(finish(&mut socket, &outbox, &peer, &shared.metrics)).await;
        shared.unregister(id);
        drop(slots);
        metrics.connections.dec();
        debug!(code = reason.code(), reason = reason.label(), "closed");
    }
    .instrument(span)
}

/// Converts a wall-clock expiry into a timer deadline. A token may expire centuries from now;
/// the deadline is capped so the clock arithmetic cannot overflow.
pub(crate) fn deadline_at(at: SystemTime) -> Instant {
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .min(crate::config::MAX_DURATION);
    Instant::now() + left
}

/// The timers a connection is subject to; the earliest one that passes closes it, sends a
/// ping, or resumes reading.
pub(crate) struct Deadlines {
    /// Nothing at all (not even a pong) for `ping_timeout`.
    pub(crate) liveness: Instant,
    /// No message yet within `handshake_timeout` of the upgrade; `None` once one arrived.
    pub(crate) handshake: Option<Instant>,
    /// No message (pongs aside) for `idle_timeout`.
    pub(crate) idle: Instant,
    /// The token's `exp`.
    pub(crate) expiry: Option<Instant>,
    /// When the next ping is due.
    pub(crate) ping: Instant,
    /// Over the message rate: reading resumes then.
    pub(crate) throttled: Option<Instant>,
    /// Since when reading is paused (throttled, or the room's inbox is full). While paused the
    /// client's frames, pongs included, wait unread in the socket, so its silence is not
    /// measured: `liveness` and `idle` do not run.
    pub(crate) paused: Option<Instant>,
}

/// What a passed deadline means.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wake {
    /// Time to ping.
    Ping,
    /// The throttle pause is over.
    Resume,
    /// Close with this reason.
    Close(Close),
}

impl Deadlines {
    /// The earliest deadline, and what it means.
    pub(crate) fn next(&self) -> (Instant, Wake) {
        let mut next = (self.ping, Wake::Ping);
        if let Some(at) = self.throttled.filter(|at| *at <= next.0) {
            next = (at, Wake::Resume);
        }
        let reading = self.paused.is_none();
        for (at, reason) in [
            (Some(self.liveness).filter(|_| reading), Close::PingTimeout),
            (self.handshake, Close::HandshakeTimeout),
            (Some(self.idle).filter(|_| reading), Close::IdleTimeout),
            (self.expiry, Close::TokenExpired),
        ] {
            if let Some(at) = at.filter(|at| *at <= next.0) {
                next = (at, Wake::Close(reason));
            }
        }
        next
    }

    /// Records whether the connection reads at `now`. When reading resumes, the silence timers
    /// are pushed back by the pause: the client was not silent, we were not listening.
    pub(crate) fn set_reading(&mut self, reading: bool, now: Instant) {
        match (reading, self.paused) {
            (false, None) => self.paused = Some(now),
            (true, Some(since)) => {
                let paused = now.saturating_duration_since(since);
                self.liveness += paused;
                self.idle += paused;
                self.paused = None;
            }
            _ => {}
        }
    }
}

/// What woke the connection's loop.
pub(crate) enum Event {
    /// A frame (or the end) from the client.
    Inbound(Option<Result<Message, axum::Error>>),
    /// The write in progress finished (flushed) or failed.
    Written(Result<(), axum::Error>),
    /// The connection is closing (its peer was closed, or the server shuts down).
    Closing,
    /// The room's inbox had room for the held message (`false`: the room is gone).
    RoomReady(bool),
    /// A deadline passed.
    Deadline(Wake),
}

/// A write in progress: frames are fed one by one, then flushed once. Lives in every
/// connection's future, so it is kept small (no `Message`).
pub(crate) struct Batch {
    /// The next frame to feed (`None`: all fed, flushing).
    pub(crate) next: Option<Bytes>,
    /// A ping is due; it goes out after the current frame.
    pub(crate) ping: bool,
    /// Frames fed so far.
    pub(crate) written: u16,
}

impl Batch {
    /// A batch starting with `frame`, or with a ping if `None`.
    pub(crate) fn of(frame: Option<Bytes>) -> Batch {
        Batch {
            ping: frame.is_none(),
            next: frame,
            written: 0,
        }
    }
}

/// Runs the connection: one task both reads the client's frames (handing them to the room)
/// and writes the room's frames (in batches: feed many, flush once), plus pings and timers.
/// One task instead of a reader and a writer halves the per-connection tasks and needs no
/// lock around the socket: one branch of the `select!` polls both its directions.
///
/// Reading and writing are independent: a write stuck on a client that stopped reading does
/// not stop the reads, so every deadline (liveness, idle, token expiry) still fires and the
/// room is told at once. Reading pauses in two cases, each a backpressure on this client only
/// while writing, pings and timers go on: the room's inbox is full (the message is held), or
/// the client is over its message rate (throttled: TCP then slows the sender to the rate).
/// On return the peer has a close reason.
///
/// Why one function: it is one `select!` loop whose state (deadlines, rate, held message,
/// batch) lives in its locals, and the connection's future stores those locals while it idles;
/// the branches' work is in helpers (`inbound`, `poll_socket`, `offer`).
async fn drive<S>(
    socket: &mut S,
    outbox: &Outbox,
    room: &mpsc::Sender<RoomMsg>,
    peer: &Peer,
    shared: &Shared,
    expires_at: Option<SystemTime>,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let metrics = &shared.metrics;
    let config = &shared.config;
    let limits = protocol::frame_limits(config);
    let now = Instant::now();
    let mut deadlines = Deadlines {
        liveness: now + config.ping_timeout,
        handshake: Some(now + config.handshake_timeout),
        idle: now + config.idle_timeout,
        expiry: expires_at.map(deadline_at),
        ping: now + config.ping_interval,
        throttled: None,
        paused: None,
    };
    let mut rate = RateLimiter::new(
        config.max_messages_per_sec,
        config.message_burst,
        now.into_std(),
    );
    // A message the room's full inbox could not take yet.
    let mut held: Option<RoomMsg> = None;
    let mut batch: Option<Batch> = None;
    // Kept across turns of the loop rather than made anew in each `select!`: a fresh timer is
    // registered in the timer wheel and removed again, a fresh wait on the token is linked
    // into its waiter list and unlinked, on every wake-up, i.e. for every delivered frame.
    // A kept timer is moved by `reset` (a moved-out deadline only updates a field).
    let mut closing = std::pin::pin!(peer.closing().cancelled());
    let mut timer = std::pin::pin!(sleep_until(deadlines.next().0));
    loop {
        let reading = held.is_none() && deadlines.throttled.is_none();
        deadlines.set_reading(reading, Instant::now());
        let (deadline, wake) = deadlines.next();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        // Boxed, and only while a message is held (rare: the room is overloaded): an idle
        // connection then stores no `reserve` future, which is larger than the rest together.
        let mut reserve = held.as_ref().map(|_| Box::pin(room.reserve()));
        // Every future of this `select!` is stored in the connection's task while it idles, so
        // it waits on as few as possible: one token (closing includes shutdown), one timer,
        // and one branch for the outbox and both directions of the socket (`poll_io`).
        let event = tokio::select! {
            biased;
            _ = &mut closing => Event::Closing,
            _ = &mut timer => Event::Deadline(wake),
            permit = async {
                match reserve.as_mut() {
                    Some(reserve) => reserve.await,
                    None => std::future::pending().await,
                }
            } => Event::RoomReady(permit.is_ok()),
            event = poll_fn(|cx| poll_io(cx, socket, outbox, &mut batch, reading, metrics)) => {
                event
            }
        };
        match event {
            Event::Deadline(Wake::Close(reason)) => {
                peer.close(reason);
                return;
            }
            Event::Deadline(Wake::Ping) => {
                deadlines.ping = Instant::now() + config.ping_interval;
                match &mut batch {
                    Some(batch) => batch.ping = true,
                    None => batch = Some(Batch::of(None)),
                }
            }
            Event::Deadline(Wake::Resume) => deadlines.throttled = None,
            Event::Closing => {
                if peer.close_reason().is_none() {
                    peer.close(Close::Shutdown);
                }
                return;
            }
            Event::RoomReady(true) => {
                // The permit was released with the select; the inbox has room, and only this
                // task sends for this connection, so `try_send` normally succeeds (if another
                // connection took the place, the message is simply held again).
                if let Some(msg) = held.take()
                    && !offer(room, msg, &mut held, peer)
                {
                    return;
                }
            }
            Event::RoomReady(false) => {
                peer.close(Close::Internal);
                return;
            }
            // `poll_io` reports failed writes only (a finished one is not an event here); the
            // variant is shared with the Hocuspocus loop, which uses `poll_socket`.
            Event::Written(Ok(())) => batch = None,
            Event::Written(Err(_)) => {
                peer.close(Close::ClientClosed);
                return;
            }
            Event::Inbound(frame) => {
                let now = Instant::now();
                deadlines.liveness = now + config.ping_timeout;
                let (msg, pause) = match inbound(frame, peer, metrics, &limits, &mut rate, now) {
                    Inbound::Close => return,
                    Inbound::Control => continue,
                    Inbound::Room(msg, pause) => (msg, pause),
                };
                deadlines.handshake = None;
                deadlines.idle = now + config.idle_timeout;
                if let Some(pause) = pause {
                    deadlines.throttled = Some(now + pause);
                }
                if !offer(room, msg, &mut held, peer) {
                    return;
                }
            }
        }
    }
}

/// Hands `msg` to the room, or keeps it in `held` while the room's inbox is full. False when
/// the room is gone (the peer is then closed).
fn offer(
    room: &mpsc::Sender<RoomMsg>,
    msg: RoomMsg,
    held: &mut Option<RoomMsg>,
    peer: &Peer,
) -> bool {
    match room.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(msg)) => {
            *held = Some(msg);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            peer.close(Close::Internal);
            false
        }
    }
}

/// Batches written in one poll of [`poll_io`] before it reads and lets other tasks run.
const BATCHES_PER_POLL: usize = 4;

/// The outbox and both directions of the socket in one poll: writes what the outbox holds
/// (batches of up to [`WRITE_BATCH`] frames, one flush each) until it is empty or the socket
/// is full, then, if `reading`, polls for the next frame from the client.
///
/// A finished write does not end the poll (it is not an event for [`drive`]): the loop looks
/// for more frames at once. So a frame from the room costs the task one wake-up and one poll,
/// and the outbox's waker is registered only once the queue is found empty.
fn poll_io<S>(
    cx: &mut Context<'_>,
    socket: &mut S,
    outbox: &Outbox,
    batch: &mut Option<Batch>,
    reading: bool,
    metrics: &crate::metrics::Metrics,
) -> Poll<Event>
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let mut more = true;
    for _ in 0..BATCHES_PER_POLL {
        if batch.is_none() {
            match outbox.poll_recv(cx) {
                Poll::Ready(frame) => *batch = Some(Batch::of(Some(frame))),
                Poll::Pending => {
                    more = false;
                    break;
                }
            }
        }
        let Some(current) = batch.as_mut() else {
            more = false;
            break;
        };
        match poll_batch(cx, socket, outbox, current, metrics) {
            Poll::Ready(Ok(())) => *batch = None,
            Poll::Ready(Err(e)) => return Poll::Ready(Event::Written(Err(e))),
            // The socket wakes the task when it can take more.
            Poll::Pending => {
                more = false;
                break;
            }
        }
    }
    if reading && let Poll::Ready(frame) = socket.poll_next_unpin(cx) {
        return Poll::Ready(Event::Inbound(frame));
    }
    if more {
        // The outbox still holds frames and nothing registered a wake-up for them: come back
        // after the other tasks had their turn.
        cx.waker().wake_by_ref();
    }
    Poll::Pending
}

/// Polls both directions of the socket: the write in progress first (so it cannot starve),
/// then, if `reading`, the next frame from the client.
pub(crate) fn poll_socket<S>(
    cx: &mut Context<'_>,
    socket: &mut S,
    outbox: &Outbox,
    batch: &mut Option<Batch>,
    reading: bool,
    metrics: &crate::metrics::Metrics,
) -> Poll<Event>
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    if let Some(batch) = batch.as_mut()
        && let Poll::Ready(r) = poll_batch(cx, socket, outbox, batch, metrics)
    {
        return Poll::Ready(Event::Written(r));
    }
    if reading {
        return socket.poll_next_unpin(cx).map(Event::Inbound);
    }
    Poll::Pending
}

/// Drives the write in progress: feeds `batch`'s message and whatever else is already queued
/// (up to a batch), then flushes once. Pending while the socket cannot take more.
fn poll_batch<S>(
    cx: &mut Context<'_>,
    sink: &mut S,
    outbox: &Outbox,
    batch: &mut Batch,
    metrics: &crate::metrics::Metrics,
) -> Poll<Result<(), axum::Error>>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    loop {
        let msg = match batch.next.take() {
            Some(frame) => Message::Binary(frame),
            None if std::mem::take(&mut batch.ping) => Message::Ping(Bytes::new()),
            None => break,
        };
        match sink.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                match msg {
                    Message::Binary(frame) => batch.next = Some(frame),
                    _ => batch.ping = true,
                }
                return Poll::Pending;
            }
        }
        if let Message::Binary(frame) = &msg {
            metrics.frames_out.inc();
            metrics.bytes_out.inc_by(frame.len() as u64);
        }
        sink.start_send_unpin(msg)?;
        batch.written += 1;
        if usize::from(batch.written) < WRITE_BATCH {
            batch.next = outbox.try_recv();
        }
    }
    sink.poll_flush_unpin(cx)
}

/// What one frame from the client comes to.
enum Inbound {
    /// The connection must end; the peer has its close reason.
    Close,
    /// Nothing for the room (a ping or pong).
    Control,
    /// For the room; with a pause when the client is over its message rate.
    Room(RoomMsg, Option<Duration>),
}

/// Handles one frame from the client.
fn inbound(
    frame: Option<Result<Message, axum::Error>>,
    peer: &Peer,
    metrics: &crate::metrics::Metrics,
    limits: &protocol::FrameLimits,
    rate: &mut RateLimiter,
    now: Instant,
) -> Inbound {
    let reason = match frame {
        Some(Ok(Message::Binary(data))) => {
            match admit_frame(&data, peer.id, metrics, limits, rate, now) {
                Ok((msg, pause)) => return Inbound::Room(msg, pause),
                Err(reason) => reason,
            }
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Inbound::Control,
        Some(Ok(Message::Text(_))) => Close::TextFrame,
        // The client's close frame carried a code that may not be sent on the wire (1005, 1006,
        // 1015, below 1000, reserved ranges). tungstenite answers it with 1002 itself and hands
        // us 1002 in place of the client's code; counting it as `client_closed` hid the
        // violation. (A client that itself closes with 1002 is counted the same way.)
        Some(Ok(Message::Close(Some(frame)))) if frame.code == close::PROTOCOL_ERROR => {
            Close::WsProtocolError
        }
        Some(Ok(Message::Close(_))) | None => Close::ClientClosed,
        Some(Err(e)) => {
            let reason = classify(e);
            debug!(reason = reason.label(), "socket error");
            reason
        }
    };
    peer.close(reason);
    Inbound::Close
}

/// Decodes one binary frame of connection `conn` and charges its messages to `rate`: the
/// room message it comes to, with a pause when the client is over its message rate (counted
/// in the throttling metrics), or the close it earns (malformed content, rate abuse). The
/// one place a client's frame is judged, for the WebSocket driver and the HTTP fallback's
/// POSTs alike.
pub(crate) fn admit_frame(
    data: &[u8],
    conn: ConnId,
    metrics: &crate::metrics::Metrics,
    limits: &protocol::FrameLimits,
    rate: &mut RateLimiter,
    now: Instant,
) -> Result<(RoomMsg, Option<Duration>), Close> {
    metrics.bytes_in.inc_by(data.len() as u64);
    let msgs = protocol::decode_frame_with(data, limits).map_err(|e| {
        debug!(error = %e, "bad frame");
        Close::from(&e)
    })?;
    metrics.messages_in.inc_by(msgs.len() as u64);
    let count = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
    let pause = match rate.admit(count, now.into_std()) {
        Verdict::Pass => None,
        Verdict::Pause(pause) => {
            metrics.connections_throttled.inc();
            metrics
                .connections_throttled_seconds
                .inc_by(pause.as_secs_f64());
            Some(pause)
        }
        Verdict::Abuse => return Err(Close::RateLimited),
    };
    Ok((RoomMsg::Frame { conn, msgs }, pause))
}

/// Maps a WebSocket-layer error to the close it earns.
pub(crate) fn classify(e: axum::Error) -> Close {
    use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        // The TCP connection ended without a close frame: a network drop or a killed client,
        // like an I/O error. It used to count as `ws_protocol_error`, drowning real violations
        // in ordinary disconnects.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => Close::IoError,
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => Close::MessageTooBig,
        Some(WsError::Capacity(_)) => Close::FrameTooBig,
        Some(WsError::Protocol(_)) => Close::WsProtocolError,
        Some(WsError::Utf8(_)) => Close::InvalidUtf8,
        _ => Close::IoError,
    }
}

/// Ends the connection so that the close frame reaches the client, as a lingering close:
///
/// 1. within [`CLOSE_GRACE`], deliver what is still queued (unless the peer is being dropped
///    for being slow) and the close frame with its reason, flushed; meanwhile read and discard
///    whatever the client sends, so a client that writes without reading cannot block it;
/// 2. then keep reading and discarding until the client's close frame or the end of the
///    stream, [`CLOSE_QUIET`] without anything from the client, [`CLOSE_GRACE`] more, or
///    [`CLOSE_DRAIN_BYTES`], whichever comes first.
///
/// Only then is the socket dropped. Dropping a TCP socket with unread data in its receive
/// buffer makes the kernel send a reset and discard what it had not sent yet: a client that
/// was closed in the middle of a burst saw 1006 (ECONNRESET) instead of the close code.
/// (axum's WebSocket does not expose the TCP write half, so no FIN is sent before draining;
/// the close frame tells the client the same.)
pub(crate) async fn finish<S>(
    socket: &mut S,
    outbox: &Outbox,
    peer: &Peer,
    metrics: &crate::metrics::Metrics,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let reason = peer.close_reason().unwrap_or(Close::ClientClosed);
    let mut drain = Drain::default();
    let mut stage = if reason == Close::SlowConsumer {
        Stage::Close
    } else {
        Stage::Queued
    };
    let delivered = timeout(
        CLOSE_GRACE,
        poll_fn(|cx| {
            while !drain.done && drain.poll_one(cx, socket).is_ready() {}
            poll_close_frame(cx, socket, outbox, &mut stage, reason, metrics)
        }),
    )
    .await;
    if delivered.is_err() {
        // The close frame could not even be written: the client does not read.
        return;
    }
    let end = Instant::now() + CLOSE_GRACE;
    while !drain.done {
        let quiet = (Instant::now() + CLOSE_QUIET).min(end);
        if timeout_at(quiet, poll_fn(|cx| drain.poll_one(cx, socket)))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// How far [`finish`] got with its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Delivering the frames still queued.
    Queued,
    /// Sending the close frame.
    Close,
    /// Flushing it.
    Flush,
}

/// Writes the queued frames (from [`Stage::Queued`]), the close frame and flushes it.
fn poll_close_frame<S>(
    cx: &mut Context<'_>,
    sink: &mut S,
    outbox: &Outbox,
    stage: &mut Stage,
    reason: Close,
    metrics: &crate::metrics::Metrics,
) -> Poll<()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    loop {
        match *stage {
            Stage::Queued | Stage::Close => {
                match sink.poll_ready_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Refused once the client has sent its close frame; the reply tungstenite
                    // queued for it is flushed below all the same.
                    Poll::Ready(Err(_)) => {
                        *stage = Stage::Flush;
                        continue;
                    }
                    Poll::Ready(Ok(())) => {}
                }
                let queued = match *stage {
                    Stage::Queued => outbox.try_recv(),
                    _ => None,
                };
                let msg = match queued {
                    Some(frame) => {
                        metrics.frames_out.inc();
                        metrics.bytes_out.inc_by(frame.len() as u64);
                        Message::Binary(frame)
                    }
                    None => {
                        *stage = Stage::Close;
                        Message::Close(Some(CloseFrame {
                            code: reason.code(),
                            reason: reason.reason().into(),
                        }))
                    }
                };
                let close = matches!(msg, Message::Close(_));
                // When the client closed first, tungstenite refuses our close frame
                // (`SendAfterClosing`) but has already queued its reply echoing the client's
                // code; only flushing sends that reply, so an error must not skip it.
                if sink.start_send_unpin(msg).is_err() || close {
                    *stage = Stage::Flush;
                }
            }
            // `poll_close` flushes (it does not end the TCP connection; dropping does).
            Stage::Flush => return sink.poll_close_unpin(cx).map(|_| ()),
        }
    }
}

/// The reading side of [`finish`]: reads and discards.
#[derive(Debug, Default)]
struct Drain {
    /// Bytes discarded so far.
    bytes: usize,
    /// The client's close frame or the end of the stream arrived, or the byte bound passed.
    done: bool,
}

impl Drain {
    /// Reads one frame and discards it; ready once one was read (or reading is over).
    fn poll_one<S>(&mut self, cx: &mut Context<'_>, socket: &mut S) -> Poll<()>
    where
        S: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        if self.done {
            return Poll::Ready(());
        }
        let frame = std::task::ready!(socket.poll_next_unpin(cx));
        // Every frame counts its header too, so a stream of empty pings is bounded as well.
        const HEADER: usize = 2;
        match frame {
            Some(Ok(Message::Binary(data))) => self.bytes += HEADER + data.len(),
            Some(Ok(Message::Text(text))) => self.bytes += HEADER + text.len(),
            Some(Ok(Message::Ping(data) | Message::Pong(data))) => {
                self.bytes += HEADER + data.len();
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => self.done = true,
        }
        if self.bytes > CLOSE_DRAIN_BYTES {
            self.done = true;
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use crate::storage::Storage;
    use std::pin::Pin;

    /// A socket that never delivers anything and accepts every write.
    struct Null;

    impl Stream for Null {
        type Item = Result<Message, axum::Error>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }

    impl Sink<Message> for Null {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn silence_is_not_measured_while_reading_is_paused() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut d = Deadlines {
            liveness: t0 + secs(25),
            handshake: None,
            idle: t0 + secs(60),
            expiry: Some(t0 + secs(40)),
            ping: t0 + secs(100),
            throttled: Some(t0 + secs(30)),
            paused: None,
        };
        assert!(
            matches!(d.next(), (at, Wake::Close(r)) if at == t0 + secs(25) && r == Close::PingTimeout)
        );
        d.set_reading(false, t0 + secs(1));
        // Paused: no ping timeout, no idle; the throttle end and the token expiry still run.
        assert!(matches!(d.next(), (at, Wake::Resume) if at == t0 + secs(30)));
        d.throttled = None;
        assert!(
            matches!(d.next(), (at, Wake::Close(r)) if at == t0 + secs(40) && r == Close::TokenExpired)
        );
        // Reading again after 29 s of pause: the silence timers moved by the pause.
        d.set_reading(true, t0 + secs(30));
        assert_eq!(d.liveness, t0 + secs(54));
        assert_eq!(d.idle, t0 + secs(89));
        assert!(
            matches!(d.next(), (at, Wake::Close(r)) if at == t0 + secs(40) && r == Close::TokenExpired)
        );
    }

    /// The connection future is what every idle connection holds (BENCHMARKS.md: ~4 KiB per
    /// idle connection in all); keep it small.
    #[tokio::test]
    async fn connection_future_stays_small() {
        let config = crate::Config {
            database_url: Some("memory".into()),
            ..crate::Config::default()
        };
        let storage = Storage::open(&config).await.expect("memory storage");
        let shared = Shared::new(config, storage, Authenticator::open(), None, None);
        let registry = Registry::new(shared.clone());
        let admission = Admission {
            name: "size".into(),
            grant: Grant::open(),
            slots: Vec::new(),
        };
        let future = run(Null, admission, shared, registry);
        let size = std::mem::size_of_val(&future);
        println!("connection future: {size} bytes");
        assert!(size <= 1024, "connection future grew to {size} bytes");
    }
}
