//! Several Tandem nodes serving the same documents: Postgres holds the one log, Redis relays
//! what happens between nodes.
//!
//! **The log is the truth; Redis is a fast path.** A node numbers nothing itself: the database
//! gives each logged update its sequence number ([`crdt_store::Store::append_assigning`]), so a
//! document's log stays one ordered sequence with any number of nodes appending. Once durable,
//! an update is relayed to this node's clients (persist before relay, as on one node) and
//! published on the document's channel; nodes with the document open apply it and relay it to
//! their clients. Redis may drop or reorder messages, or be down: a room notices a gap in the
//! sequence numbers it has applied and reads what it lacks from the log, and once a second
//! this node asks the database how far each open document's log reaches
//! ([`Remote::LogAt`]), which catches up even a lost last message. A room subscribes to its
//! channel before it loads, so nothing committed between its load and its subscription is
//! missed.
//!
//! **Awareness** of each node's clients is published on the document's channel and applied
//! elsewhere under a stand-in connection for the node ([`stand_in`]); every node announces
//! itself on the control channel each [`HEARTBEAT`], and a node silent for [`NODE_TIMEOUT`] is
//! taken for dead: its clients' awareness is removed everywhere.
//!
//! **Administrative actions** (delete, disconnect, revocations) and change-feed wake-ups go on
//! the control channel; restores and imports are ordinary logged updates.

mod message;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

pub(crate) use self::message::{Control, Message, NodeId};
use crate::changes::ChangeKind;
use crate::close::Close;
use crate::presence::ConnId;
use crate::registry::Registry;
use crate::room::{Command, Remote, RoomMsg};
use crate::state::Shared;

/// How often a node says it is alive, and checks the logs of its open documents.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is taken for dead (its clients' awareness goes).
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(6);
/// Longest wait for Redis to connect or confirm a subscription.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between reconnection attempts while Redis is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Messages waiting to be published; beyond, new ones are dropped (and counted): the log
/// has them all, and the periodic check delivers them.
const PUBLISH_QUEUE: usize = 65_536;
/// Most messages sent in one pipelined round trip.
const PUBLISH_BATCH: usize = 512;

/// This node's membership in a cluster; shared by the rooms and the HTTP handlers.
#[derive(Debug)]
pub(crate) struct Cluster {
    node: NodeId,
    prefix: String,
    /// `<prefix>:doc:`, the start of every document channel (kept: every message is matched
    /// against it).
    doc_prefix: String,
    client: redis::Client,
    publish: mpsc::Sender<(String, Bytes)>,
    publish_rx: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    subscriptions_rx: Mutex<Option<mpsc::UnboundedReceiver<Subscription>>>,
    /// Document name → rooms (generations) subscribed to its channel on this node.
    subscribed: Mutex<HashMap<String, usize>>,
    /// Whether the subscriber link and the publisher are both connected.
    sub_up: AtomicBool,
    pub_up: AtomicBool,
    /// Messages not published because Redis was down or slow.
    dropped: AtomicU64,
    /// Last error met talking to Redis.
    last_error: Mutex<Option<String>>,
    /// Other nodes, by when they were last heard from.
    nodes: Mutex<HashMap<NodeId, Instant>>,
}

/// A request to the subscriber link.
#[derive(Debug)]
enum Subscription {
    Add(String, oneshot::Sender<bool>),
    Remove(String),
}

/// Why clustering could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// `--redis-url` is not a Redis URL.
    #[error("--redis-url: {0}")]
    Url(String),
}

