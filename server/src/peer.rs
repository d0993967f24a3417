//! A connection as a room sees it: a bounded outgoing queue and a way to close it.
//!
//! The room never waits on a connection. It pushes shared frames with `try_send`; a connection
//! whose queue is full (by frames or by bytes) is closed with [`close::SLOW_CONSUMER`] so its
//! provider reconnects and resyncs from its state vector. Nothing is dropped silently.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::close;
use crate::presence::ConnId;

/// Why a connection is being closed: a WebSocket close code, a short reason sent to the client
/// (at most 123 bytes) and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code (see [`crate::close`]).
    pub code: u16,
    /// Reason text sent in the close frame.
    pub reason: &'static str,
    /// Label for the `tandem_connections_closed_total` metric.
    pub label: &'static str,
}

impl CloseReason {
    /// The outgoing queue overflowed.
    pub const SLOW_CONSUMER: CloseReason = CloseReason {
        code: close::SLOW_CONSUMER,
        reason: "too slow: outgoing queue full, reconnect to resync",
        label: "slow_consumer",
    };
    /// The server is shutting down.
    pub const SHUTDOWN: CloseReason = CloseReason {
        code: close::GOING_AWAY,
        reason: "server shutting down",
        label: "shutdown",
    };
    /// The document failed in a way that needs a reload.
    pub const INTERNAL: CloseReason = CloseReason {
        code: close::INTERNAL_ERROR,
        reason: "internal error, reconnect to resync",
        label: "internal_error",
    };
}

/// The room-facing half of a connection.
#[derive(Debug)]
pub struct Peer {
    /// Unique id of this connection.
    pub id: ConnId,
    /// Authenticated user id, recorded as the author of this connection's updates.
    pub user: Option<String>,
    /// Token id, for revocation.
    pub token_id: Option<String>,
    /// Read-only connections' updates are ignored.
    pub read_only: bool,
    outbox: mpsc::Sender<Bytes>,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    close: OnceLock<CloseReason>,
    closing: CancellationToken,
}

impl Peer {
    /// Creates a peer and the receiving end of its outgoing queue.
    pub fn new(id: ConnId, max_frames: usize, max_bytes: usize) -> (Peer, mpsc::Receiver<Bytes>) {
        let (outbox, rx) = mpsc::channel(max_frames.max(1));
        let peer = Peer {
            id,
            user: None,
            token_id: None,
            read_only: false,
            outbox,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: max_bytes,
            close: OnceLock::new(),
            closing: CancellationToken::new(),
        };
        (peer, rx)
    }

    /// Attaches the identity and rights a token granted.
    pub fn with_grant(mut self, grant: &crate::auth::Grant) -> Self {
        self.user = grant.user.clone();
        self.token_id = grant.token_id.clone();
        self.read_only = grant.access == crate::auth::Access::ReadOnly;
        self
    }

    /// Queues a frame. Returns `false` if the peer is (now) closing: its queue overflowed, in
    /// which case it has been told to close with [`CloseReason::SLOW_CONSUMER`].
    pub fn push(&self, frame: Bytes) -> bool {
        if self.closing.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        // A single frame larger than the budget is still allowed onto an empty queue, or a big
        // document could never be sent at all.
        if queued > self.max_queued_bytes && queued != len {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.close(CloseReason::SLOW_CONSUMER);
            return false;
        }
        match self.outbox.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.close(CloseReason::SLOW_CONSUMER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Called by the writer after a frame left the queue.
    pub fn sent(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Asks the connection to close with `reason`. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.close.set(reason);
        self.closing.cancel();
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close.get().copied()
    }

    /// Resolves once [`Peer::close`] has been called.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_by_frames_closes_as_slow_consumer() {
        let (peer, _rx) = Peer::new(1, 2, 1 << 20);
        assert!(peer.push(Bytes::from_static(b"a")));
        assert!(peer.push(Bytes::from_static(b"b")));
        assert!(!peer.push(Bytes::from_static(b"c")));
        assert_eq!(peer.close_reason(), Some(CloseReason::SLOW_CONSUMER));
        assert!(!peer.push(Bytes::from_static(b"d")));
    }

    #[test]
    fn overflow_by_bytes_closes_but_one_big_frame_fits() {
        let (peer, mut rx) = Peer::new(1, 100, 10);
        assert!(peer.push(Bytes::from(vec![0; 50])));
        let frame = rx.try_recv().expect("queued");
        peer.sent(frame.len());
        assert!(peer.push(Bytes::from(vec![0; 8])));
        assert!(!peer.push(Bytes::from(vec![0; 8])));
        assert_eq!(peer.close_reason(), Some(CloseReason::SLOW_CONSUMER));
    }
}
