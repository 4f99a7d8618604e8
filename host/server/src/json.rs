//! JSON bodies and responses in the API's envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parse a JSON body; malformed JSON and wrong fields are 400s that say where.
pub fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("malformed_json", "the request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "malformed_json" } else { "invalid_request" };
        ApiError::bad_request(code, format!("invalid JSON body: {e}"))
    })
}

/// `{ "data": value }` with a status.
pub fn data(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(serde_json::json!({ "data": value }))).into_response()
}

/// The raw bytes of an envelope, for idempotent replay.
pub fn envelope_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "data": value })).expect("JSON serializes")
}

/// A stored envelope replayed as a response.
pub fn raw(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
