//! The one place where errors become HTTP answers: a status code and `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_api::ErrorResponse;
use serde_json::json;

/// An error with the status it answers with. Messages follow Ollama's wording.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// `model 'x' not found`, Ollama's 404 (also for a name that cannot be a model's, as
    /// Ollama answers it); a name past 200 characters is shortened, not echoed whole.
    pub fn model_not_found(name: &str) -> Self {
        Self::not_found(format!(
            "model '{}' not found",
            crate::json::shown(name, 200)
        ))
    }
}

impl From<corral_store::StoreError> for ApiError {
    fn from(e: corral_store::StoreError) -> Self {
        match e {
            corral_store::StoreError::NotFound(n) => ApiError::model_not_found(&n),
            e @ corral_store::StoreError::NameTaken(_) => ApiError::bad_request(e.to_string()),
            // A layer the request names went while it ran (another server on the same store
            // deleted its last model): the request's to repeat, not a fault here.
            corral_store::StoreError::BlobNotFound(d) => ApiError::bad_request(format!(
                "layer {d} is gone from the store (was its model removed meanwhile?)"
            )),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // What the client is told of a fault of the server (or of a runner) is logged too:
        // the log is where an operator looks, and the client may not say.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(status = 500, "{}", self.message);
        }
        (
            self.status,
            Json(ErrorResponse {
                error: self.message,
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An error in OpenAI's shape, with Ollama's types: 400 `invalid_request_error`, 404
/// `not_found_error`, anything else `api_error`.
pub fn openai_error(status: StatusCode, message: impl Into<String>) -> Response {
    let (kind, code) = match status {
        StatusCode::BAD_REQUEST => ("invalid_request_error", None),
        StatusCode::NOT_FOUND => ("not_found_error", Some("model_not_found")),
        StatusCode::UNAUTHORIZED => ("api_error", Some("invalid_api_key")),
        _ => ("api_error", None),
    };
    (
        status,
        Json(json!({"error": {"message": message.into(), "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

/// A native error answer (`{"error": "..."}` with its status) as its status and message, for
/// the routes that answer in another family's shape.
pub async fn native_error(resp: Response) -> (StatusCode, String) {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    (status, message)
}

/// Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`.
pub fn anthropic_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(anthropic_error_body(status, message))).into_response()
}

/// The body of an Anthropic error (also sent as a stream's `error` event).
pub fn anthropic_error_body(status: StatusCode, message: impl Into<String>) -> serde_json::Value {
    // Anthropic's error types by status, as its API documents them.
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    json!({
        "type": "error",
        "error": {"type": kind, "message": message.into()},
        "request_id": format!("req_{}", crate::openai::unique_hex()),
    })
}

/// An error in the shape of the route family a path belongs to: Anthropic's for
/// `/v1/messages`, OpenAI's for the rest of `/v1/`, else Ollama's `{"error": "..."}`.
pub fn family_error(path: &str, status: StatusCode, message: String) -> Response {
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        anthropic_error(status, message)
    } else if path.starts_with("/v1/") {
        openai_error(status, message)
    } else {
        ApiError::new(status, message).into_response()
    }
}