/// The connection id standing for all clients of node `node` in a room's presence: the top
/// bit set, which local connection ids (a counter) never reach.
pub(crate) fn stand_in(node: NodeId) -> ConnId {
    (1 << 63) | node
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// A node of the cluster at `url` (nothing is connected until [`start`]).
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::Url(e.to_string()))?;
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        let mut id = [0u8; 8];
        // A clock-derived id is unique enough if the system has no randomness to offer.
        if getrandom::fill(&mut id).is_err() {
            id = (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64)
                .to_be_bytes();
        }
        Ok(Cluster {
            node: u64::from_be_bytes(id),
            prefix: prefix.to_string(),
            doc_prefix: format!("{prefix}:doc:"),
            client,
            publish,
            publish_rx: Mutex::new(Some(publish_rx)),
            subscriptions,
            subscriptions_rx: Mutex::new(Some(subscriptions_rx)),
            subscribed: Mutex::new(HashMap::new()),
            sub_up: AtomicBool::new(false),
            pub_up: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            last_error: Mutex::new(None),
            nodes: Mutex::new(HashMap::new()),
        })
    }

    fn control_channel(&self) -> String {
        format!("{}:control", self.prefix)
    }

    fn doc_channel(&self, name: &str) -> String {
        format!("{}{name}", self.doc_prefix)
    }

    /// Whether Redis is reachable (both directions).
    pub(crate) fn is_up(&self) -> bool {
        self.sub_up.load(Ordering::Relaxed) && self.pub_up.load(Ordering::Relaxed)
    }

    /// For `/healthz`: link state, other live nodes, dropped messages, last error.
    pub(crate) fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "node": format!("{:016x}", self.node),
            "redis": if self.is_up() { "up" } else { "down" },
            "nodes_alive": lock(&self.nodes).len() + 1,
            "messages_dropped": self.dropped.load(Ordering::Relaxed),
            "last_error": if self.is_up() { None } else { lock(&self.last_error).clone() },
        })
    }

    /// Subscribes this node to document `name`'s channel; waits (bounded) for Redis to
    /// confirm. `false` when Redis is down: the link subscribes once it is back, and the
    /// room relies on catching up from the log meanwhile.
    pub(crate) async fn subscribe(&self, name: &str) -> bool {
        *lock(&self.subscribed).entry(name.to_string()).or_insert(0) += 1;
        let (tx, rx) = oneshot::channel();
        if self
            .subscriptions
            .send(Subscription::Add(name.to_string(), tx))
            .is_err()
        {
            return false;
        }
        matches!(tokio::time::timeout(REDIS_TIMEOUT, rx).await, Ok(Ok(true)))
    }

    /// A room of `name` on this node ended.
    pub(crate) fn unsubscribe(&self, name: &str) {
        let mut subscribed = lock(&self.subscribed);
        let last = match subscribed.get_mut(name) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            subscribed.remove(name);
            let _ = self
                .subscriptions
                .send(Subscription::Remove(name.to_string()));
        }
    }

    fn send(&self, channel: String, message: Message) {
        if self.publish.try_send((channel, message.encode())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the other nodes that log row `seq` of `name` is durable.
    pub(crate) fn publish_update(&self, name: &str, seq: i64, update: Bytes) {
        let message = Message::Update {
            node: self.node,
            seq,
            update,
        };
        self.send(self.doc_channel(name), message);
    }

    /// Shares an awareness frame of this node's clients of `name`.
    pub(crate) fn publish_awareness(&self, name: &str, frame: Bytes) {
        let message = Message::Awareness {
            node: self.node,
            frame,
        };
        self.send(self.doc_channel(name), message);
    }

    /// Tells every other node `control`.
    pub(crate) fn publish_control(&self, control: Control) {
        let message = Message::Control {
            node: self.node,
            control,
        };
        self.send(self.control_channel(), message);
    }

    /// Tells the other nodes this one is leaving, so they drop its clients' awareness now
    /// rather than after [`NODE_TIMEOUT`]. Best effort, bounded.
    async fn say_bye(&self) {
        let message = Message::Control {
            node: self.node,
            control: Control::Bye,
        };
        let bye = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(self.control_channel())
                .arg(message.encode().as_ref())
                .query_async::<()>(&mut conn)
                .await
        };
        let _ = tokio::time::timeout(REDIS_TIMEOUT, bye).await;
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) {
        let msg = format!("{what}: {e}");
        warn!(error = %msg, "redis unavailable; serving this node's clients alone");
        *lock(&self.last_error) = Some(msg);
    }
}

/// Starts the node's link to the cluster: the subscriber (control channel and the open
/// documents' channels), the publisher, the heartbeat and the periodic log check. Runs until
/// shutdown, reconnecting to Redis whenever it is lost.
pub(crate) fn start(cluster: Arc<Cluster>, shared: Arc<Shared>, registry: Arc<Registry>) {
    let publish_rx = lock(&cluster.publish_rx).take();
    let subs_rx = lock(&cluster.subscriptions_rx).take();
    let (Some(publish_rx), Some(subs_rx)) = (publish_rx, subs_rx) else {
        return;
    };
    info!(
        node = format!("{:016x}", cluster.node),
        "clustering through redis"
    );
    let token = shared.shutdown.clone();
    tokio::spawn({
        let (cluster, token) = (cluster.clone(), token.clone());
        async move {
            tokio::select! {
                _ = publisher(cluster, publish_rx) => {}
                _ = token.cancelled() => {}
            }
        }
    });
    tokio::spawn(async move {
        let link = Link {
            cluster,
            shared,
            registry,
        };
        tokio::select! {
            _ = link.run(subs_rx) => {}
            _ = token.cancelled() => {}
        }
        link.cluster.say_bye().await;
    });
}

