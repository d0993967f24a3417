//! One document on a Hocuspocus socket: its admission (the auth message's checks) and its
//! place in a room.

use std::sync::Arc;

use bytes::Bytes;
use tandem_wire::hocuspocus as hp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auth::Access;
use crate::connection::deadline_at;
use crate::docname;
use crate::peer::{Outbox, Peer};
use crate::presence::ConnId;
use crate::protocol::Inbound;
use crate::registry::{JoinError, Registry};
use crate::room::RoomMsg;
use crate::state::Shared;

/// A document open on the socket.
pub(super) struct Session {
    /// Its peer in the room (its own connection id, the socket's queue).
    pub(super) peer: Arc<Peer>,
    /// The room, once joined.
    pub(super) room: Option<mpsc::Sender<RoomMsg>>,
    /// Messages that arrived while the room was loading, in order.
    pub(super) held: Vec<Inbound>,
    /// The token's expiry.
    pub(super) expires: Option<Instant>,
    /// The place held in the per-document connection limit.
    _slot: Box<dyn std::any::Any + Send + Sync>,
}

/// A room's answer to a session's join.
pub(super) struct Joined {
    /// The session's routing key.
    pub(super) key: Arc<str>,
    /// The session's peer (a session detached and opened again under the same key has
    /// another).
    pub(super) conn: ConnId,
    /// The room's inbox, or why it could not be joined.
    pub(super) result: Result<mpsc::Sender<RoomMsg>, JoinError>,
}

/// The checks a y-websocket upgrade goes through, for the document of routing key `key`:
/// its name, deletion, the token (an empty one is no token), the per-document limit. On
/// success, the session (not joined yet) and the scope to report; otherwise the reason to
/// report and the refusal's metric label.
pub(super) fn open(
    shared: &Arc<Shared>,
    outbox: &Outbox,
    key: &str,
    token: &str,
) -> Result<(Session, &'static str), (String, &'static str)> {
    let config = &shared.config;
    let name = docname::validate(hp::document_of(key).to_owned(), config.max_name_len)
        .map_err(|e| (e.to_string(), "bad_name"))?;
    if shared.is_deleted(&name) {
        return Err(("document deleted".into(), "deleted"));
    }
    let token = Some(token).filter(|t| !t.is_empty());
    let grant = shared
        .auth
        .authorize(token, &name)
        .map_err(|e| (e.to_string(), e.label()))?;
    let name: Arc<str> = Arc::from(name);
    let slot = shared.per_doc.acquire(name).ok_or_else(|| {
        (
            "too many connections to this document".to_string(),
            "per_doc_limit",
        )
    })?;
    let scope = match grant.access {
        Access::ReadOnly => hp::SCOPE_READONLY,
        _ => hp::SCOPE_READ_WRITE,
    };
    let peer = outbox
        .peer(
            shared.next_conn_id(),
            config.outbox_frames,
            config.outbox_bytes,
            Bytes::from(hp::prefix(key)),
        )
        .with_grant(&grant)
        .within(&shared.shutdown);
    let peer = Arc::new(peer);
    shared.register(peer.clone());
    let session = Session {
        peer,
        room: None,
        held: Vec::new(),
        expires: grant.expires_at.map(deadline_at),
        _slot: Box::new(slot),
    };
    Ok((session, scope))
}

/// A new token for an open session: checked like the first; on success the session's expiry
/// becomes the new token's, and the scope it was opened with is reported again.
pub(super) fn renew(
    shared: &Arc<Shared>,
    session: &mut Session,
    key: &str,
    token: &str,
) -> Result<&'static str, (String, &'static str)> {
    let token = Some(token).filter(|t| !t.is_empty());
    let grant = shared
        .auth
        .authorize(token, hp::document_of(key))
        .map_err(|e| (e.to_string(), e.label()))?;
    session.expires = grant.expires_at.map(deadline_at);
    Ok(if session.peer.read_only {
        hp::SCOPE_READONLY
    } else {
        hp::SCOPE_READ_WRITE
    })
}

impl Session {
    /// Joins the document's room in a task of its own (loading may take a while); the answer
    /// comes back on `done`. If the socket is gone by then, the task leaves the room itself.
    pub(super) fn start_join(
        &self,
        registry: &Arc<Registry>,
        key: &str,
        done: mpsc::Sender<Joined>,
    ) {
        let registry = registry.clone();
        let peer = self.peer.clone();
        let key: Arc<str> = Arc::from(key);
        let name = hp::document_of(&key).to_owned();
        tokio::spawn(async move {
            let conn = peer.id;
            let result = registry.join(&name, peer).await;
            let room = result.as_ref().ok().cloned();
            if done.send(Joined { key, conn, result }).await.is_err()
                && let Some(room) = room
            {
                let _ = room.send(RoomMsg::Leave { conn }).await;
            }
        });
    }
}
