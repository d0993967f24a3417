//! Fallback sessions: the table POSTs find them in, and the event stream that is a session's
//! outgoing half.
//!
//! A session's peer is an ordinary peer of its room (bounded queue, 4001 when it overflows);
//! the stream drains that queue into Server-Sent Events, sends heartbeats, keeps the
//! handshake, idle and token-expiry deadlines of a WebSocket connection, and ends with an
//! `event: close` carrying the catalogue's code and reason. When the stream is dropped (it
//! ended, or the client went away) the session leaves its room and its table entry becomes a
//! tombstone, so a late POST learns that (and why) the session is closed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::response::sse::Event;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::close::Close;
use crate::connection::{Deadlines, Wake};
use crate::http::Slots;
use crate::limits::RateLimiter;
use crate::peer::{Outbox, Peer};
use crate::room::RoomMsg;
use crate::state::Shared;

/// A session id: 128 random bits, unguessable (it is what authorizes a POST).
pub(crate) type SessionId = u128;

/// How many closed sessions are remembered (for 410 instead of 404).
const TOMBSTONES: usize = 4096;

/// Live fallback sessions by id, and the most recently closed ones.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    live: HashMap<SessionId, Arc<Session>>,
    /// Closed sessions, oldest first, with why they closed.
    ended: VecDeque<(SessionId, Close)>,
}

/// What a session id refers to.
pub(crate) enum Lookup {
    /// A live session.
    Live(Arc<Session>),
    /// A session that closed with this reason.
    Ended(Close),
    /// Nothing (never existed, or closed long ago).
    Unknown,
}

impl Sessions {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session under a fresh random id and returns the id.
    pub(crate) fn insert(&self, session: Arc<Session>) -> Result<SessionId, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let id = u128::from_le_bytes(bytes);
        self.table().live.insert(id, session);
        Ok(id)
    }

    /// Finds a session. A live session whose peer is already closing counts as ended.
    pub(crate) fn find(&self, id: SessionId) -> Lookup {
        let table = self.table();
        if let Some(session) = table.live.get(&id) {
            return match session.peer.close_reason() {
                Some(reason) => Lookup::Ended(reason),
                None if session.peer.closing().is_cancelled() => Lookup::Ended(Close::Shutdown),
                None => Lookup::Live(session.clone()),
            };
        }
        match table.ended.iter().find(|(ended, _)| *ended == id) {
            Some((_, reason)) => Lookup::Ended(*reason),
            None => Lookup::Unknown,
        }
    }

    /// Moves a session from the live table to the tombstones.
    fn end(&self, id: SessionId, reason: Close) {
        let mut table = self.table();
        table.live.remove(&id);
        if table.ended.len() >= TOMBSTONES {
            table.ended.pop_front();
        }
        table.ended.push_back((id, reason));
    }

    /// Live sessions (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().live.len()
    }
}

/// A session as its POSTs see it.
#[derive(Debug)]
pub(crate) struct Session {
    /// The document (a POST must name the same one).
    pub(crate) name: Arc<str>,
    /// Its peer in the room.
    pub(crate) peer: Arc<Peer>,
    /// The room's inbox.
    pub(crate) room: mpsc::Sender<RoomMsg>,
    /// The message rate budget; locked for the whole of a POST, so the frames of concurrent
    /// POSTs enter the room one after the other, never interleaved.
    pub(crate) input: tokio::sync::Mutex<RateLimiter>,
    /// When the last message arrived by POST (`None`: none yet, the handshake is pending).
    last_message: Mutex<Option<Instant>>,
}

impl Session {
    /// A session of `peer` in the room `room` of document `name`.
    pub(crate) fn new(
        name: Arc<str>,
        peer: Arc<Peer>,
        room: mpsc::Sender<RoomMsg>,
        rate: RateLimiter,
    ) -> Session {
        Session {
            name,
            peer,
            room,
            input: tokio::sync::Mutex::new(rate),
            last_message: Mutex::new(None),
        }
    }

    /// Records that a message arrived (ends the handshake, restarts the idle timer).
    pub(crate) fn touch(&self, now: Instant) {
        *self.last_message.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    fn last_message(&self) -> Option<Instant> {
        *self.last_message.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The outgoing half of a session: what its event stream is built from. Dropping it ends the
/// session (see the module comment).
pub(crate) struct Feed {
    /// The session's id.
    pub(crate) id: SessionId,
    /// The session.
    pub(crate) session: Arc<Session>,
    /// The peer's queue.
    pub(crate) outbox: Outbox,
    /// The table the session is in.
    pub(crate) sessions: Arc<Sessions>,
    /// Process-wide state (configuration, metrics, live peers).
    pub(crate) shared: Arc<Shared>,
    /// The `data` of the first event.
    pub(crate) hello: serde_json::Value,
    /// When the session opened.
    pub(crate) opened: Instant,
    /// The token's expiry.
    pub(crate) expiry: Option<Instant>,
    /// The next heartbeat.
    pub(crate) heartbeat: Instant,
    /// How far the stream is.
    pub(crate) stage: Stage,
    /// Places held in the connection limits.
    pub(crate) _slots: Slots,
}

/// How far a session's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The `session` event is next.
    Hello,
    /// Relaying the peer's frames.
    Open,
    /// Closed for this reason: sending what is still queued, then `event: close`.
    Closing(Close),
    /// Over.
    Done,
}

impl Feed {
    /// The next event of the stream; `None` once the close event was sent.
    pub(crate) async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.stage {
                Stage::Done => return None,
                Stage::Hello => {
                    self.stage = Stage::Open;
                    let event = Event::default().event("session").json_data(&self.hello);
                    return Some(event.unwrap_or_else(|_| Event::default().event("session")));
                }
                Stage::Closing(reason) => {
                    // A slow consumer is not sent its backlog: it resyncs anyway.
                    if reason != Close::SlowConsumer
                        && let Some(frame) = self.outbox.try_recv()
                    {
                        return Some(self.frame_event(&frame));
                    }
                    self.stage = Stage::Done;
                    return Some(close_event(reason));
                }
                Stage::Open => {
                    if let Some(event) = self.wait().await {
                        return Some(event);
                    }
                }
            }
        }
    }

