//! Every way an HTTP API request fails, mapped to its status and a JSON body
//! `{"error": "..."}` in one place.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::protocol::clip::{self, clip};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// 400: malformed body or parameters.
    BadRequest(String),
    /// 401: bad signature, key, timestamp or body hash.
    Unauthorized(String),
    /// 403: the app is disabled.
    Forbidden(String),
    /// 404: unknown app or path.
    NotFound(String),
    /// 405: known path, wrong method.
    MethodNotAllowed(String),
    /// 408: the request body did not arrive in time.
    RequestTimeout(String),
    /// 413: event data or request body too large.
    PayloadTooLarge(String),
    /// 429: too many connections from one address, or over the app's rate limit.
    TooManyRequests(String),
    /// 503: the server is draining.
    Unavailable(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::RequestTimeout(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::TooManyRequests(m)
            | ApiError::Unavailable(m) => m,
        }
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let message = clip(self.message(), clip::MAX_MESSAGE);
        let body = serde_json::json!({ "error": message }).to_string();
        json_response(self.status(), body)
    }
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
