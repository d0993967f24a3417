//! The Hocuspocus protocol (`@hocuspocus/provider` 4.x): one socket, many documents.
//!
//! Each document on the socket is a [`Session`]: it starts with the provider's auth message
//! (the token is checked like `?token=`, per document), then joins its room as a peer of its
//! own. Its peer writes into the socket's single queue with the document's routing key in front
//! of every frame ([`crate::peer::Outbox::peer`]), so rooms stay unaware of the protocol. The
//! room answers every update of such a peer with a sync-status ack once the update is durable,
//! so the provider's `unsyncedChanges` reaching 0 means "saved".
//!
//! What closes a y-websocket connection closes one session here (a type-7 close message with
//! the code and reason), except what concerns the socket itself: broken envelopes, WebSocket
//! errors, rate abuse, timeouts, a full queue (the socket is the slow one), shutdown.

mod session;

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;

use axum::extract::ws::Message;
use bytes::Bytes;
use futures::{Sink, Stream};
use tandem_wire::hocuspocus::{self as hp, EnvelopeError};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, debug_span};

use crate::close::{self, Close, Malformed};
use crate::connection::{Batch, Deadlines, Event, Wake, classify, finish, poll_socket};
use crate::limits::{RateLimiter, Verdict};
use crate::peer::{Outbox, Peer};
use crate::protocol;
use crate::registry::{JoinError, Registry};
use crate::room::{RoomMsg, leave_later};
use crate::state::Shared;

use self::session::{Joined, Session};

/// Most documents one socket may have open at once; an auth message beyond it is answered
/// with permission denied.
pub(crate) const MAX_DOCUMENTS: usize = 256;
/// Most messages a document may send while its room is still loading; beyond, it is closed.
const MAX_HELD: usize = 256;

/// Places the socket holds in the connection limits (the per-address slot).
pub(crate) type Slots = Vec<Box<dyn std::any::Any + Send + Sync>>;

/// Serves one Hocuspocus socket until it closes.
pub(crate) fn run<S>(
    socket: S,
    slots: Slots,
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
    let span = debug_span!("hocuspocus", id);
    async move {
        let metrics = &shared.metrics;
        metrics.connections.inc();
        metrics.connections_accepted.inc();
        debug!("open");
        let config = &shared.config;
        let (peer, outbox) = Peer::new(id, config.outbox_frames, config.outbox_bytes);
        let peer = peer.within(&shared.shutdown);
        let mut socket = std::pin::pin!(socket);
        let mut conn = Socket {
            shared: &shared,
            registry: &registry,
            outbox: &outbox,
            peer: &peer,
            sessions: HashMap::new(),
            joins: mpsc::channel(MAX_DOCUMENTS),
            held: None,
        };
        Box::pin(conn.drive(&mut socket)).await;
        let reason = peer.close_reason().unwrap_or(Close::ClientClosed);
        metrics.closed(reason.label());
        conn.leave_all().await;
        Box::pin(finish(&mut socket, &outbox, &peer, metrics)).await;
        drop(slots);
        metrics.connections.dec();
        debug!(code = reason.code(), reason = reason.label(), "closed");
    }
    .instrument(span)
}

/// One socket's state.
struct Socket<'a> {
    shared: &'a Arc<Shared>,
    registry: &'a Arc<Registry>,
    outbox: &'a Outbox,
    /// The socket's own peer: its close reason is the socket's; it queues the frames that
    /// belong to no room (auth replies, close messages, pings).
    peer: &'a Peer,
    /// Open documents by routing key.
    sessions: HashMap<Arc<str>, Session>,
    /// Join results from the tasks that load rooms (a room may take a while to load; the
    /// socket keeps serving its other documents meanwhile).
    joins: (mpsc::Sender<Joined>, mpsc::Receiver<Joined>),
    /// A message a room's full inbox could not take yet; reading pauses until it can.
    held: Option<(mpsc::Sender<RoomMsg>, RoomMsg)>,
}

/// What woke the socket's loop.
enum Wakeup {
    /// One of the connection events shared with y-websocket connections.
    Base(Event),
    /// The socket's queue has frames, or a document's peer closed (`None`).
    Queue(Option<Bytes>),
    /// A room was joined, or could not be.
    Joined(Joined),
}

