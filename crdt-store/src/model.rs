//! Plain data types crossing the crate boundary. They hold owned bytes and
//! `SystemTime`s so the server never depends on a database driver's types.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which database a [`Store`](crate::Store) talks to. Shown in logs, metrics and
/// the admin API so operators can tell an embedded deployment from a shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A PostgreSQL server (`postgres://` / `postgresql://` URLs).
    Postgres,
    /// An embedded SQLite file (`sqlite://` URLs), the zero-setup default.
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// Everything needed to bring a document into memory: the newest snapshot and
/// the log rows written after it. Applying `snapshot.state` and then every
/// `updates[i].data` in order reproduces the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedDoc {
    /// Stable numeric id of the document; every other call takes it instead of
    /// the name, so renames and long names cost nothing on the hot path. `None`: no row
    /// exists yet (nothing was ever written): loading never creates one, the first
    /// logged update does ([`Writer::append_to`](crate::Writer::append_to)).
    pub doc_id: Option<i64>,
    /// Newest snapshot, if one was ever written.
    pub snapshot: Option<Snapshot>,
    /// Log rows with `seq` greater than the snapshot's (all rows without a
    /// snapshot), ascending, with data.
    pub updates: Vec<LogRow>,
    /// Highest sequence number stored for the document (log or snapshot), 0 for
    /// a new document: the next update the room accepts gets `last_seq + 1`.
    pub last_seq: i64,
}

impl LoadedDoc {
    /// The document as its log rows name it, for [`Writer::append_to`](crate::Writer::append_to).
    pub fn doc_ref(&self, name: &str) -> DocRef {
        DocRef::new(name, self.doc_id)
    }
}

/// A document as a room logs to it: its name, and its id once its row exists. A document
/// gets its row with its first logged update, not when it is loaded, so that merely opening
/// a name (a read-only client, a typo, a scan of names) stores nothing. Clones share the id:
/// the writer sets it when it creates the row, and everyone holding a clone sees it.
#[derive(Debug, Clone)]
pub struct DocRef {
    name: Arc<str>,
    id: Arc<OnceLock<i64>>,
}

impl DocRef {
    /// Document `name`, with its id if its row already exists.
    pub fn new(name: &str, id: Option<i64>) -> DocRef {
        let cell = OnceLock::new();
        if let Some(id) = id {
            let _ = cell.set(id);
        }
        DocRef {
            name: Arc::from(name),
            id: Arc::new(cell),
        }
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its id; `None` until its row exists (set by the writer before the first row commits,
    /// so it is known once any of the document's rows is durable).
    pub fn id(&self) -> Option<i64> {
        self.id.get().copied()
    }

    /// Records the id of the row the writer found or created.
    pub fn set_id(&self, id: i64) {
        let _ = self.id.set(id);
    }
}

/// A merged document state covering all log rows up to and including `seq`.
/// Lets loading skip the (possibly long) log prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Last log sequence number whose update is contained in `state`.
    pub seq: i64,
    /// The document state encoded as one update (opaque to this crate).
    pub state: Vec<u8>,
    /// The state vector of `state`, kept so sync step 1 can be answered
    /// without decoding the state.
    pub state_vector: Vec<u8>,
    /// When the snapshot was written.
    pub created_at: SystemTime,
}

/// One row of the update log as read back: metadata for the history view and
/// (when requested) the update bytes for reconstruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// Per-document sequence number, strictly increasing in commit order.
    pub seq: i64,
    /// When the server accepted the update.
    pub created_at: SystemTime,
    /// Size of the update in bytes (stored, so history pages need not read data).
    pub size: i64,
    /// Who sent the update, when known.
    pub author: Option<String>,
    /// The update bytes; empty when the caller asked for metadata only.
    pub data: Vec<u8>,
}

