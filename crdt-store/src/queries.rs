//! SQL written once for both backends: dialect-neutral statements (sqlx's SQLite driver
//! takes `$n` placeholders too) and the building of document-list queries. Statements that
//! need a dialect's own syntax (row locks, collations, array binds) stay in the backends.

/// The columns [`rows::document_info`](crate::rows::document_info) decodes, for the
/// documents chosen by the inner query `SELECT ... FROM documents d <filter>` that goes
/// between `document_select!(head)` and `document_select!(tail)`. The inner query is
/// filtered, ordered and limited first, so the statistics below are computed for the rows
/// returned only, each by scalar subqueries: index probes whatever the planner thinks of
/// the tables' sizes. Statistics of the log come from the `documents` row (kept by
/// triggers); snapshots and labels are counted (few rows each, read through their primary
/// keys); `first_logged_seq` is one probe of the log's primary key. `length()` of a blob reads its
/// stored size, not its bytes, on both backends.
macro_rules! document_select {
    (head) => {
        "SELECT d.id, d.name, d.created_at, d.deleted_at, d.last_change_at, d.last_seq, \
                d.log_rows, d.log_bytes, \
                (SELECT min(u.seq) FROM updates u WHERE u.doc_id = d.id) AS first_logged_seq, \
                (SELECT count(*) FROM snapshots s WHERE s.doc_id = d.id) AS snapshots, \
                (SELECT CAST(COALESCE(sum(length(s.state) + length(s.state_vector)), 0) AS BIGINT) \
                 FROM snapshots s WHERE s.doc_id = d.id) AS snapshot_bytes, \
                (SELECT max(s.seq) FROM snapshots s WHERE s.doc_id = d.id) AS snapshot_seq, \
                (SELECT s.created_at FROM snapshots s WHERE s.doc_id = d.id \
                 ORDER BY s.seq DESC LIMIT 1) AS snapshot_at, \
                (SELECT CAST(length(s.state) + length(s.state_vector) AS BIGINT) \
                 FROM snapshots s WHERE s.doc_id = d.id ORDER BY s.seq DESC LIMIT 1) AS snapshot_size, \
                (SELECT count(*) FROM labels l WHERE l.doc_id = d.id) AS labels \
         FROM (SELECT d.id, d.name, d.created_at, d.deleted_at, d.last_change_at, d.last_seq, \
                      d.log_rows, d.log_bytes \
               FROM documents d "
    };
    (tail) => {
        ") d"
    };
}

/// One document by name, deleted or not.
pub(crate) const DOCUMENT: &str = concat!(
    document_select!(head),
    "WHERE d.name = $1",
    document_select!(tail)
);

/// `id` and whether the document is deleted (`deleted`), by name.
pub(crate) const LOOKUP_DOCUMENT: &str =
    "SELECT id, deleted_at IS NOT NULL AS deleted FROM documents WHERE name = $1";

/// Id of document `$1` and whether it is deleted, creating its row (created at `$2`) if there
/// is none: one statement, race-free (the no-op update makes RETURNING see an existing row,
/// whoever inserted it). Tombstones are returned, never revived.
pub(crate) const UPSERT_DOCUMENT: &str = "INSERT INTO documents (name, created_at) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET name = excluded.name \
     RETURNING id, deleted_at IS NOT NULL AS deleted";

/// Id of a live (not deleted) document, by name.
pub(crate) const LIVE_DOC_ID: &str =
    "SELECT id FROM documents WHERE name = $1 AND deleted_at IS NULL";

/// Names of the deleted documents.
pub(crate) const DELETED_DOCUMENTS: &str =
    "SELECT name FROM documents WHERE deleted_at IS NOT NULL ORDER BY name";

