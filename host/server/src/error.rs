//! API errors: a stable `code`, a message a person can act on, the HTTP
//! status, and the request id (filled in by the request-id middleware).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crownest_core::runs::store::StoreError;
use crownest_core::{ErrorKind, PluginError};
use serde_json::json;

/// An error response before it knows its request id.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.into(), message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn store(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Conflict(m) => Self::conflict("conflict", m),
            StoreError::Db(m) => {
                tracing::error!("store error: {m}");
                Self::internal("the server could not reach its database; try again")
            }
        }
    }

    pub fn plugin(e: PluginError) -> ApiError {
        let status = match e.kind {
            ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Denied => StatusCode::FORBIDDEN,
            ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal | ErrorKind::Fault(_) => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, e.kind.code(), e.message)
    }
}

/// Marker left on error responses so the middleware can add the request id.
#[derive(Clone)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "requestId": null}});
        let mut r = (self.status, axum::Json(body)).into_response();
        r.extensions_mut().insert(ErrorBody { code: self.code.clone(), message: self.message.clone() });
        r
    }
}

/// An error response made outside our handlers (an extractor's rejection,
/// axum's own limits) put in the API's envelope, so every error a client
/// sees has the same shape: `code` by status, the text as the message.
pub async fn envelope_foreign(r: Response) -> Response {
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error()) || r.extensions().get::<ErrorBody>().is_some() {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned());
    let text = text.unwrap_or_default();
    let (status, code) = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => (StatusCode::BAD_REQUEST, "invalid_request"),
        StatusCode::NOT_FOUND => (status, "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "request_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "unsupported_media_type"),
        StatusCode::LENGTH_REQUIRED => (status, "length_required"),
        s if s.is_server_error() => (s, "internal"),
        s => (s, "invalid_request"),
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("request refused").to_string()
    } else {
        text.trim().to_string()
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (k, v) in parts
        .headers
        .iter()
        .filter(|(k, _)| *k != axum::http::header::CONTENT_TYPE && *k != axum::http::header::CONTENT_LENGTH)
    {
        out.headers_mut().insert(k.clone(), v.clone());
    }
    out
}

/// Rewrite an error response with its request id.
pub fn with_request_id(mut r: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    if let Some(body) = r.extensions().get::<ErrorBody>().cloned() {
        let status = r.status();
        let mut out = (
            status,
            axum::Json(json!({"error": {"code": body.code, "message": body.message, "requestId": request_id}})),
        )
            .into_response();
        out.headers_mut()
            .extend(r.headers().clone().into_iter().filter(|(k, _)| k.is_some()).map(|(k, v)| (k.unwrap(), v)));
        out.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return out;
    }
    r
}
