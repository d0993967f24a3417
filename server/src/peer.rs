//! A connection as a room sees it: a bounded outgoing queue and a way to close it.
//!
//! The room never waits on a connection. It pushes shared frames with `try_send`; a connection
//! whose queue is full (by frames or by bytes) is closed with [`Close::SlowConsumer`] (4001) so its
//! provider reconnects and resyncs from its state vector. Nothing is dropped silently.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

use crate::close::Close;
use crate::presence::ConnId;

/// A connection's outgoing frames. A plain deque (rather than a channel) because it costs
/// nothing while empty: an idle connection holds no queue memory at all.
///
/// One task consumes a queue (the socket's), so its wake-up is an [`AtomicWaker`] rather than a
/// `Notify`: waking it is a swap, with no waiter list to lock, and the consumer can poll the
/// queue from inside its socket loop without storing a `Notified` future (see
/// [`Outbox::poll_recv`]). This is on the path of every delivered frame.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// The consumer's waker, registered while it waits.
    ready: AtomicWaker,
    /// A multiplexed peer on this queue closed since the consumer last looked
    /// ([`Outbox::next_or_closed`] returns `None` then).
    signalled: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

/// Capacity kept by an emptied queue; above it the memory is returned.
const KEEP_CAPACITY: usize = 16;

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's end of a peer's queue.
#[derive(Debug)]
pub struct Outbox {
    queue: Arc<Queue>,
}

