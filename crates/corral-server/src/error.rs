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
    /// `model 'x' not found`, Ollama's 404.
    pub fn model_not_found(name: &str) -> Self {
        Self::not_found(format!("model '{name}' not found"))
    }
}

impl From<corral_store::StoreError> for ApiError {
    fn from(e: corral_store::StoreError) -> Self {
        match e {
            corral_store::StoreError::NotFound(n) => ApiError::model_not_found(&n),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
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

/// An error in the shape of the route family a path belongs to: OpenAI's for `/v1/`, else
/// Ollama's `{"error": "..."}`.
pub fn family_error(path: &str, status: StatusCode, message: String) -> Response {
    if path.starts_with("/v1/") {
        openai_error(status, message)
    } else {
        ApiError::new(status, message).into_response()
    }
}
