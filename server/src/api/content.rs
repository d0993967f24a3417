//! Setting a document's content from JSON (`PUT /documents/{name}/content`).
//!
//! The body names root fields and the content each should have; the document is edited into
//! it through the restore machinery (minimal, identity-keeping edits, one change), so open
//! editors keep their carets and undo history and see only what changed. Roots not named are
//! left alone.
//!
//! Field values, by shape (the same rendering the read API and the admin state use):
//! - a string: a `Y.Text`;
//! - `{"type": "doc", "content": [...]}`: a `Y.XmlFragment` holding that ProseMirror document
//!   the way y-prosemirror / TipTap store it (element tag = node type, node attrs as element
//!   attributes, runs of text nodes as one `Y.XmlText` with each mark as a formatting
//!   attribute whose value is the mark's attrs object);
//! - any other object: a `Y.Map` of JSON values; an array: a `Y.Array` of JSON values.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map as JsonMap, Value};
use utoipa::{IntoParams, ToSchema};
use yrs::types::Attrs;
use yrs::{
    Any, Array, Doc, Map, Text, Transact, TransactionMut, WriteTxn, Xml, XmlElementPrelim,
    XmlFragment, XmlTextPrelim,
};

use super::documents::durable_answer;
use super::{ApiError, Scope, caller, doc_name};
use crate::admin::openapi::{
    BadRequest, Conflict, DocName, Forbidden, Gone, Internal, NotFound, PayloadTooLarge,
    Unauthorized, Unavailable,
};
use crate::history::kinds::{RootKind, root_kinds_in};
use crate::http::AppState;
use crate::room::{Command, ReplaceScope};

/// Body of a content write.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContentBody {
    /// Root name → content: a string (Y.Text), a ProseMirror document `{"type": "doc", ...}`
    /// (Y.XmlFragment), another object (Y.Map) or an array (Y.Array).
    #[schema(value_type = Object)]
    fields: JsonMap<String, Value>,
}

/// `?if-seq=N`: only if the document is not past change N.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ContentQuery {
    /// Apply only if the document is not past this sequence number (409 otherwise).
    #[serde(rename = "if-seq")]
    #[param(rename = "if-seq")]
    if_seq: Option<i64>,
}

/// `PUT /documents/{name}/content`.
#[utoipa::path(
    put,
    path = "/api/v1/documents/{name}/content",
    operation_id = "putContent",
    tag = "backends",
    summary = "Set the content of some fields with minimal, identity-keeping edits",
    params(DocName, ContentQuery),
    request_body = ContentBody,
    responses(
        (status = 200, description = "Durable; connected editors see only what changed.", body = crate::admin::documents::AppliedChange),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ContentQuery>, QueryRejection>,
    body: Result<Json<ContentBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let name = doc_name(&state, name)?;
    let who = caller(&state, &headers, Scope::Document(&name))?;
    who.require_write()?;
    let Query(q) = query?;
    let Json(body) = body?;
    if body.fields.is_empty() {
        return Err(ApiError::bad_request("fields must name at least one root"));
    }
    if q.if_seq.is_some_and(|n| n < 0) {
        return Err(ApiError::bad_request(
            "if-seq must be a sequence number >= 0",
        ));
    }
    let roots: BTreeSet<String> = body.fields.keys().cloned().collect();
    let current = current_kinds(&state, &name).await?;
    let target = tokio::task::spawn_blocking(move || build(&body.fields, &current))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))??;
    let author = who.author.unwrap_or_else(|| "api".into());
    let scope = ReplaceScope {
        roots: Some(Arc::new(roots)),
        if_seq: q.if_seq,
    };
    let applied = state
        .registry
        .command(&name, true, |reply| Command::Replace {
            target: target.clone(),
            author: author.clone(),
            scope: scope.clone(),
            reply,
        })
        .await?;
    durable_answer(applied).await
}