impl Outbox {
    /// Takes the next frame without waiting. (`&self`: the connection's writer and its wait
    /// for new frames are separate futures of one task.)
    pub fn try_recv(&self) -> Option<Bytes> {
        let mut q = self.queue.lock();
        let frame = q.frames.pop_front()?;
        q.bytes -= frame.len();
        if q.frames.is_empty() && q.frames.capacity() > KEEP_CAPACITY {
            q.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// The next frame, or `Pending` with the task's waker registered so the next push wakes
    /// it (the queue is checked again after registering, so a push in between is not lost).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Bytes> {
        if let Some(frame) = self.try_recv() {
            return Poll::Ready(frame);
        }
        self.queue.ready.register(cx.waker());
        match self.try_recv() {
            Some(frame) => Poll::Ready(frame),
            None => Poll::Pending,
        }
    }

    /// Waits for the next frame, or for a peer on this queue to close: `None` then (see
    /// [`Outbox::peer`]).
    pub async fn next_or_closed(&self) -> Option<Bytes> {
        poll_fn(|cx| {
            if let Poll::Ready(frame) = self.poll_recv(cx) {
                return Poll::Ready(Some(frame));
            }
            // Checked after `poll_recv` registered the waker: a close in between wakes it.
            if self.queue.signalled.swap(false, Ordering::AcqRel) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Another peer writing into this same queue, each of its frames preceded by `prefix`: one
    /// per document on a multiplexed (Hocuspocus) socket. The queue's bounds are the socket's,
    /// shared by all its documents. Closing such a peer wakes [`Outbox::next_or_closed`].
    pub fn peer(&self, id: ConnId, max_frames: usize, max_bytes: usize, prefix: Bytes) -> Peer {
        let mut peer = Peer::on(self.queue.clone(), id, max_frames, max_bytes);
        peer.prefix = Some(prefix);
        peer
    }

    /// Waits for the next frame.
    pub async fn recv(&self) -> Bytes {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
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
    /// Routing key put before every frame (a document on a multiplexed socket); `None` for a
    /// y-websocket connection.
    prefix: Option<Bytes>,
    queue: Arc<Queue>,
    max_frames: usize,
    max_bytes: usize,
    close: OnceLock<Close>,
    closing: CancellationToken,
}

impl Peer {
    /// Creates a peer and the receiving end of its outgoing queue.
    pub fn new(id: ConnId, max_frames: usize, max_bytes: usize) -> (Peer, Outbox) {
        let queue = Arc::new(Queue::default());
        let peer = Peer::on(queue.clone(), id, max_frames, max_bytes);
        (peer, Outbox { queue })
    }

    fn on(queue: Arc<Queue>, id: ConnId, max_frames: usize, max_bytes: usize) -> Peer {
        Peer {
            id,
            user: None,
            token_id: None,
            read_only: false,
            prefix: None,
            queue,
            max_frames: max_frames.max(1),
            max_bytes,
            close: OnceLock::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Whether this is one document of a multiplexed (Hocuspocus) socket; such a peer is sent
    /// a sync-status ack per update.
    pub fn is_multiplexed(&self) -> bool {
        self.prefix.is_some()
    }

    /// Attaches the identity and rights a token granted.
    pub fn with_grant(mut self, grant: &crate::auth::Grant) -> Self {
        self.user = grant.user.clone();
        self.token_id = grant.token_id.clone();
        self.read_only = grant.access == crate::auth::Access::ReadOnly;
        self
    }

    /// Queues a frame. Returns `false` if the peer is (now) closing: its queue overflowed, in
    /// which case it has been told to close with [`Close::SlowConsumer`].
    pub fn push(&self, frame: Bytes) -> bool {
        // The close reason, not the token: `is_cancelled` locks the token's node, and this runs
        // once per peer for every broadcast frame. (A peer closed only through its parent token,
        // at shutdown, still takes frames; its queue is dropped with it.)
        if self.close.get().is_some() {
            return false;
        }
        // One copy per peer: the frame shared by a broadcast gets this document's routing key.
        let frame = match &self.prefix {
            Some(prefix) => {
                let mut framed = Vec::with_capacity(prefix.len() + frame.len());
                framed.extend_from_slice(prefix);
                framed.extend_from_slice(&frame);
                Bytes::from(framed)
            }
            None => frame,
        };
        let overflow = {
            let mut q = self.queue.lock();
            let bytes = q.bytes + frame.len();
            // A single frame larger than the byte budget is still allowed onto an empty queue,
            // or a big document could never be sent at all.
            let too_big = bytes > self.max_bytes && !q.frames.is_empty();
            if q.frames.len() >= self.max_frames || too_big {
                true
            } else {
                q.bytes = bytes;
                q.frames.push_back(frame);
                false
            }
        };
        if overflow {
            self.close(Close::SlowConsumer);
            return false;
        }
        self.queue.ready.wake();
        true
    }

    /// Asks the connection to close with `reason`. The first reason wins.
    pub fn close(&self, reason: Close) {
        let _ = self.close.set(reason);
        self.closing.cancel();
        if self.prefix.is_some() {
            // The socket's task learns a document closed from its queue.
            self.queue.signalled.store(true, Ordering::Release);
            self.queue.ready.wake();
        }
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<Close> {
        self.close.get().copied()
    }

    /// Resolves once [`Peer::close`] has been called, or the parent token given to
    /// [`Peer::within`] (the server's shutdown) was cancelled; then [`Peer::close_reason`] is
    /// `None`.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Makes the peer close when `parent` is cancelled too, so the connection waits on a
    /// single token instead of two.
    pub fn within(mut self, parent: &CancellationToken) -> Self {
        self.closing = parent.child_token();
        self
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
        assert_eq!(peer.close_reason(), Some(Close::SlowConsumer));
        assert!(!peer.push(Bytes::from_static(b"d")));
    }

    #[test]
    fn overflow_by_bytes_closes_but_one_big_frame_fits() {
        let (peer, rx) = Peer::new(1, 100, 10);
        assert!(peer.push(Bytes::from(vec![0; 50])));
        rx.try_recv().expect("queued");
        assert!(peer.push(Bytes::from(vec![0; 8])));
        assert!(!peer.push(Bytes::from(vec![0; 8])));
        assert_eq!(peer.close_reason(), Some(Close::SlowConsumer));
    }

    #[test]
    fn multiplexed_peers_share_the_queue_and_prefix_their_frames() {
        let (socket, rx) = Peer::new(1, 10, 1 << 20);
        let doc = rx.peer(2, 10, 1 << 20, Bytes::from_static(&[1, b'a']));
        assert!(doc.is_multiplexed() && !socket.is_multiplexed());
        assert!(socket.push(Bytes::from_static(&[9])));
        assert!(doc.push(Bytes::from_static(&[8, 1])));
        assert_eq!(rx.try_recv().as_deref(), Some(&[9][..]));
        assert_eq!(rx.try_recv().as_deref(), Some(&[1, b'a', 8, 1][..]));
    }

    #[tokio::test]
    async fn closing_a_multiplexed_peer_wakes_the_socket() {
        let (_socket, rx) = Peer::new(1, 10, 1 << 20);
        let doc = rx.peer(2, 10, 1 << 20, Bytes::from_static(&[1, b'a']));
        doc.close(Close::Deleted);
        let woke = tokio::time::timeout(std::time::Duration::from_secs(1), rx.next_or_closed());
        assert_eq!(woke.await, Ok(None));
    }
}
