//! The OpenAPI 3.1 description of the admin API, served at `/api/v1/openapi.json` (no token
//! needed: it describes the API, it grants nothing). Kept as a JSON file next to the handlers;
//! a test checks that every documented operation exists and is protected.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, embedded at build time.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
