//! API errors: each maps to one HTTP status and one stable `code`, rendered as
//! `{"error": {"code": "unknown_job", "message": "unknown job `x`"}}`.
//!
//! Codes are a public interface (scripts match on them); add new ones, never rename:
//!
//! | code | status | when |
//! |---|---|---|
//! | `unauthorized` | 401 | POST without a valid `Authorization: Bearer` token |
//! | `token_not_configured` | 403 | POST while `[api] token_file` is not set: the endpoints are disabled |
//! | `unknown_job` | 404 | no such job in the configuration |
//! | `not_found` | 404 | no such route |
//! | `method_not_allowed` | 405 | e.g. GET on a POST endpoint |
//! | `bad_request` | 400 | a path that cannot be read |
//! | `already_running` | 409 | a run of the job is in progress or queued |
//! | `shutting_down` | 503 | the daemon is stopping and takes no new runs |
//! | `not_ready` | 503 | `/readyz` while the daemon is not ready |
//! | `catalog_unavailable` | 503 | the catalog could not be read |

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ControlError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send `Authorization: Bearer TOKEN` (the token in `[api] token_file`)")]
    MissingToken,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("POST endpoints are disabled: set `[api] token_file` to enable them")]
    TokenNotConfigured,
    #[error("unknown job `{0}`")]
    UnknownJob(String),
    #[error("no such endpoint: see `/api/v1/jobs`")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("job `{0}`: a run is already in progress")]
    AlreadyRunning(String),
    #[error("the daemon is shutting down and takes no new runs")]
    ShuttingDown,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("{0}")]
    Catalog(#[from] crate::Error),
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => "unauthorized",
            ApiError::TokenNotConfigured => "token_not_configured",
            ApiError::UnknownJob(_) => "unknown_job",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::AlreadyRunning(_) => "already_running",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Catalog(_) => "catalog_unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::TokenNotConfigured => StatusCode::FORBIDDEN,
            ApiError::UnknownJob(_) | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::AlreadyRunning(_) => StatusCode::CONFLICT,
            ApiError::ShuttingDown | ApiError::NotReady(_) | ApiError::Catalog(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn from_control(e: ControlError, job: &str) -> ApiError {
        match e {
            ControlError::UnknownJob => ApiError::UnknownJob(job.to_string()),
            ControlError::AlreadyRunning => ApiError::AlreadyRunning(job.to_string()),
            ControlError::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Catalog(e) = &self {
            tracing::warn!(error = %crate::redact::scrub(&e.to_string()), "api: catalog unreadable");
        }
        let mut resp =
            json(self.status(), &ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string() } });
        let challenge = match self {
            ApiError::MissingToken => Some("Bearer realm=\"drctl\""),
            ApiError::InvalidToken => Some("Bearer realm=\"drctl\", error=\"invalid_token\""),
            _ => None,
        };
        if let Some(c) = challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

/// A JSON response, scrubbed of every registered secret, never cached.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = match serde_json::to_string(value) {
        Ok(s) => crate::redact::scrub(&s),
        Err(e) => {
            tracing::error!(error = %e, "api: cannot render JSON");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "{\"error\":{\"code\":\"internal\",\"message\":\"cannot render JSON\"}}",
            )
                .into_response();
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