/// What [`Store::delete_document`](crate::Store::delete_document) removes, in its
/// transaction, once it holds the document's row (`$1`: its id), before it sets
/// `deleted_at` ([`MARK_DELETED`]): the log's delete trigger brings `log_rows` and
/// `log_bytes` to zero while the document still counts as live.
pub(crate) const PURGE_DOCUMENT: [&str; 3] = [
    "DELETE FROM labels WHERE doc_id = $1",
    "DELETE FROM snapshots WHERE doc_id = $1",
    "DELETE FROM updates WHERE doc_id = $1",
];

/// Marks document `$1` deleted at `$2` (after [`PURGE_DOCUMENT`]).
pub(crate) const MARK_DELETED: &str = "UPDATE documents SET deleted_at = $2 WHERE id = $1";

/// The newest logged change of document `$1` accepted at or before `$2` (ties on the time go
/// to the highest seq); no row if none. A backward range scan of the `(doc_id, created_at)`
/// index that stops at the first time found, sorting only the rows sharing it (Postgres:
/// incremental sort; SQLite: "temp b-tree for right part of ORDER BY"). Chosen over
/// `max(seq) ... WHERE created_at = (SELECT max(created_at) ...)`, which SQLite without
/// ANALYZE statistics answers by scanning the document's whole log.
pub(crate) const SEQ_AT_TIME: &str = "SELECT seq FROM updates \
     WHERE doc_id = $1 AND created_at <= $2 ORDER BY created_at DESC, seq DESC LIMIT 1";

/// All labels of document `$1` (ordered by the caller).
pub(crate) const LABELS: &str = "SELECT name, seq, created_at FROM labels WHERE doc_id = $1";

/// Label `$2` of document `$1`.
pub(crate) const LABEL: &str =
    "SELECT name, seq, created_at FROM labels WHERE doc_id = $1 AND name = $2";

/// Removes label `$2` of document `$1`.
pub(crate) const DELETE_LABEL: &str = "DELETE FROM labels WHERE doc_id = $1 AND name = $2";

/// The newest snapshot of document `$1` (what a load starts from).
pub(crate) const NEWEST_SNAPSHOT: &str = "SELECT seq, state, state_vector, created_at \
     FROM snapshots WHERE doc_id = $1 ORDER BY seq DESC LIMIT 1";

/// The newest snapshot of document `$1` with seq <= `$2`.
pub(crate) const SNAPSHOT_AT_OR_BEFORE: &str = "SELECT seq, state, state_vector, created_at \
     FROM snapshots WHERE doc_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1";

/// Document `$1`'s log after seq `$2`, with data, ascending (the rest of a load).
pub(crate) const LOG_AFTER: &str = "SELECT seq, created_at, size, author, data FROM updates \
     WHERE doc_id = $1 AND seq > $2 ORDER BY seq";

/// Document `$1`'s log with seq in `($2, $3]`, with data, ascending.
pub(crate) const LOG_RANGE: &str = "SELECT seq, created_at, size, author, data FROM updates \
     WHERE doc_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq";

/// Retention: document `$1`'s log rows created before `$2` that its newest snapshot covers.
/// Without a snapshot the subquery is NULL and nothing matches.
pub(crate) const PRUNE_LOG: &str = "DELETE FROM updates WHERE doc_id = $1 AND created_at < $2 \
     AND seq <= (SELECT max(seq) FROM snapshots WHERE doc_id = $1)";

/// Revocation of kind `$1` and value `$2` at `$3`, replacing an earlier one.
pub(crate) const PUT_REVOCATION: &str = "INSERT INTO revocations (kind, value, revoked_at) \
     VALUES ($1, $2, $3) ON CONFLICT (kind, value) DO UPDATE SET revoked_at = excluded.revoked_at";

/// Removes the revocation of kind `$1` and value `$2`.
pub(crate) const DELETE_REVOCATION: &str = "DELETE FROM revocations WHERE kind = $1 AND value = $2";

/// Every revocation.
pub(crate) const REVOCATIONS: &str = "SELECT kind, value, revoked_at FROM revocations";

