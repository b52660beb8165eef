//! The JSON error answer every route gives: `{"error": CODE, "detail"?: TEXT}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use tracing::error;

use crate::{
    auth::login::{ChallengeError, LoginError},
    store::StoreError,
};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable code (`invalid_credentials`, `not_found`, ...).
    pub code: &'static str,
    /// What was wrong, for a human; only where it reveals nothing.
    pub detail: Option<String>,
    /// Seconds, for 429: sent as `Retry-After` and in the body.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str) -> ApiError {
        ApiError {
            status,
            code,
            detail: None,
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> ApiError {
        self.detail = Some(detail.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request").detail(detail)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found")
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }

    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        }
    }

    /// The store failed: logged here, answered 503 (never a grant).
    pub fn store(e: &StoreError) -> ApiError {
        error!(error = %e, "store unavailable; refusing the request");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    }

    /// A blocking task panicked or was cancelled.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        error!(error = %e, "{what} failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::store(&e)
    }
}

impl From<ChallengeError> for ApiError {
    fn from(e: ChallengeError) -> Self {
        match e {
            ChallengeError::NotFound => ApiError::not_found(),
            ChallengeError::NotVerified => ApiError::new(StatusCode::CONFLICT, "not_verified"),
            ChallengeError::Gone => ApiError::new(StatusCode::GONE, "gone"),
            ChallengeError::Store(e) => ApiError::store(&e),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            LoginError::NoDialinNumber => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_dialin_number")
            }
            LoginError::NoPhone => ApiError::new(StatusCode::FORBIDDEN, "no_phone")
                .detail("this account has no enrolled phone; ask the operator to add one"),
            LoginError::Store(e) => ApiError::store(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code });
        if let Some(detail) = &self.detail {
            body["detail"] = json!(detail);
        }
        if let Some(secs) = self.retry_after {
            body["retry_after"] = json!(secs);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