/// The kinds of the document's roots now (none for a document never written).
async fn current_kinds(
    state: &AppState,
    name: &str,
) -> Result<Vec<(Arc<str>, RootKind)>, ApiError> {
    let update = match super::documents::export(state, name).await {
        Ok((_, update)) => update,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    tokio::task::spawn_blocking(move || {
        let doc = Doc::new();
        crate::room::core::RoomCore::apply_state(&doc, &update)
            .map(|()| root_kinds_in(&doc.transact()))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
    .map_err(|e| {
        tracing::error!(error = %e, "content API: the document's own state did not apply");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// The kind a field's JSON value asks for.
fn kind_of(value: &Value) -> RootKind {
    match value {
        Value::String(_) => RootKind::Text,
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("doc") => RootKind::Xml,
        Value::Array(_) => RootKind::Array,
        _ => RootKind::Map,
    }
}

/// A document holding `fields`. A field whose root already exists with another kind is
/// refused: clients have that root typed, and changing its type would break them.
pub(crate) fn build(
    fields: &JsonMap<String, Value>,
    current: &[(Arc<str>, RootKind)],
) -> Result<Doc, ApiError> {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    for (name, value) in fields {
        if name.is_empty() {
            return Err(ApiError::bad_request("a field name must not be empty"));
        }
        let kind = kind_of(value);
        if let Some((_, existing)) = current.iter().find(|(n, _)| &**n == name)
            && *existing != kind
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("field {name:?} is a {existing:?} root in the document, not a {kind:?}"),
            ));
        }
        match value {
            Value::String(s) => {
                let text = txn.get_or_insert_text(name.as_str());
                text.insert(&mut txn, 0, s);
            }
            Value::Object(o) if kind == RootKind::Xml => {
                let fragment = txn.get_or_insert_xml_fragment(name.as_str());
                let content = children(o, name)?;
                fill_fragment(&mut txn, &fragment, content, name)?;
            }
            Value::Array(items) => {
                let array = txn.get_or_insert_array(name.as_str());
                for item in items {
                    array.push_back(&mut txn, any(item)?);
                }
            }
            Value::Object(o) => {
                let map = txn.get_or_insert_map(name.as_str());
                for (k, v) in o {
                    map.insert(&mut txn, k.as_str(), any(v)?);
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "field {name:?}: expected a string, a ProseMirror document, an object or \
                     an array, not {other}"
                )));
            }
        }
    }
    drop(txn);
    Ok(doc)
}

/// A JSON value as a Yjs value.
fn any(value: &Value) -> Result<Any, ApiError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ApiError::bad_request(format!("not a JSON value Yjs can hold: {e}")))
}

/// The `content` array of a ProseMirror node (absent = empty).
fn children<'a>(node: &'a JsonMap<String, Value>, field: &str) -> Result<&'a [Value], ApiError> {
    match node.get("content") {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::bad_request(format!(
            "field {field:?}: a node's content must be an array"
        ))),
    }
}

/// Appends ProseMirror nodes to an XML fragment or element: elements for nodes, one
/// `XmlText` per run of text nodes.
fn fill_fragment<F: XmlFragment>(
    txn: &mut TransactionMut,
    parent: &F,
    nodes: &[Value],
    field: &str,
) -> Result<(), ApiError> {
    let mut run: Option<yrs::XmlTextRef> = None;
    for node in nodes {
        let Value::Object(node) = node else {
            return Err(ApiError::bad_request(format!(
                "field {field:?}: a ProseMirror node must be an object"
            )));
        };
        let Some(kind) = node
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::bad_request(format!(
                "field {field:?}: a ProseMirror node needs a \"type\""
            )));
        };
        if kind == "text" {
            let Some(text) = node.get("text").and_then(Value::as_str) else {
                return Err(ApiError::bad_request(format!(
                    "field {field:?}: a text node needs a \"text\" string"
                )));
            };
            let xml_text = match &run {
                Some(t) => t.clone(),
                None => {
                    let t = parent.push_back(txn, XmlTextPrelim::new(""));
                    run = Some(t.clone());
                    t
                }
            };
            let attrs = marks(node, field)?;
            let at = xml_text.len(txn);
            xml_text.insert_with_attributes(txn, at, text, attrs);
            continue;
        }
        run = None;
        let element = parent.push_back(txn, XmlElementPrelim::empty(kind));
        if let Some(attrs) = node.get("attrs") {
            let Value::Object(attrs) = attrs else {
                return Err(ApiError::bad_request(format!(
                    "field {field:?}: a node's attrs must be an object"
                )));
            };
            // y-prosemirror does not store null attributes.
            for (k, v) in attrs.iter().filter(|(_, v)| !v.is_null()) {
                element.insert_attribute(txn, k.as_str(), any(v)?);
            }
        }
        fill_fragment(txn, &element, children(node, field)?, field)?;
    }
    Ok(())
}