/// A row to append to the update log. `data` is `Bytes` so the room can hand the
/// same buffer it relays to clients to the writer without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpdate {
    /// Document the update belongs to (from [`LoadedDoc::doc_id`]).
    pub doc_id: i64,
    /// Sequence number assigned by the room; `(doc_id, seq)` is unique, which
    /// makes appends idempotent.
    pub seq: i64,
    /// The encoded update.
    pub data: bytes::Bytes,
    /// Who sent it, when known.
    pub author: Option<String>,
    /// When the server accepted it.
    pub created_at: SystemTime,
}

/// A document's metadata and storage statistics, for the admin API's document list and
/// detail. The log statistics are kept up to date by the database itself (triggers on the
/// log), so reading them never scans the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    /// Stable numeric id (see [`LoadedDoc::doc_id`]).
    pub doc_id: i64,
    /// The document's name.
    pub name: String,
    /// When the document's row was created: its first logged change (or the first admin
    /// write). Loading a document never creates its row.
    pub created_at: SystemTime,
    /// When it was deleted ([`Store::delete_document`](crate::Store::delete_document)); a
    /// deleted document keeps its row as a tombstone so the name is never reused.
    pub deleted_at: Option<SystemTime>,
    /// Accept time of the newest logged change; `None` before the first change.
    pub last_change_at: Option<SystemTime>,
    /// Highest sequence number ever logged (0: none). Pruning the log does not lower it.
    pub last_seq: i64,
    /// Oldest sequence number still in the log (`None`: the log is empty). Greater than 1
    /// once retention pruned the beginning of the history.
    pub first_logged_seq: Option<i64>,
    /// Rows in the update log (fewer than `last_seq` after retention).
    pub log_rows: i64,
    /// Bytes of update data in the log.
    pub log_bytes: i64,
    /// Number of stored snapshots.
    pub snapshots: i64,
    /// Bytes of the stored snapshots (state plus state vector).
    pub snapshot_bytes: i64,
    /// The newest snapshot, if any.
    pub latest_snapshot: Option<SnapshotInfo>,
    /// Number of labels.
    pub labels: i64,
}

/// Where a snapshot stands, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Last log sequence number the snapshot covers.
    pub seq: i64,
    /// When it was written.
    pub created_at: SystemTime,
    /// Its size: state plus state vector.
    pub bytes: i64,
}

/// A named point in a document's history ("v1.0 sent to legal").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label's name, unique within its document.
    pub name: String,
    /// The log sequence number it points at (0: the empty document).
    pub seq: i64,
    /// When it was created.
    pub created_at: SystemTime,
}

/// `SystemTime` → unix milliseconds (SQLite's time representation). Times
/// before 1970 become negative rather than failing.
pub(crate) fn to_unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i64::MIN),
    }
}

/// Unix milliseconds → `SystemTime`, the inverse of [`to_unix_millis`].
pub(crate) fn from_unix_millis(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_millis_round_trip() {
        for ms in [0_i64, 1, 1_700_000_000_123, -1, -86_400_000] {
            assert_eq!(to_unix_millis(from_unix_millis(ms)), ms);
        }
        let now = SystemTime::now();
        let back = from_unix_millis(to_unix_millis(now));
        assert!(now.duration_since(back).unwrap_or_default() < Duration::from_millis(1));
    }

    #[test]
    fn backend_display() {
        assert_eq!(Backend::Postgres.to_string(), "postgres");
        assert_eq!(Backend::Sqlite.to_string(), "sqlite");
    }
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// A token id (`jti`).
    Token,
    /// A user id (`sub`): their tokens issued before `revoked_at` are refused.
    User,
}

impl RevocationKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "token",
            RevocationKind::User => "user",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(RevocationKind::Token),
            "user" => Some(RevocationKind::User),
            _ => None,
        }
    }
}

/// A stored revocation, reloaded at start-up so a restart does not re-admit revoked tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Token or user.
    pub kind: RevocationKind,
    /// The token id or user id.
    pub value: String,
    /// When it was revoked.
    pub revoked_at: SystemTime,
}
