//! The admin HTTP API under `/api/v1/admin`, protected by `--admin-token` (off without it):
//! revocations, documents, history, versions. Described for humans in `docs/admin-api.md` and
//! for machines by the OpenAPI document at `/api/v1/openapi.json`.
//!
//! Errors are JSON `{"status": <code>, "reason": "..."}`; internals never leak.

pub(crate) mod documents;
pub(crate) mod history;
pub(crate) mod openapi;
mod revocations;
mod times;

use std::time::{Duration, SystemTime};

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use crdt_store::{DocumentInfo, Store, StoreError};
use serde::Serialize;

use crate::http::AppState;
use crate::room::CommandError;

pub use openapi::{openapi, openapi_json};

/// How long an admin change may take to become durable before the request answers 503 (the
/// change stays accepted and queued; it is not lost).
const DURABLE_WITHIN: Duration = Duration::from_secs(10);

/// An admin API failure, rendered as JSON with its status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No admin token configured: the admin API is off.
    #[error("the admin API is disabled: start tandem with --admin-token")]
    Disabled,
    /// Missing or wrong bearer token.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// The request body or parameters are invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing matched.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a label that exists; history without
    /// durable storage).
    #[error("{0}")]
    Conflict(String),
    /// The document was deleted.
    #[error("document deleted")]
    Gone,
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than `--max-import-size`.
    #[error("request body too large (limit: --max-import-size)")]
    TooLarge,
    /// Storage is unreachable or failed; retry later.
    #[error("{0}")]
    Storage(String),
    /// Something that should not happen; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::Disabled | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Gone => StatusCode::GONE,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error for a document that does not exist.
    fn no_document() -> AdminError {
        AdminError::NotFound("no such document".into())
    }
}

/// The body of every admin error: the HTTP status again and a short human reason.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// The HTTP status of the answer.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for a human; internals are never included.
    pub reason: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            status: status.as_u16(),
            reason: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, AdminError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Deleted(_) => AdminError::Gone,
            StoreError::Conflict(reason) => AdminError::Conflict(reason),
            e => {
                tracing::warn!(error = %e, "admin request: storage failed");
                AdminError::Storage(format!("storage unavailable: {e}"))
            }
        }
    }
}

impl From<CommandError> for AdminError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Deleted => AdminError::Gone,
            CommandError::Invalid(reason) => AdminError::BadRequest(reason),
            CommandError::NoStorage | CommandError::Moved(_) => AdminError::Conflict(e.to_string()),
            CommandError::Unavailable(_) | CommandError::Storage(_) => {
                AdminError::Storage(e.to_string())
            }
        }
    }
}

impl From<JsonRejection> for AdminError {
    fn from(e: JsonRejection) -> Self {
        body_error(e.status(), e.body_text())
    }
}

impl From<BytesRejection> for AdminError {
    fn from(e: BytesRejection) -> Self {
        body_error(e.status(), e.body_text())
    }
}

/// A body that could not be read: too large (413) or otherwise bad (400).
fn body_error(status: StatusCode, text: String) -> AdminError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AdminError::TooLarge
    } else {
        AdminError::BadRequest(text)
    }
}

impl From<QueryRejection> for AdminError {
    fn from(e: QueryRejection) -> Self {
        AdminError::BadRequest(e.body_text())
    }
}

impl From<PathRejection> for AdminError {
    fn from(e: PathRejection) -> Self {
        AdminError::BadRequest(e.body_text())
    }
}

/// Compares without an early exit, so response timing does not reveal the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Middleware: requires `Authorization: Bearer <admin token>`.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.shared.config.admin_token.as_deref() else {
        return AdminError::Disabled.into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(req).await
        }
        _ => AdminError::Unauthorized.into_response(),
    }
}

/// Counts every admin answer with an error status in `/metrics`
/// (`tandem_admin_requests_refused_total{status}`), the bearer check's 401 included.
async fn count_refusals(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        state.shared.metrics.admin_refused(status.as_u16());
    }
    response
}

