//! Revocations: `POST`/`DELETE /api/v1/admin/revocations` close and refuse a token or user.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crdt_store::RevocationKind;
use serde::Deserialize;

use super::AdminError;
use crate::close::Close;
use crate::http::AppState;

/// Body of a revocation request: a token id, a user id, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// Token id (`jti`) to revoke.
    pub token_id: Option<String>,
    /// User id (`sub`) whose tokens issued until now are revoked.
    pub user: Option<String>,
}

impl RevocationRequest {
    /// At least one of the two must be given.
    fn check(&self) -> Result<(), AdminError> {
        if self.token_id.is_none() && self.user.is_none() {
            return Err(AdminError::BadRequest(
                "give token_id, user, or both".into(),
            ));
        }
        Ok(())
    }
}

/// `POST /api/v1/admin/revocations`: revoke, and close matching live connections at once.
pub(super) async fn revoke(
    State(state): State<AppState>,
    body: Result<Json<RevocationRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(req) = body?;
    req.check()?;
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
        Close::Revoked,
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
pub(super) async fn lift(
    State(state): State<AppState>,
    body: Result<Json<RevocationRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(req) = body?;
    req.check()?;
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
