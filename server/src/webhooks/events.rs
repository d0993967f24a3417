//! The events Tandem sends: their JSON bodies and idempotency keys.
//!
//! Every body is `{"id", "type", "time", "document", "data"}`. The id is the idempotency key
//! (also sent as `Tandem-Webhook-Id`); it is derived from what the event announces (document
//! id, event type, seqs), so an event queued twice, by two servers or after a crash, has one
//! id, and the outbox stores it once per receiver.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::{Value, json};

/// A document's first changes became durable.
pub(crate) const CREATED: &str = "document.created";
/// Changes became durable (coalesced: a seq range and its authors).
pub(crate) const CHANGED: &str = "document.changed";
/// An administrator restored the document to an earlier point.
pub(crate) const RESTORED: &str = "document.restored";
/// An administrator deleted the document.
pub(crate) const DELETED: &str = "document.deleted";

/// An event ready to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Idempotency key.
    pub(crate) id: String,
    /// One of the constants above.
    pub(crate) kind: &'static str,
    /// The JSON body, exactly as it is signed and sent.
    pub(crate) body: String,
}

/// Durable changes not yet announced: seqs `first..=last` of one document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Range {
    /// First seq of the range.
    pub(crate) first: i64,
    /// Last seq of the range.
    pub(crate) last: i64,
    /// Log rows in the range (fewer than `last - first + 1` only if retention pruned some).
    pub(crate) changes: i64,
    /// Distinct authors of those rows, sorted (changes without an author are not listed).
    pub(crate) authors: BTreeSet<String>,
}

impl Event {
    fn new(id: String, kind: &'static str, document: &str, data: Value) -> Event {
        let body = json!({
            "id": id,
            "type": kind,
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "document": document,
            "data": data,
        });
        Event {
            id,
            kind,
            body: body.to_string(),
        }
    }

    /// `document.created`: `data.seq` is the document's first announced seq.
    pub(crate) fn created(doc_id: i64, name: &str, seq: i64) -> Event {
        Event::new(
            format!("doc{doc_id}.created"),
            CREATED,
            name,
            json!({ "seq": seq }),
        )
    }

    /// `document.changed` for `range`.
    pub(crate) fn changed(doc_id: i64, name: &str, range: &Range) -> Event {
        Event::new(
            format!("doc{doc_id}.changed.{}-{}", range.first, range.last),
            CHANGED,
            name,
            json!({
                "first_seq": range.first,
                "last_seq": range.last,
                "changes": range.changes,
                "authors": range.authors,
            }),
        )
    }

    /// `document.restored`: change `seq` put back the content of `restored_to`.
    pub(crate) fn restored(
        doc_id: i64,
        name: &str,
        seq: i64,
        restored_to: i64,
        author: &str,
    ) -> Event {
        Event::new(
            format!("doc{doc_id}.restored.{seq}"),
            RESTORED,
            name,
            json!({ "seq": seq, "restored_to": restored_to, "author": author }),
        )
    }

    /// `document.deleted`.
    pub(crate) fn deleted(doc_id: i64, name: &str) -> Event {
        Event::new(format!("doc{doc_id}.deleted"), DELETED, name, json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_ids() {
        let range = Range {
            first: 3,
            last: 7,
            changes: 5,
            authors: ["bob".to_string(), "ada".to_string()].into(),
        };
        let e = Event::changed(12, "notes/plan", &range);
        assert_eq!(e.id, "doc12.changed.3-7");
        let v: Value = serde_json::from_str(&e.body).expect("json");
        assert_eq!(v["type"], "document.changed");
        assert_eq!(v["id"], "doc12.changed.3-7");
        assert_eq!(v["document"], "notes/plan");
        assert_eq!(
            v["data"],
            json!({"first_seq": 3, "last_seq": 7, "changes": 5, "authors": ["ada", "bob"]})
        );
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(Event::deleted(12, "x").id, "doc12.deleted");
        assert_eq!(Event::restored(1, "x", 9, 3, "admin").id, "doc1.restored.9");
    }
}