impl Socket<'_> {
    /// The loop: reads frames and routes them to sessions, writes the queue in batches, pings,
    /// and keeps the timers. On return the socket's peer has its close reason.
    ///
    /// Why one function: like `connection::drive`, it is one `select!` loop whose state (the
    /// deadlines, the held frame, the write batch) lives in its locals while the socket idles;
    /// each branch's work is in a helper.
    async fn drive<S>(&mut self, socket: &mut S)
    where
        S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
    {
        let shared = self.shared;
        let config = &shared.config;
        let metrics = &shared.metrics;
        let limits = protocol::frame_limits(config);
        let now = Instant::now();
        let mut deadlines = Deadlines {
            liveness: now + config.ping_timeout,
            handshake: Some(now + config.handshake_timeout),
            idle: now + config.idle_timeout,
            expiry: None,
            ping: now + config.ping_interval,
            throttled: None,
            paused: None,
        };
        let mut rate = RateLimiter::new(
            config.max_messages_per_sec,
            config.message_burst,
            now.into_std(),
        );
        let mut batch: Option<Batch> = None;
        loop {
            if self.reap() {
                return;
            }
            deadlines.expiry = self.sessions.values().filter_map(|s| s.expires).min();
            let reading = self.held.is_none() && deadlines.throttled.is_none();
            deadlines.set_reading(reading, Instant::now());
            let (deadline, wake) = deadlines.next();
            let writing = batch.is_some();
            let outbox = self.outbox;
            let mut reserve = self.held.as_ref().map(|(room, _)| Box::pin(room.reserve()));
            let event = tokio::select! {
                biased;
                _ = self.peer.closing().cancelled() => Wakeup::Base(Event::Closing),
                _ = sleep_until(deadline) => Wakeup::Base(Event::Deadline(wake)),
                Some(joined) = self.joins.1.recv() => Wakeup::Joined(joined),
                frame = outbox.next_or_closed(), if !writing => Wakeup::Queue(frame),
                permit = async {
                    match reserve.as_mut() {
                        Some(reserve) => reserve.await,
                        None => std::future::pending().await,
                    }
                } => Wakeup::Base(Event::RoomReady(permit.is_ok())),
                event = poll_fn(|cx| poll_socket(cx, socket, outbox, &mut batch, reading, metrics)) => {
                    Wakeup::Base(event)
                }
            };
            drop(reserve);
            match event {
                Wakeup::Queue(Some(frame)) => batch = Some(Batch::of(Some(frame))),
                Wakeup::Queue(None) => {}
                Wakeup::Joined(joined) => self.joined(joined),
                Wakeup::Base(Event::Deadline(Wake::Close(Close::TokenExpired))) => {
                    self.expire(Instant::now());
                }
                Wakeup::Base(Event::Deadline(Wake::Close(reason))) => {
                    self.peer.close(reason);
                    return;
                }
                Wakeup::Base(Event::Deadline(Wake::Ping)) => {
                    deadlines.ping = Instant::now() + config.ping_interval;
                    // The provider only notices silence at the application level: without a
                    // message for 30 s it reconnects. It answers this ping with a pong.
                    self.peer.push(Bytes::from_static(&[hp::PING]));
                    match &mut batch {
                        Some(batch) => batch.ping = true,
                        None => batch = Some(Batch::of(None)),
                    }
                }
                Wakeup::Base(Event::Deadline(Wake::Resume)) => deadlines.throttled = None,
                Wakeup::Base(Event::Closing) => {
                    if self.peer.close_reason().is_none() {
                        self.peer.close(Close::Shutdown);
                    }
                    return;
                }
                Wakeup::Base(Event::RoomReady(ok)) => {
                    if let Some((room, msg)) = self.held.take() {
                        match room.try_send(msg) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(msg)) if ok => {
                                self.held = Some((room, msg));
                            }
                            // The room is gone: that document's session ends.
                            Err(_) => self.room_gone(&room),
                        }
                    }
                }
                Wakeup::Base(Event::Written(Ok(()))) => batch = None,
                Wakeup::Base(Event::Written(Err(_))) => {
                    self.peer.close(Close::ClientClosed);
                    return;
                }
                Wakeup::Base(Event::Inbound(frame)) => {
                    let now = Instant::now();
                    deadlines.liveness = now + config.ping_timeout;
                    let data = match frame {
                        Some(Ok(Message::Binary(data))) => data,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        other => {
                            self.peer.close(ws_close(other));
                            return;
                        }
                    };
                    metrics.bytes_in.inc_by(data.len() as u64);
                    if data[..] == [hp::PONG] {
                        continue;
                    }
                    deadlines.handshake = None;
                    deadlines.idle = now + config.idle_timeout;
                    match rate.admit(1, now.into_std()) {
                        Verdict::Pass => {}
                        Verdict::Pause(pause) => {
                            metrics.connections_throttled.inc();
                            metrics
                                .connections_throttled_seconds
                                .inc_by(pause.as_secs_f64());
                            deadlines.throttled = Some(now + pause);
                        }
                        Verdict::Abuse => {
                            self.peer.close(Close::RateLimited);
                            return;
                        }
                    }
                    if let Err(reason) = self.frame(&data, &limits) {
                        debug!(reason = reason.label(), "bad envelope");
                        self.peer.close(reason);
                        return;
                    }
                }
            }
        }
    }

    /// Handles one binary frame. `Err` closes the socket: the envelope itself is broken.
    fn frame(&mut self, data: &[u8], limits: &protocol::FrameLimits) -> Result<(), Close> {
        if data[..] == [hp::PING] {
            self.peer.push(Bytes::from_static(&[hp::PONG]));
            return Ok(());
        }
        let env = hp::envelope(data).map_err(envelope_close)?;
        match env.kind {
            hp::AUTH => {
                if let Some(token) = hp::read_token(env.body).map_err(envelope_close)? {
                    self.auth(env.key, token);
                }
            }
            hp::CLOSE => self.detach(env.key),
            hp::SYNC | hp::SYNC_REPLY | hp::AWARENESS | hp::QUERY_AWARENESS => {
                self.document_message(env.key, env.kind, env.body, limits);
            }
            // Stateless messages to the server have no hook to go to; sync status is
            // server-to-client. Both are dropped.
            hp::STATELESS | hp::SYNC_STATUS => {}
            _ => {
                if let Some(session) = self.sessions.get(env.key) {
                    session
                        .peer
                        .close(Close::Malformed(Malformed::UnknownMessageType));
                }
            }
        }
        Ok(())
    }

    /// A y-websocket message for a document: decoded with the y-websocket rules, then given
    /// to its room (or held while the room loads). Messages for a document without a session
    /// are dropped: the provider keeps sending a closed document's edits until it detaches.
    fn document_message(
        &mut self,
        key: &str,
        kind: u64,
        body: &[u8],
        limits: &protocol::FrameLimits,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            debug!(
                key,
                "message for a document not open on this socket; dropped"
            );
            return;
        };
        let kind = if kind == hp::SYNC_REPLY {
            hp::SYNC
        } else {
            kind
        };
        let mut message = Vec::with_capacity(1 + body.len());
        tandem_wire::put_var_uint(&mut message, kind);
        message.extend_from_slice(body);
        let msgs = match protocol::decode_frame_with(&message, limits) {
            Ok(msgs) => msgs,
            Err(e) => {
                debug!(key, error = %e, "bad message; closing the document");
                session.peer.close(Close::from(&e));
                return;
            }
        };
        self.shared.metrics.messages_in.inc_by(msgs.len() as u64);
        match &session.room {
            None => {
                if session.held.len() + msgs.len() > MAX_HELD {
                    session
                        .peer
                        .close(Close::Malformed(Malformed::TooManyMessages));
                } else {
                    session.held.extend(msgs);
                }
            }
            Some(room) => {
                let room = room.clone();
                let msg = RoomMsg::Frame {
                    conn: session.peer.id,
                    msgs,
                };
                self.send_room(room, msg);
            }
        }
    }

    /// Gives a message to a room; holds it (pausing reads) when the room's inbox is full.
    fn send_room(&mut self, room: mpsc::Sender<RoomMsg>, msg: RoomMsg) {
        match room.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => self.held = Some((room, msg)),
            Err(mpsc::error::TrySendError::Closed(_)) => self.room_gone(&room),
        }
    }

    /// A room stopped taking messages: its sessions close with 1011, like y-websocket's.
    fn room_gone(&mut self, room: &mpsc::Sender<RoomMsg>) {
        for session in self.sessions.values() {
            if session.room.as_ref().is_some_and(|r| r.same_channel(room)) {
                session.peer.close(Close::Internal);
            }
        }
    }

    /// The provider's auth message for `key`: checks it, answers, and starts the join.
    fn auth(&mut self, key: &str, token: &str) {
        if let Some(session) = self.sessions.get_mut(key) {
            // Sent again on an open document (`provider.sendToken()`): a fresh token extends
            // the session past the old one's expiry; the rights it started with stay.
            match session::renew(self.shared, session, key, token) {
                Ok(scope) => {
                    self.peer.push(Bytes::from(hp::authenticated(key, scope)));
                }
                Err((reason, label)) => self.deny(key, &reason, label),
            }
            return;
        }
        if self.sessions.len() >= MAX_DOCUMENTS {
            self.deny(
                key,
                "too many documents on one connection",
                "per_socket_limit",
            );
            return;
        }
        let opened = session::open(self.shared, self.outbox, key, token);
        let (session, scope) = match opened {
            Ok(opened) => opened,
            Err((reason, label)) => {
                self.deny(key, &reason, label);
                return;
            }
        };
        self.peer.push(Bytes::from(hp::authenticated(key, scope)));
        session.start_join(self.registry, key, self.joins.0.clone());
        self.sessions.insert(Arc::from(key), session);
    }

    /// Answers an auth message with permission denied.
    fn deny(&self, key: &str, reason: &str, label: &'static str) {
        self.shared.metrics.refused(label);
        debug!(key, reason, "document refused");
        self.peer
            .push(Bytes::from(hp::permission_denied(key, reason)));
    }

    /// A room answered a session's join.
    fn joined(&mut self, joined: Joined) {
        let Joined { key, conn, result } = joined;
        let session = self.sessions.get_mut(&key).filter(|s| s.peer.id == conn);
        let Some(session) = session else {
            // Detached (or closed) while loading: leave the room it just joined.
            if let Ok(room) = result {
                leave_later(room, conn);
            }
            return;
        };
        match result {
            Ok(room) => {
                let held = std::mem::take(&mut session.held);
                session.room = Some(room.clone());
                if !held.is_empty() {
                    self.send_room(room, RoomMsg::Frame { conn, msgs: held });
                }
            }
            Err(e) => {
                debug!(key = %key, error = %e, "join failed");
                session.peer.close(match e {
                    JoinError::Deleted => Close::Deleted,
                    JoinError::Unavailable | JoinError::LoadFailed => Close::LoadFailed,
                });
            }
        }
    }

    /// The provider detached `key` (type 7 from the client): the session ends quietly.
    fn detach(&mut self, key: &str) {
        if let Some(session) = self.sessions.remove(key) {
            self.end(session, Close::ClientClosed);
        }
    }

    /// Closes the sessions whose token expired by `now`.
    fn expire(&mut self, now: Instant) {
        for session in self.sessions.values() {
            if session.expires.is_some_and(|at| at <= now) {
                session.peer.close(Close::TokenExpired);
            }
        }
    }

    /// Ends the sessions whose peer was closed (by its room, an administrator, a revocation,
    /// or this task), telling the provider with a close message. Returns `true` when the
    /// socket must close instead (a session overflowed the shared queue).
    fn reap(&mut self) -> bool {
        let closed: Vec<(Arc<str>, Option<Close>)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer.closing().is_cancelled())
            .map(|(key, s)| (key.clone(), s.peer.close_reason()))
            .collect();
        for (key, reason) in closed {
            match reason {
                // Shutdown: the socket closes as a whole.
                None => continue,
                // The queue is the socket's: the socket is what is slow.
                Some(Close::SlowConsumer) => {
                    self.peer.close(Close::SlowConsumer);
                    return true;
                }
                Some(reason) => {
                    if let Some(session) = self.sessions.remove(&key) {
                        self.shared.metrics.closed(reason.label());
                        let text = format!("{} {}", reason.code(), reason.reason());
                        self.peer
                            .push(Bytes::from(hp::closed(&key, text.trim_end())));
                        self.end(session, reason);
                    }
                }
            }
        }
        false
    }

    /// Takes a session out of its room and out of the server's live peers.
    fn end(&mut self, session: Session, reason: Close) {
        session.peer.close(reason);
        self.shared.unregister(session.peer.id);
        if let Some(room) = session.room {
            if self.held.as_ref().is_some_and(|(held_room, msg)| {
                held_room.same_channel(&room)
                    && matches!(msg, RoomMsg::Frame { conn, .. } if *conn == session.peer.id)
            }) {
                self.held = None;
            }
            leave_later(room, session.peer.id);
        }
    }

    /// The socket is closing: every session leaves its room.
    async fn leave_all(&mut self) {
        let reason = self.peer.close_reason().unwrap_or(Close::ClientClosed);
        for (_, session) in self.sessions.drain() {
            session.peer.close(reason);
            self.shared.unregister(session.peer.id);
            if let Some(room) = session.room {
                let _ = room
                    .send(RoomMsg::Leave {
                        conn: session.peer.id,
                    })
                    .await;
            }
        }
    }
}

/// The close a socket-level event that is not a binary frame earns.
fn ws_close(frame: Option<Result<Message, axum::Error>>) -> Close {
    match frame {
        Some(Ok(Message::Text(_))) => Close::TextFrame,
        Some(Ok(Message::Close(Some(frame)))) if frame.code == close::PROTOCOL_ERROR => {
            Close::WsProtocolError
        }
        Some(Err(e)) => classify(e),
        _ => Close::ClientClosed,
    }
}

/// The close a broken envelope earns (the socket's framing cannot be trusted any more).
fn envelope_close(e: EnvelopeError) -> Close {
    match e {
        EnvelopeError::Read(tandem_wire::ReadError::Truncated(_)) => {
            Close::Malformed(Malformed::Truncated)
        }
        EnvelopeError::Read(tandem_wire::ReadError::BadVarint(_)) => {
            Close::Malformed(Malformed::BadVarint)
        }
        EnvelopeError::NotUtf8 => Close::InvalidUtf8,
    }
}