/// A text node's marks as formatting attributes: mark type → its attrs object (`{}` when
/// it has none), as y-prosemirror stores them.
fn marks(node: &JsonMap<String, Value>, field: &str) -> Result<Attrs, ApiError> {
    let mut attrs = Attrs::new();
    let Some(marks) = node.get("marks") else {
        return Ok(attrs);
    };
    let Value::Array(marks) = marks else {
        return Err(ApiError::bad_request(format!(
            "field {field:?}: marks must be an array"
        )));
    };
    for mark in marks {
        let Some(kind) = mark
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::bad_request(format!(
                "field {field:?}: a mark needs a \"type\""
            )));
        };
        let value = match mark.get("attrs") {
            None | Some(Value::Null) => Any::Map(Default::default()),
            Some(v @ Value::Object(_)) => any(v)?,
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "field {field:?}: a mark's attrs must be an object"
                )));
            }
        };
        attrs.insert(Arc::from(kind), value);
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the admin state renders back must be what was put in.
    #[test]
    fn content_round_trips_through_the_rendering() {
        let fields = json!({
            "default": {"type": "doc", "content": [
                {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Plan"}]},
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "Ship "},
                    {"type": "text", "marks": [{"type": "bold"}], "text": "today"},
                    {"type": "text", "marks": [{"type": "link", "attrs": {"href": "https://x.test"}}], "text": "!"}
                ]},
                {"type": "paragraph"}
            ]},
            "title": "The plan",
            "meta": {"owner": "ada", "tags": ["a", "b"]},
            "list": [1, "two", true]
        });
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let doc = build(&fields, &[]).expect("builds");
        let rendered = crate::history::json::content_json(&doc);
        assert_eq!(rendered["default"]["value"], fields["default"]);
        assert_eq!(rendered["title"]["value"], json!("The plan"));
        assert_eq!(rendered["meta"]["value"], fields["meta"]);
        assert_eq!(rendered["list"]["value"], fields["list"]);
    }

    #[test]
    fn a_field_of_another_kind_is_refused() {
        let Value::Object(fields) = json!({"title": {"type": "doc"}}) else {
            unreachable!()
        };
        let current = vec![(Arc::from("title"), RootKind::Text)];
        let err = build(&fields, &current).expect_err("refused");
        assert_eq!(err.status, StatusCode::CONFLICT);
    }

    #[test]
    fn malformed_nodes_are_refused() {
        for bad in [
            json!({"d": {"type": "doc", "content": [{"text": "no type"}]}}),
            json!({"d": {"type": "doc", "content": [{"type": "text"}]}}),
            json!({"d": {"type": "doc", "content": "nope"}}),
            json!({"d": {"type": "doc", "content": [{"type": "p", "attrs": 3}]}}),
            json!({"d": 42}),
        ] {
            let Value::Object(fields) = bad else {
                unreachable!()
            };
            assert_eq!(
                build(&fields, &[]).expect_err("refused").status,
                StatusCode::BAD_REQUEST
            );
        }
    }
}
