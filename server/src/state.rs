//! What every part of the running server shares: configuration, metrics, shutdown signal.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::close::Close;
use crate::config::Config;
use crate::limits::Counter;
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::presence::ConnId;
use crate::storage::Storage;

/// Process-wide state, behind an `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server was started with.
    pub config: Config,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Where documents are loaded from and logged to.
    pub storage: Storage,
    /// Token verification and revocations.
    pub auth: Authenticator,
    /// Connections per client address.
    pub per_addr: Arc<Counter<IpAddr>>,
    /// Connections per document.
    pub per_doc: Arc<Counter<Arc<str>>>,
    /// Every live connection, so a revocation can close them wherever they are.
    live: Mutex<HashMap<ConnId, Arc<Peer>>>,
    /// Names of deleted documents: joins and imports are refused (HTTP 410) so old content
    /// held by a client cannot bring a deleted document back. Loaded from storage at start.
    deleted: RwLock<HashSet<Arc<str>>>,
    /// Cancelled when the server starts shutting down; connections close with 1001.
    pub shutdown: CancellationToken,
    /// Wakes change-feed readers when a document's log grows or it is restored or deleted.
    pub changes: crate::changes::ChangeBus,
    /// Signed webhooks, when `--webhook-url` is set.
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// Tracks connection tasks so shutdown can wait for their close handshakes.
    pub connections: TaskTracker,
    /// Tracks room tasks so shutdown can wait for their final flush and snapshot.
    pub rooms: TaskTracker,
    /// This node's link to the other nodes (`--redis-url`); `None` when it runs alone.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    next_conn: AtomicU64,
}

impl Shared {
    /// Builds the shared state for a server with `config`, its webhooks and its cluster
    /// membership, if any.
    pub(crate) fn new(
        config: Config,
        storage: Storage,
        auth: Authenticator,
        webhooks: Option<crate::webhooks::Webhooks>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            cluster,
            auth,
            per_addr: Counter::new(config.max_conns_per_ip),
            per_doc: Counter::new(config.max_conns_per_doc),
            live: Mutex::new(HashMap::new()),
            deleted: RwLock::new(HashSet::new()),
            config,
            metrics: Metrics::new(),
            storage,
            shutdown: CancellationToken::new(),
            changes: crate::changes::ChangeBus::default(),
            webhooks,
            connections: TaskTracker::new(),
            rooms: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<Peer>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the other nodes of the cluster (if this node is in one).
    pub(crate) fn tell_cluster(&self, control: crate::cluster::Control) {
        if let Some(cluster) = &self.cluster {
            cluster.publish_control(control);
        }
    }

    /// Registers a live connection.
    pub fn register(&self, peer: Arc<Peer>) {
        self.live().insert(peer.id, peer);
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, id: ConnId) {
        self.live().remove(&id);
    }

    /// Closes every live connection `matches` selects; returns how many.
    pub fn close_matching(&self, matches: impl Fn(&Peer) -> bool, reason: Close) -> usize {
        let live = self.live();
        let mut closed = 0;
        for peer in live.values().filter(|p| matches(p)) {
            peer.close(reason);
            closed += 1;
        }
        closed
    }

    /// Whether the document `name` was deleted.
    pub fn is_deleted(&self, name: &str) -> bool {
        self.deleted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Marks the document `name` deleted (refused from now on) and ends its change feeds.
    pub fn mark_deleted(&self, name: &str) {
        let name: Arc<str> = Arc::from(name);
        self.deleted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        self.changes
            .publish(&name, crate::changes::ChangeKind::Deleted);
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