/// Admin routes, to be nested under `/api/v1/admin`.
pub fn routes(state: AppState) -> Router<AppState> {
    let max_body = state.shared.config.max_import_size;
    Router::new()
        .route(
            "/revocations",
            post(revocations::revoke).delete(revocations::lift),
        )
        .route("/documents", get(documents::list))
        .route(
            "/documents/{name}",
            get(documents::detail).delete(documents::delete),
        )
        .route("/documents/{name}/snapshot", post(documents::snapshot))
        .route("/documents/{name}/disconnect", post(documents::disconnect))
        .route("/documents/{name}/export", get(documents::export))
        .route("/documents/{name}/import", post(documents::import))
        .route("/documents/{name}/timeline", get(history::timeline))
        .route("/documents/{name}/state", get(history::state))
        .route("/documents/{name}/diff", get(history::diff))
        .route("/documents/{name}/restore", post(history::restore))
        .route(
            "/documents/{name}/labels",
            get(history::labels).post(history::add_label),
        )
        .route(
            "/documents/{name}/labels/{label}",
            delete(history::delete_label),
        )
        .fallback(|| async { AdminError::NotFound("no such admin endpoint".into()) })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ))
        .layer(axum::middleware::from_fn_with_state(state, count_refusals))
}

/// The durable store, or 409 when the server keeps documents in memory only.
fn store(state: &AppState) -> Result<&Store, AdminError> {
    state.shared.storage.store().ok_or_else(|| {
        AdminError::Conflict(
            "history needs durable storage; the server runs with --database-url memory".into(),
        )
    })
}

/// A document name from a path segment (already percent-decoded), checked like a room's.
fn doc_name(state: &AppState, raw: String) -> Result<String, AdminError> {
    crate::docname::validate(raw, state.shared.config.max_name_len)
        .map_err(|e| AdminError::BadRequest(e.to_string()))
}

/// The stored document `name`: 404 if it never existed, 410 if deleted.
async fn document(store: &Store, name: &str) -> Result<DocumentInfo, AdminError> {
    let info = store
        .document(name)
        .await?
        .ok_or_else(AdminError::no_document)?;
    if info.deleted_at.is_some() {
        return Err(AdminError::Gone);
    }
    Ok(info)
}

/// RFC 3339 UTC with milliseconds, the API's time format.
fn time_str(t: SystemTime) -> String {
    times::format(t)
}

/// An API time: RFC 3339 with any UTC offset, or unix milliseconds (see [`times`]).
fn parse_time(s: &str) -> Result<SystemTime, AdminError> {
    times::parse(s).map_err(|e| AdminError::BadRequest(e.to_string()))
}

/// The latest stored instant a request's time `t` covers: API times have millisecond
/// precision but Postgres stores microseconds, so "at 12:00:00.842" must include a change
/// made at 12:00:00.842384 (the whole millisecond). A time given more precisely than the
/// millisecond is taken as it is.
fn covered_until(t: SystemTime) -> SystemTime {
    let sub_ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 1_000_000);
    if sub_ms == 0 {
        t + Duration::from_micros(999)
    } else {
        t
    }
}

/// A point in a document's history as a request names it: at most one of a sequence number,
/// a time or a label.
#[derive(Debug, Default)]
struct Point {
    seq: Option<i64>,
    at: Option<String>,
    label: Option<String>,
}

impl Point {
    /// The sequence number this point names (`None`: no point given), checked against the
    /// document's newest change.
    async fn resolve(
        &self,
        store: &Store,
        doc: &DocumentInfo,
        what: &str,
    ) -> Result<Option<i64>, AdminError> {
        let given = [self.seq.is_some(), self.at.is_some(), self.label.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(AdminError::BadRequest(format!(
                "give one of {what}seq, {what}at or {what}label"
            )));
        }
        let seq = if let Some(seq) = self.seq {
            if seq < 0 || seq > doc.last_seq {
                return Err(AdminError::BadRequest(format!(
                    "{what}seq {seq} is outside 0..={}",
                    doc.last_seq
                )));
            }
            seq
        } else if let Some(at) = &self.at {
            store
                .seq_at_time(doc.doc_id, covered_until(parse_time(at)?))
                .await?
        } else if let Some(label) = &self.label {
            store
                .label(doc.doc_id, label)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no label {label:?}")))?
                .seq
        } else {
            return Ok(None);
        };
        Ok(Some(seq))
    }
}

/// A JSON 200 response.
fn ok<T: Serialize>(body: T) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn times() {
        let t = parse_time("2026-11-25T18:49:10.123Z").unwrap();
        assert_eq!(time_str(t), "2026-11-25T18:49:10.123Z");
        assert_eq!(
            parse_time("1000").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1)
        );
        assert_eq!(
            parse_time("2026-11-25T20:49:10.123+02:00").unwrap(),
            t,
            "one helper for every time: offsets count"
        );
        assert_eq!(covered_until(t), t + Duration::from_micros(999));
        let precise = parse_time("2026-11-25T18:49:10.123456Z").unwrap();
        assert_eq!(covered_until(precise), precise);
        assert!(parse_time("yesterday").is_err());
    }
}