/// Which way [`log_page_sql`] walks the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Ascending from an exclusive lower bound.
    After,
    /// Descending from an exclusive upper bound.
    Before,
}

/// A page of document `$1`'s log from the exclusive bound `$2`, at most `$3` rows: a range
/// scan of the `(doc_id, seq)` primary key in either direction, wherever the page lies.
pub(crate) fn log_page_sql(direction: Direction, with_data: bool) -> &'static str {
    macro_rules! page {
        ($cols:literal, $cmp:literal, $order:literal) => {
            concat!(
                "SELECT seq, created_at, size, author",
                $cols,
                " FROM updates WHERE doc_id = $1 AND seq ",
                $cmp,
                " $2 ORDER BY seq",
                $order,
                " LIMIT $3"
            )
        };
    }
    match (direction, with_data) {
        (Direction::After, true) => page!(", data", ">", ""),
        (Direction::After, false) => page!("", ">", ""),
        (Direction::Before, true) => page!(", data", "<", " DESC"),
        (Direction::Before, false) => page!("", "<", " DESC"),
    }
}

/// A page of the list of live documents: names in byte order, optionally only those
/// starting with a prefix, after a cursor. The prefix becomes a range of names
/// (`prefix <= name < successor(prefix)`), so no character of it is special (no LIKE
/// wildcards to escape) and the name index serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocumentList<'a> {
    lower: Option<Lower<'a>>,
    upper: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lower<'a> {
    /// `name >= bound`
    From(&'a str),
    /// `name > bound`
    After(&'a str),
}

impl<'a> DocumentList<'a> {
    /// Names starting with `prefix` (all if `None` or empty) and greater than `after_name`.
    pub(crate) fn new(prefix: Option<&'a str>, after_name: Option<&'a str>) -> Self {
        let prefix = prefix.filter(|p| !p.is_empty());
        // Rust compares strings bytewise, the order the database lists names in.
        let lower = match (prefix, after_name) {
            (Some(p), Some(a)) if a < p => Some(Lower::From(p)),
            (_, Some(a)) => Some(Lower::After(a)),
            (Some(p), None) => Some(Lower::From(p)),
            (None, None) => None,
        };
        DocumentList {
            lower,
            upper: prefix.and_then(successor),
        }
    }

    /// The SELECT, with `name` the expression ordering names bytewise (Postgres:
    /// `d.name COLLATE "C"`, SQLite: `d.name`). Bind [`DocumentList::bounds`] in order,
    /// then the limit.
    pub(crate) fn sql(&self, name: &str) -> String {
        let mut sql = concat!(document_select!(head), "WHERE d.deleted_at IS NULL").to_owned();
        let mut n = 0;
        let mut bound = |op: &str| {
            n += 1;
            format!(" AND {name} {op} ${n}")
        };
        match self.lower {
            Some(Lower::From(_)) => sql.push_str(&bound(">=")),
            Some(Lower::After(_)) => sql.push_str(&bound(">")),
            None => {}
        }
        if self.upper.is_some() {
            sql.push_str(&bound("<"));
        }
        // Ordered twice: the inner query picks the page; the outer must keep its order.
        sql.push_str(&format!(
            " ORDER BY {name} LIMIT ${}{} ORDER BY {name}",
            n + 1,
            document_select!(tail)
        ));
        sql
    }

    /// Values of the bounds in [`DocumentList::sql`], in placeholder order.
    pub(crate) fn bounds(&self) -> Vec<&str> {
        let lower = self.lower.map(|l| match l {
            Lower::From(s) | Lower::After(s) => s,
        });
        lower.into_iter().chain(self.upper.as_deref()).collect()
    }
}

/// The least string greater than every string starting with `prefix` (in code point order,
/// which is UTF-8 byte order): the prefix with its last character incremented. `None` when
/// no such string exists (every character is `char::MAX`).
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'), // skip the surrogates
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

// --- Whole-store export and import (`tandem export --all` / `tandem import`) ---------------

/// Every snapshot of document `$1`, ascending.
pub(crate) const ALL_SNAPSHOTS: &str = "SELECT seq, state, state_vector, created_at \
     FROM snapshots WHERE doc_id = $1 ORDER BY seq";

/// Documents (live or tombstones) plus revocations: 0 for a store nothing was ever written to.
pub(crate) const COUNT_CONTENT: &str =
    "SELECT (SELECT count(*) FROM documents) + (SELECT count(*) FROM revocations)";

/// A document row with the times it had in the exported store; nothing if the name is taken.
pub(crate) const IMPORT_DOCUMENT: &str = "INSERT INTO documents (name, created_at, deleted_at) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING id";

/// After a document's log is restored: the highest seq ever logged (the log may have been
/// pruned, or the document deleted) and the time of its last change, as exported.
pub(crate) const FINISH_IMPORT: &str =
    "UPDATE documents SET last_seq = $2, last_change_at = $3 WHERE id = $1";

/// A snapshot with its own time.
pub(crate) const IMPORT_SNAPSHOT: &str = "INSERT INTO snapshots \
     (doc_id, seq, state, state_vector, created_at) VALUES ($1, $2, $3, $4, $5)";

/// A label with its own time.
pub(crate) const IMPORT_LABEL: &str =
    "INSERT INTO labels (doc_id, seq, name, created_at) VALUES ($1, $2, $3, $4)";

// --- Webhook outbox (`--webhook-url`) ------------------------------------------------------

/// Marks the first start with webhooks at `$1` (nothing if a start was marked before).
pub(crate) const WEBHOOK_START: &str =
    "INSERT INTO webhook_state (id, since) VALUES (1, $1) ON CONFLICT (id) DO NOTHING";

/// At the first start with webhooks: every existing document counts as announced up to its
/// current seq (its old history is not announced). (`WHERE true`: SQLite would read the
/// `ON` of an upsert after a bare `FROM` as a join's.)
pub(crate) const WEBHOOK_BASELINE: &str = "INSERT INTO webhook_cursors (doc_id, notified_seq) \
     SELECT id, last_seq FROM documents WHERE true ON CONFLICT (doc_id) DO NOTHING";

/// Names of the live documents whose log moved past their cursor (no cursor: past 0).
pub(crate) const WEBHOOK_BEHIND: &str = "SELECT d.name FROM documents d \
     LEFT JOIN webhook_cursors c ON c.doc_id = d.id \
     WHERE d.deleted_at IS NULL AND d.last_seq > COALESCE(c.notified_seq, 0) ORDER BY d.id";

/// Document `$1`'s id, deletion, last seq and announcement cursor.
pub(crate) const WEBHOOK_CURSOR: &str = "SELECT d.id, d.deleted_at, d.last_seq, c.notified_seq FROM documents d \
     LEFT JOIN webhook_cursors c ON c.doc_id = d.id WHERE d.name = $1";

/// The first cursor of document `$1`, at `$2`; nothing if it has one.
pub(crate) const WEBHOOK_CURSOR_CREATE: &str = "INSERT INTO webhook_cursors (doc_id, notified_seq) \
     VALUES ($1, $2) ON CONFLICT (doc_id) DO NOTHING";

/// Moves document `$1`'s cursor to `$2` if it is still at `$3`.
pub(crate) const WEBHOOK_CURSOR_MOVE: &str =
    "UPDATE webhook_cursors SET notified_seq = $2 WHERE doc_id = $1 AND notified_seq = $3";

/// Queues a delivery due at `$5` (also its creation time); nothing if the event is queued for
/// that URL already.
pub(crate) const WEBHOOK_ENQUEUE: &str = "INSERT INTO webhook_outbox \
     (event_id, url, event, body, attempts, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, 0, $5, $5) ON CONFLICT (event_id, url) DO NOTHING";

/// Claims at most `$3` deliveries due at `$1`, the longest due first, by moving their next
/// attempt to `$2` (a lease: another server on the same database does not take them, and if
/// this one dies they are due again at `$2`). The outer `next_attempt_at <= $1` makes a
/// concurrent claim of the same rows (Postgres re-checks it on the updated row) take nothing.
pub(crate) const WEBHOOK_CLAIM: &str = "UPDATE webhook_outbox SET next_attempt_at = $2 \
     WHERE next_attempt_at <= $1 AND id IN (SELECT id FROM webhook_outbox \
         WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $3) \
     RETURNING id, event_id, url, event, body, attempts, created_at";

/// Gives claimed delivery `$1` back, due at `$2` (a server stopping mid-batch).
pub(crate) const WEBHOOK_RELEASE: &str =
    "UPDATE webhook_outbox SET next_attempt_at = $2 WHERE id = $1";

/// Delivery `$1` was answered 2xx.
pub(crate) const WEBHOOK_DONE: &str = "DELETE FROM webhook_outbox WHERE id = $1";

/// Delivery `$1` failed with `$3`; next attempt at `$2`.
pub(crate) const WEBHOOK_RETRY: &str = "UPDATE webhook_outbox \
     SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1";

/// Deliveries waiting, those that failed at least `$1` times, and the next due time.
pub(crate) const WEBHOOK_STATS: &str = "SELECT count(*) AS pending, \
     CAST(COALESCE(sum(CASE WHEN attempts >= $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS failing, \
     min(next_attempt_at) AS next_due FROM webhook_outbox";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_increments_the_last_character() {
        assert_eq!(successor("a").as_deref(), Some("b"));
        assert_eq!(successor("notes/").as_deref(), Some("notes0"));
        assert_eq!(successor("a%").as_deref(), Some("a&"));
        assert_eq!(successor("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(successor("x\u{10FFFF}").as_deref(), Some("y"));
        assert_eq!(successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(successor(""), None);
        // Everything starting with the prefix sorts below its successor.
        let s = successor("ab\u{FFFF}").unwrap_or_default();
        assert!("ab\u{FFFF}\u{10FFFF}zzz" < s.as_str());
        assert!("ab\u{10000}" >= s.as_str());
    }

    #[test]
    fn list_bounds() {
        let all = DocumentList::new(None, None);
        assert!(all.bounds().is_empty());
        assert!(
            all.sql("n")
                .contains("WHERE d.deleted_at IS NULL ORDER BY n LIMIT $1)")
        );

        let prefixed = DocumentList::new(Some("a_"), None);
        assert_eq!(prefixed.bounds(), vec!["a_", "a`"]);
        assert!(
            prefixed
                .sql("n")
                .contains("AND n >= $1 AND n < $2 ORDER BY n LIMIT $3)")
        );

        // The cursor wins when it lies inside the prefix's range...
        let paged = DocumentList::new(Some("a"), Some("ab"));
        assert_eq!(paged.bounds(), vec!["ab", "b"]);
        assert!(paged.sql("n").contains("AND n > $1 AND n < $2 ORDER BY"));
        // ...and the prefix when the cursor lies before it.
        let before = DocumentList::new(Some("b"), Some("a"));
        assert_eq!(before.bounds(), vec!["b", "c"]);
        assert!(before.sql("n").contains("AND n >= $1 AND n < $2"));

        let cursor_only = DocumentList::new(Some(""), Some("m"));
        assert_eq!(cursor_only.bounds(), vec!["m"]);
        assert!(
            cursor_only
                .sql("n")
                .contains("AND n > $1 ORDER BY n LIMIT $2)")
        );
        assert!(cursor_only.sql("n").ends_with(") d ORDER BY n"));
    }

    #[test]
    fn log_pages() {
        assert_eq!(
            log_page_sql(Direction::Before, false),
            "SELECT seq, created_at, size, author FROM updates \
             WHERE doc_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        assert!(log_page_sql(Direction::After, true).contains(", data FROM"));
    }
}
