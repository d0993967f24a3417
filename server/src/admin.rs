//! The admin HTTP API under `/api/v1/admin`, protected by `--admin-token` (off without it).
//!
//! Errors are JSON `{"status": <code>, "reason": "..."}`; internals never leak.

use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use crdt_store::RevocationKind;
use serde::Deserialize;

use crate::http::AppState;
use crate::peer::CloseReason;

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
    /// The change took effect on this server but could not be stored.
    #[error("{0}")]
    Storage(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "status": status.as_u16(), "reason": self.to_string() });
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

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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

/// Admin routes, to be nested under `/api/v1/admin`.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/revocations", post(revoke).delete(lift))
        .layer(axum::middleware::from_fn_with_state(state, require_admin))
}

/// Body of a revocation request: a token id, a user id, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// Token id (`jti`) to revoke.
    pub token_id: Option<String>,
    /// User id (`sub`) whose tokens issued until now are revoked.
    pub user: Option<String>,
}

/// Live connections of a revoked token or user are closed with this.
const REVOKED: CloseReason = CloseReason {
    code: crate::close::REVOKED,
    reason: "token revoked",
    label: "revoked",
};

/// `POST /api/v1/admin/revocations`: revoke, and close matching live connections at once.
async fn revoke(
    State(state): State<AppState>,
    body: Result<Json<RevocationRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(req) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    if req.token_id.is_none() && req.user.is_none() {
        return Err(AdminError::BadRequest(
            "give token_id, user, or both".into(),
        ));
    }
    let now = SystemTime::now();
    {
        let mut revocations = state
            .shared
            .auth
            .revocations
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &req.token_id {
            revocations.revoke_token(t, now);
        }
        if let Some(u) = &req.user {
            revocations.revoke_user(u, now);
        }
    }
    let closed = state.shared.close_matching(
        |peer| {
            req.token_id.is_some() && peer.token_id == req.token_id
                || req.user.is_some() && peer.user == req.user
        },
        REVOKED,
    );
    // In memory and on live connections first (that is what protects), then stored so a
    // restart keeps refusing the token.
    if let Some(store) = state.shared.storage.store() {
        let kinds = [
            (RevocationKind::Token, req.token_id.as_deref()),
            (RevocationKind::User, req.user.as_deref()),
        ];
        for (kind, value) in kinds {
            if let Some(value) = value {
                store.put_revocation(kind, value, now).await.map_err(|e| {
                    AdminError::Storage(format!(
                        "revoked on this server and {closed} connection(s) closed, but storing \
                         the revocation failed ({e}); retry so it survives a restart"
                    ))
                })?;
            }
        }
    }
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({ "revoked": true, "connections_closed": closed })),
    )
        .into_response())
}

/// `DELETE /api/v1/admin/revocations`: lift a revocation.
async fn lift(
    State(state): State<AppState>,
    body: Result<Json<RevocationRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(req) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let lifted = state
        .shared
        .auth
        .revocations
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .lift(req.token_id.as_deref(), req.user.as_deref());
    let mut stored = false;
    if let Some(store) = state.shared.storage.store() {
        let kinds = [
            (RevocationKind::Token, req.token_id.as_deref()),
            (RevocationKind::User, req.user.as_deref()),
        ];
        for (kind, value) in kinds {
            if let Some(value) = value {
                stored |= store
                    .delete_revocation(kind, value)
                    .await
                    .map_err(|e| AdminError::Storage(format!("lifting failed: {e}")))?;
            }
        }
    }
    if !lifted && !stored {
        return Err(AdminError::NotFound("no such revocation".into()));
    }
    Ok((StatusCode::OK, Json(serde_json::json!({ "lifted": true }))).into_response())
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
}
