//! Revocations: `POST`/`DELETE /api/v1/admin/revocations` close and refuse a token or user.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crdt_store::RevocationKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AdminError;
use super::openapi::{BadRequest, Internal, NotFound, PayloadTooLarge, Unauthorized, Unavailable};
use crate::close::Close;
use crate::http::AppState;

/// Body of a revocation request: a token id, a user id, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevocationRequest {
    /// Token id (`jti`) to revoke.
    pub token_id: Option<String>,
    /// User id (`sub`) whose tokens issued until now are revoked.
    pub user: Option<String>,
}

/// The answer to a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Revoked {
    /// Always true.
    revoked: bool,
    /// Live connections closed with 4403.
    connections_closed: usize,
}

/// The answer to lifting a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Lifted {
    /// Always true.
    lifted: bool,
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
#[utoipa::path(
    post,
    path = "/api/v1/admin/revocations",
    operation_id = "revoke",
    tag = "revocations",
    summary = "Revoke a token id or a user",
    description = "Closes the matching live connections at once with 4403 and refuses the token (or the user's tokens issued until now) from then on; stored, so a restart keeps refusing.",
    request_body(content = RevocationRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Revoked.", body = Revoked),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
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
    state.shared.tell_cluster(crate::cluster::Control::Revoked {
        token_id: req.token_id.clone(),
        user: req.user.clone(),
        at_ms: now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    });
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
        Json(Revoked {
            revoked: true,
            connections_closed: closed,
        }),
    )
        .into_response())
}

/// `DELETE /api/v1/admin/revocations`: lift a revocation.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/revocations",
    operation_id = "liftRevocation",
    tag = "revocations",
    summary = "Lift a revocation",
    request_body(content = RevocationRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Lifted.", body = Lifted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
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
    state.shared.tell_cluster(crate::cluster::Control::Lifted {
        token_id: req.token_id.clone(),
        user: req.user.clone(),
    });
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
    Ok((StatusCode::OK, Json(Lifted { lifted: true })).into_response())
}
