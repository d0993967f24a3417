//! The document API for backends under `/api/v1`: read a document, write to it, set its
//! content, and follow its changes (Server-Sent Events).
//!
//! Every route takes `Authorization: Bearer` with a document JWT (the same claims and rules as
//! a WebSocket connection: grants, access, expiry, revocation; its `sub` is recorded as the
//! author of what it writes) or the admin token. Reading needs `ro` or `rw`; writing `rw`.
//! Errors are JSON `{"status": <code>, "reason": "..."}` like the admin API's.

pub(crate) mod content;
pub(crate) mod documents;
pub(crate) mod events;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use crdt_store::StoreError;

use crate::admin::AdminError;
use crate::auth::{Access, AuthError};
use crate::http::AppState;
use crate::room::CommandError;

/// A failed request: its status and a short reason (never internals).
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct ApiError {
    status: StatusCode,
    reason: String,
    /// A 401 carries `WWW-Authenticate: Bearer`.
    challenge: bool,
}

impl ApiError {
    /// An error with `status` and `reason`.
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
            challenge: status == StatusCode::UNAUTHORIZED,
        }
    }

    /// 400 with `reason`.
    pub(crate) fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::admin::ErrorBody {
            status: self.status.as_u16(),
            reason: self.reason,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        // AdminError's texts are written for callers (internals are logged, not shown).
        let reason = e.to_string();
        ApiError::new(e.into_response().status(), reason)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match e {
            CommandError::Deleted => StatusCode::GONE,
            CommandError::Invalid(_) => StatusCode::BAD_REQUEST,
            CommandError::Moved(_) | CommandError::NoStorage => StatusCode::CONFLICT,
            CommandError::Unavailable(_) | CommandError::Storage(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Deleted(_) => ApiError::new(StatusCode::GONE, "document deleted"),
            StoreError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, reason),
            e => {
                tracing::warn!(error = %e, "document API: storage failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("storage unavailable: {e}"),
                )
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::new(e.status(), e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        ApiError::new(e.status(), e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

/// Who is calling, as established from the bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Recorded as the author of what the caller writes.
    pub author: Option<String>,
    /// What the caller may do.
    pub access: Access,
}

impl Caller {
    /// 403 unless the caller may write.
    fn require_write(&self) -> Result<(), ApiError> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the token grants read-only access",
            )),
        }
    }
}

/// What a caller asks to reach: one document, or every document under a prefix.
pub(crate) enum Scope<'a> {
    /// One document.
    Document(&'a str),
    /// Every document whose name starts with this.
    Prefix(&'a str),
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Authenticates a request for `scope`: the admin token (everything, author `admin`) or a
/// document JWT checked like a WebSocket connection's (open mode: anyone, anonymous).
pub(crate) fn caller(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope<'_>,
) -> Result<Caller, ApiError> {
    let token = bearer(headers);
    if let (Some(token), Some(admin)) = (token, state.shared.config.admin_token.as_deref())
        && crate::admin::constant_time_eq(token.as_bytes(), admin.as_bytes())
    {
        return Ok(Caller {
            author: Some("admin".into()),
            access: Access::ReadWrite,
        });
    }
    let auth = &state.shared.auth;
    let grant = match scope {
        Scope::Document(name) => auth.authorize(token, name),
        Scope::Prefix(prefix) => auth.authorize_prefix(token, prefix),
    }
    .inspect_err(|e| state.shared.metrics.refused(e.label()))?;
    Ok(Caller {
        author: grant.user,
        access: grant.access,
    })
}

/// A document name from a path segment (already percent-decoded), checked like a room's; a
/// deleted document is 410.
pub(crate) fn doc_name(
    state: &AppState,
    raw: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    let name = crate::docname::validate(raw?.0, state.shared.config.max_name_len)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.shared.is_deleted(&name) {
        return Err(ApiError::new(StatusCode::GONE, "document deleted"));
    }
    Ok(name)
}

/// The routes, with their full paths (merged into the server's router beside the admin API).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let max_update = state.shared.config.max_message_size;
    let max_content = state.shared.config.max_import_size;
    Router::new()
        .route("/api/v1/documents/{name}", get(documents::read))
        .route(
            "/api/v1/documents/{name}/updates",
            post(documents::write).layer(DefaultBodyLimit::max(max_update)),
        )
        .route(
            "/api/v1/documents/{name}/content",
            put(content::put).layer(DefaultBodyLimit::max(max_content)),
        )
        .route("/api/v1/documents/{name}/events", get(events::document))
        .route("/api/v1/events", get(events::prefix))
}
