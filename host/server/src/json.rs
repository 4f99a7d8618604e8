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
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
    // Every request body is an object; serde would also read a struct from
    // an array, and say so in its own words.
    if !value.is_object() {
        return Err(ApiError::bad_request("invalid_request", "the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))
}

/// The largest JSON request body.
pub const REQUEST_BODY_LIMIT: usize = 2 << 20;
/// How much of a too-large body is read (and dropped) before the 413 is
/// sent: a client still sending when the server answers sees its
/// connection reset instead of the answer. Past this, the reset it is.
const DRAIN_MAX: usize = 64 << 20;

/// The bytes of a JSON request body, at most [`REQUEST_BODY_LIMIT`]: a
/// larger one is 413 `request_too_large` naming the limit, a body cut off
/// is 400.
pub struct RequestBody(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        use futures_util::StreamExt;
        let mut body = req.into_body().into_data_stream();
        let mut buf = bytes::BytesMut::new();
        let mut seen = 0usize;
        while let Some(data) = body.next().await {
            let data = data
                .map_err(|e| ApiError::bad_request("invalid_request", format!("cannot read the request body: {e}")))?;
            seen += data.len();
            if seen <= REQUEST_BODY_LIMIT {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_MAX {
                break;
            }
        }
        if seen > REQUEST_BODY_LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the request body is larger than the {REQUEST_BODY_LIMIT} bytes a JSON request may be"),
            ));
        }
        Ok(RequestBody(buf.freeze()))
    }
}

/// The canonical form of a JSON body (object keys sorted at every level, no
/// insignificant whitespace), so that requests that mean the same compare
/// equal. A body that is not JSON stays as it is.
pub fn canonical(body: &[u8]) -> Vec<u8> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(sort).collect()),
            other => other,
        }
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_vec(&sort(v)).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    }
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

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn the_canonical_form_ignores_key_order_and_spacing_only() {
        let a = canonical(br#"{"b": {"y": 1, "x": [2, {"k": 1, "j": 0}]}, "a": "s"}"#);
        let b = canonical(br#"{"a":"s","b":{"x":[2,{"j":0,"k":1}],"y":1}}"#);
        assert_eq!(a, b);
        assert_eq!(a, br#"{"a":"s","b":{"x":[2,{"j":0,"k":1}],"y":1}}"#);
        assert_ne!(canonical(br#"{"x": [1, 2]}"#), canonical(br#"{"x": [2, 1]}"#), "array order matters");
        assert_eq!(canonical(b"not json"), b"not json");
    }
}