/// Publishes queued messages, many per round trip; reconnects when Redis is lost (what
/// was queued meanwhile is dropped: the log has it).
async fn publisher(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<(String, Bytes)>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let conn = tokio::time::timeout(
            REDIS_TIMEOUT,
            cluster.client.get_multiplexed_async_connection(),
        )
        .await;
        let mut conn: MultiplexedConnection = match conn {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                cluster.failed("connect", e);
                drain_dropped(&cluster, &mut rx);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                cluster.failed("connect", "timed out");
                drain_dropped(&cluster, &mut rx);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        cluster.pub_up.store(true, Ordering::Relaxed);
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        loop {
            if rx.recv_many(&mut batch, PUBLISH_BATCH).await == 0 {
                return;
            }
            let mut pipe = redis::pipe();
            for (channel, payload) in batch.drain(..) {
                pipe.publish(channel, payload.as_ref()).ignore();
            }
            let sent: Result<Result<(), redis::RedisError>, _> =
                tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    cluster.failed("publish", e);
                    break;
                }
                Err(_) => {
                    cluster.failed("publish", "timed out");
                    break;
                }
            }
        }
        cluster.pub_up.store(false, Ordering::Relaxed);
    }
}

/// Counts what waits to be published while Redis is down as dropped.
fn drain_dropped(cluster: &Cluster, rx: &mut mpsc::Receiver<(String, Bytes)>) {
    while rx.try_recv().is_ok() {
        cluster.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The subscriber side: receives, dispatches to rooms and handles control messages.
struct Link {
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl Link {
    async fn run(&self, mut subs_rx: mpsc::UnboundedReceiver<Subscription>) {
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let connected =
                tokio::time::timeout(REDIS_TIMEOUT, self.cluster.client.get_async_pubsub()).await;
            let pubsub = match connected {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    self.cluster.failed("subscribe", e);
                    self.idle(&mut subs_rx, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(_) => {
                    self.cluster.failed("subscribe", "timed out");
                    self.idle(&mut subs_rx, backoff).await;
                    continue;
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            if let Err(e) = self.subscribe_all(&mut sink).await {
                self.cluster.failed("subscribe", e);
                continue;
            }
            backoff = Duration::from_millis(50);
            self.cluster.sub_up.store(true, Ordering::Relaxed);
            if !first {
                info!("redis is back; catching up from the log");
                for name in self.registry.names() {
                    self.registry
                        .try_send(&name, RoomMsg::Remote(Remote::Relinked));
                }
            }
            first = false;
            let mut beat = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => self.dispatch(msg.get_channel_name(), msg.get_payload_bytes()),
                        None => break,
                    },
                    Some(sub) = subs_rx.recv() => {
                        if !self.apply(&mut sink, sub).await {
                            break;
                        }
                    }
                    _ = beat.tick() => self.heartbeat(),
                }
            }
            self.cluster.sub_up.store(false, Ordering::Relaxed);
            self.cluster.failed("subscribe", "connection lost");
        }
    }

    /// While Redis is down: answers subscriptions (not confirmed), keeps the heartbeat's
    /// other duties (dead nodes, the log check) for `pause`.
    async fn idle(&self, subs_rx: &mut mpsc::UnboundedReceiver<Subscription>, pause: Duration) {
        let until = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                Some(sub) = subs_rx.recv() => {
                    if let Subscription::Add(_, reply) = sub {
                        let _ = reply.send(false);
                    }
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        self.heartbeat();
    }

    async fn subscribe_all(&self, sink: &mut PubSubSink) -> redis::RedisResult<()> {
        let mut channels = vec![self.cluster.control_channel()];
        channels.extend(
            lock(&self.cluster.subscribed)
                .keys()
                .map(|n| self.cluster.doc_channel(n)),
        );
        tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(channels))
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::other("timed out")))?
    }

    /// Carries out a subscription request; false when the link failed.
    async fn apply(&self, sink: &mut PubSubSink, sub: Subscription) -> bool {
        match sub {
            Subscription::Add(name, reply) => {
                let channel = self.cluster.doc_channel(&name);
                let done = tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(channel)).await;
                let ok = matches!(done, Ok(Ok(())));
                let _ = reply.send(ok);
                ok
            }
            Subscription::Remove(name) => {
                // Still wanted by a room that opened meanwhile: keep it.
                if lock(&self.cluster.subscribed).contains_key(&name) {
                    return true;
                }
                let channel = self.cluster.doc_channel(&name);
                let done = tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(channel)).await;
                matches!(done, Ok(Ok(())))
            }
        }
    }

    /// Says this node is alive, forgets nodes that stopped saying so, and checks the logs of
    /// the open documents.
    fn heartbeat(&self) {
        if self.cluster.is_up() {
            self.cluster.publish_control(Control::Alive);
        }
        let now = Instant::now();
        let dead: Vec<NodeId> = {
            let mut nodes = lock(&self.cluster.nodes);
            let dead = nodes
                .iter()
                .filter(|(_, seen)| now.duration_since(**seen) > NODE_TIMEOUT)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>();
            for n in &dead {
                nodes.remove(n);
            }
            dead
        };
        for node in dead {
            info!(
                node = format!("{node:016x}"),
                "node silent; removing its clients' awareness"
            );
            self.node_gone(node);
        }
        self.check_logs();
    }

    fn node_gone(&self, node: NodeId) {
        for name in self.registry.names() {
            self.registry
                .try_send(&name, RoomMsg::Remote(Remote::NodeGone { node }));
        }
    }

    /// Asks the database how far the open documents' logs reach and tells each room; a room
    /// behind reads the rest (this catches what Redis lost, even a burst's last update).
    fn check_logs(&self) {
        let names: Vec<String> = self
            .registry
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let Some(store) = self.shared.storage.store().cloned() else {
            return;
        };
        if names.is_empty() {
            return;
        }
        let registry = self.registry.clone();
        tokio::spawn(async move {
            match store.last_seqs(&names).await {
                Ok(seqs) => {
                    for (name, seq) in seqs {
                        registry.try_send(&name, RoomMsg::Remote(Remote::LogAt { seq }));
                    }
                }
                Err(e) => debug!(error = %e, "log check failed"),
            }
        });
    }

    /// One message from Redis.
    fn dispatch(&self, channel: &str, payload: &[u8]) {
        let message = match Message::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                warn!(channel, error = %e, "unreadable cluster message; ignored");
                return;
            }
        };
        let node = message.node();
        if node == self.cluster.node {
            return;
        }
        lock(&self.cluster.nodes).insert(node, Instant::now());
        match message {
            Message::Control { control, .. } => self.control(node, control),
            Message::Update { seq, update, .. } => {
                if let Some(name) = channel.strip_prefix(self.cluster.doc_prefix.as_str()) {
                    self.registry
                        .try_send(name, RoomMsg::Remote(Remote::Update { seq, update }));
                }
            }
            Message::Awareness { frame, .. } => {
                if let Some(name) = channel.strip_prefix(self.cluster.doc_prefix.as_str()) {
                    self.registry
                        .try_send(name, RoomMsg::Remote(Remote::Awareness { node, frame }));
                }
            }
        }
    }

    fn control(&self, node: NodeId, control: Control) {
        let shared = &self.shared;
        match control {
            Control::Alive => {}
            Control::Bye => {
                lock(&self.cluster.nodes).remove(&node);
                self.node_gone(node);
            }
            Control::Durable { doc, after, upto } => {
                shared
                    .changes
                    .publish(&Arc::from(doc), ChangeKind::Durable { after, upto });
            }
            Control::Restored {
                doc,
                seq,
                restored_to,
                author,
            } => {
                let kind = ChangeKind::Restored {
                    seq,
                    restored_to,
                    author,
                };
                shared.changes.publish(&Arc::from(doc), kind);
            }
            Control::Deleted { doc } => {
                shared.mark_deleted(&doc);
                let registry = self.registry.clone();
                tokio::spawn(async move {
                    registry.delete(&doc).await;
                });
            }
            Control::Disconnect { doc, user } => {
                let registry = self.registry.clone();
                tokio::spawn(async move {
                    let _ = registry
                        .command(&doc, false, |reply| Command::Disconnect {
                            user: user.clone(),
                            reply,
                        })
                        .await;
                });
            }
            Control::Revoked {
                token_id,
                user,
                at_ms,
            } => {
                let at = UNIX_EPOCH + Duration::from_millis(at_ms);
                {
                    let mut revocations = shared
                        .auth
                        .revocations
                        .write()
                        .unwrap_or_else(|e| e.into_inner());
                    if let Some(t) = &token_id {
                        revocations.revoke_token(t, at);
                    }
                    if let Some(u) = &user {
                        revocations.revoke_user(u, at);
                    }
                }
                shared.close_matching(
                    |peer| {
                        token_id.is_some() && peer.token_id == token_id
                            || user.is_some() && peer.user == user
                    },
                    Close::Revoked,
                );
            }
            Control::Lifted { token_id, user } => {
                shared
                    .auth
                    .revocations
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .lift(token_id.as_deref(), user.as_deref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_never_meet_local_connection_ids() {
        assert!(stand_in(0) >= 1 << 63);
        assert!(stand_in(u64::MAX) >= 1 << 63);
        assert_ne!(stand_in(2), stand_in(3));
    }
}