    /// Waits for the next frame, heartbeat or close; `None` when the session started closing.
    async fn wait(&mut self) -> Option<Event> {
        let (deadline, wake) = self.deadlines().next();
        let peer = self.session.peer.clone();
        tokio::select! {
            biased;
            _ = peer.closing().cancelled() => {
                // No reason: the server is shutting down (the parent token was cancelled).
                let reason = peer.close_reason().unwrap_or(Close::Shutdown);
                peer.close(reason);
                self.stage = Stage::Closing(reason);
                None
            }
            _ = sleep_until(deadline) => match wake {
                Wake::Ping => {
                    self.heartbeat = Instant::now() + self.shared.config.ping_interval;
                    Some(Event::default().comment("heartbeat"))
                }
                // A POST may have moved the handshake or idle deadline meanwhile: the next
                // round computes them again, and closes only if they really passed.
                Wake::Close(reason) if self.passed(reason) => {
                    peer.close(reason);
                    None
                }
                Wake::Close(_) | Wake::Resume => None,
            },
            frame = self.outbox.recv() => Some(self.frame_event(&frame)),
        }
    }

    /// The session's timers in the shape a WebSocket connection's take. There is no ping
    /// timeout: a client that went away is noticed when a heartbeat cannot be written.
    fn deadlines(&self) -> Deadlines {
        let config = &self.shared.config;
        let last = self.session.last_message();
        let never = self.opened + crate::config::MAX_DURATION;
        Deadlines {
            liveness: never,
            handshake: match last {
                None => Some(self.opened + config.handshake_timeout),
                Some(_) => None,
            },
            idle: last.unwrap_or(self.opened) + config.idle_timeout,
            expiry: self.expiry,
            ping: self.heartbeat,
            throttled: None,
            paused: None,
        }
    }

    /// Whether the deadline that closes with `reason` has passed, by the current timers.
    fn passed(&self, reason: Close) -> bool {
        match self.deadlines().next() {
            (at, Wake::Close(r)) => r == reason && at <= Instant::now(),
            _ => false,
        }
    }

    /// One outgoing y-websocket frame as an event: base64 in `data`.
    fn frame_event(&self, frame: &Bytes) -> Event {
        let metrics = &self.shared.metrics;
        metrics.frames_out.inc();
        metrics.bytes_out.inc_by(frame.len() as u64);
        Event::default().data(STANDARD.encode(frame))
    }
}

/// `event: close` with `{code, reason}` from the close catalogue.
fn close_event(reason: Close) -> Event {
    let data = serde_json::json!({ "code": reason.code(), "reason": reason.reason() });
    Event::default()
        .event("close")
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("close"))
}

impl Drop for Feed {
    fn drop(&mut self) {
        let peer = &self.session.peer;
        // Dropped without a reason: the client went away (the stream could not be written).
        let reason = match (self.stage, peer.close_reason()) {
            (_, Some(reason)) => reason,
            (Stage::Closing(reason), None) => reason,
            _ => Close::ClientClosed,
        };
        peer.close(reason);
        let metrics = &self.shared.metrics;
        metrics.closed(reason.label());
        metrics.connections.dec();
        self.shared.unregister(peer.id);
        self.sessions.end(self.id, reason);
        crate::room::leave_later(self.session.room.clone(), peer.id);
        tracing::debug!(
            session = peer.id,
            code = reason.code(),
            reason = reason.label(),
            "fallback session closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_session_is_remembered_as_ended() {
        let sessions = Sessions::default();
        let (peer, _outbox) = Peer::new(1, 8, 1 << 20);
        let (room, _inbox) = mpsc::channel(1);
        let rate = RateLimiter::new(0, 0, std::time::Instant::now());
        let session = Arc::new(Session::new("d".into(), Arc::new(peer), room, rate));
        let id = sessions.insert(session.clone()).expect("random id");
        assert!(matches!(sessions.find(id), Lookup::Live(_)));
        assert!(matches!(sessions.find(id ^ 1), Lookup::Unknown));
        session
            .peer
            .close(Close::Malformed(crate::close::Malformed::Truncated));
        assert!(matches!(sessions.find(id), Lookup::Ended(_)));
        sessions.end(id, Close::ClientClosed);
        assert_eq!(sessions.len(), 0);
        assert!(matches!(
            sessions.find(id),
            Lookup::Ended(Close::ClientClosed)
        ));
    }
}
