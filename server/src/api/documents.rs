//! Reading a document and writing updates to it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::{ApiError, Scope, caller, doc_name};
use crate::admin::documents::{AppliedChange, applied_answer, update_response};
use crate::admin::openapi::{
    BadRequest, DocName, Forbidden, Gone, Internal, NotFound, PayloadTooLarge, Unauthorized,
    Unavailable, YjsUpdate,
};
use crate::http::AppState;
use crate::room::{Applied, Command};

/// `?format=&sv=` of a read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadQuery {
    /// `json` (default): the content as JSON; `binary`: a Yjs update.
    format: Option<String>,
    /// With `format=binary`: a base64 Yjs state vector; only what it lacks is returned.
    sv: Option<String>,
}

/// A document's content as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DocumentContent {
    /// The document.
    name: String,
    /// The newest change the content covers.
    seq: i64,
    /// `{root: {"kind", "value"}}`, as the admin state renders it.
    #[schema(value_type = Object)]
    content: serde_json::Value,
}

/// `GET /documents/{name}`: the current content as JSON with its seq, or (`?format=binary`)
/// as a Yjs update, only what `?sv=<base64 state vector>` lacks when given.
#[utoipa::path(
    get,
    path = "/api/v1/documents/{name}",
    operation_id = "readDocument",
    tag = "backends",
    summary = "Read a document",
    params(DocName, ReadQuery),
    responses(
        (status = 200, description = "The content as JSON, or with format=binary a Yjs update (X-Tandem-Seq: the seq it covers).", body = DocumentContent),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable),
        (status = 500, response = Internal),
    ),
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = doc_name(&state, name)?;
    caller(&state, &headers, Scope::Document(&name))?;
    let Query(q) = query?;
    let binary = match q.format.as_deref() {
        None | Some("json") => false,
        Some("binary") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be json or binary, not {other:?}"
            )));
        }
    };
    let sv = match &q.sv {
        None => None,
        Some(_) if !binary => {
            return Err(ApiError::bad_request("sv needs format=binary"));
        }
        Some(text) => Some(state_vector(text)?),
    };
    let (seq, update) = export(&state, &name).await?;
    let answer = tokio::task::spawn_blocking(move || {
        let doc = Doc::new();
        crate::room::core::RoomCore::apply_state(&doc, &update)?;
        Ok::<_, String>(match sv {
            Some(sv) => Err(doc.transact().encode_state_as_update_v1(&sv)),
            None if binary => Err(update),
            None => Ok(crate::history::json::content_json(&doc)),
        })
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
    .map_err(|e| {
        tracing::error!(error = %e, "document API: the document's own state did not apply");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    Ok(match answer {
        Ok(content) => {
            let body = DocumentContent { name, seq, content };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(update) => update_response(seq, update),
    })
}

/// A base64 (standard or URL-safe, padding optional) encoded Yjs state vector.
fn state_vector(text: &str) -> Result<StateVector, ApiError> {
    let bytes = decode_base64(text).ok_or_else(|| ApiError::bad_request("sv is not base64"))?;
    StateVector::decode_v1(&bytes)
        .map_err(|_| ApiError::bad_request("sv is not a Yjs state vector"))
}

/// Decodes base64 in any of the common alphabets (query strings often carry URL-safe).
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// The document's state through its room (loading it if needed), with the seq it covers.
/// 404 for a document that was never written.
pub(super) async fn export(state: &AppState, name: &str) -> Result<(i64, Vec<u8>), ApiError> {
    let exists = match state.shared.storage.store() {
        Some(store) => store.document(name).await?.is_some(),
        None => state.registry.is_open(name),
    };
    if !exists {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such document"));
    }
    Ok(state
        .registry
        .command(name, true, |reply| Command::Export { reply })
        .await?)
}

/// `POST /documents/{name}/updates`: applies a Yjs update (binary body) through the live
/// room, like a client's; answers once it is durable, with its seq.
#[utoipa::path(
    post,
    path = "/api/v1/documents/{name}/updates",
    operation_id = "writeUpdate",
    tag = "backends",
    summary = "Apply a Yjs update, answered once durable",
    params(DocName),
    request_body(content = YjsUpdate, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Durable; connected editors have it.", body = AppliedChange),
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
pub(crate) async fn write(
    State(state): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = doc_name(&state, name)?;
    let who = caller(&state, &headers, Scope::Document(&name))?;
    who.require_write()?;
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body must be a Yjs update (application/octet-stream)",
        ));
    }
    // Walked and decoded here so a bad body never reaches (or loads) the room.
    crate::protocol::decode_update(&body, state.shared.config.max_nesting_depth).map_err(|e| {
        state
            .shared
            .metrics
            .update_refused(crate::protocol::malformed(&e).label());
        ApiError::bad_request(format!("not a valid Yjs update: {e}"))
    })?;
    let author = who.author.unwrap_or_else(|| "api".into());
    let update = body.to_vec();
    let applied = state
        .registry
        .command(&name, true, |reply| Command::Merge {
            update: update.clone(),
            author: author.clone(),
            reply,
        })
        .await?;
    durable_answer(applied).await
}

/// Waits until a change is durable (the admin API's rule: 503 after 10 s, the change stays
/// queued); answers `{"seq", "changed"}`.
pub(super) async fn durable_answer(applied: Applied) -> Result<Response, ApiError> {
    let answer = applied_answer(applied).await?;
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}
