//! `ApiError`: the one error type a request can end in. It knows its status
//! and its `{"detail"}` text; `into_response` is the only place that turns
//! an error into bytes on the wire.

use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use crate::http::body::{self, Body};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("Request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    LengthRequired(&'static str),
    #[error("{0}")]
    PreconditionFailed(&'static str),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_secs: u64 },
    #[error("Request timed out")]
    RequestTimeout,
    #[error("{0}")]
    Gone(&'static str),
    /// A WebSocket handshake for a protocol version other than 13.
    #[error("Unsupported WebSocket version; this server speaks version 13")]
    WebSocketVersion,
    #[error("Server is shutting down")]
    Unavailable,
    /// The database cannot be reached: nothing was done, try again.
    #[error("The database is unavailable; try again shortly")]
    DatabaseDown,
    #[error("{0}")]
    NotImplemented(String),
    #[error("Internal server error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::WebSocketVersion => StatusCode::BAD_REQUEST,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DatabaseDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn unprocessable(detail: impl Into<String>) -> ApiError {
        ApiError::Unprocessable(detail.into())
    }

    /// A 429 that says what was limited and when to come back.
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> ApiError {
        let retry_after_secs = crate::limits::retry_after_secs(wait);
        ApiError::TooManyRequests { detail: format!("{what}; try again in {retry_after_secs} s"), retry_after_secs }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::warn!(%cause, "request failed");
        } else if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let detail = serde_json::json!({ "detail": self.to_string() }).to_string();
        let mut response = Response::new(body::full(detail));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            ApiError::Unauthenticated(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::TooManyRequests { retry_after_secs, .. } => {
                headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::RequestTimeout => {
                headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::WebSocketVersion => {
                headers.insert(hyper::header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Conflict(what) => ApiError::Conflict(what.into()),
            StoreError::Invalid(what) => ApiError::BadRequest(what.into()),
            StoreError::Forbidden(what) => ApiError::Forbidden(what),
            StoreError::Unavailable => ApiError::Unavailable,
            StoreError::Down(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::DatabaseDown
            }
            StoreError::NotInCluster => ApiError::NotImplemented(e.to_string()),
            StoreError::QuotaExceeded(_) | StoreError::TooManyMembers(_) | StoreError::TooManyReactions(_) => {
                ApiError::Unprocessable(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}
