//! The errors of the execution flow. `lambda-api` maps each variant to one
//! status and code of API.md, in one place.

use lambda_runtime::RuntimeError;
use lambda_store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 INVALID_REQUEST: malformed body, header or field.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 INVALID_PARAMS: params fail the function's schema.
    #[error("params do not match the function's schema at '{path}': {message}")]
    InvalidParams { path: String, message: String },
    /// 404 NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// 409 CONFLICT.
    #[error("{0}")]
    Conflict(String),
    /// 413 PAYLOAD_TOO_LARGE.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// 403 FORBIDDEN: the caller lacks the right to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 400 INITIALIZATION_ERROR, 460, 503, 504, 507 or 500 by variant.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// 500 INTERNAL_ERROR (or 503 when the database is unreachable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500 INTERNAL_ERROR: a fault of the platform itself.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn session_not_found() -> Self {
        Error::NotFound("Session not found or expired".to_string())
    }

    /// The API error code, for logs and metrics (the HTTP mapping lives in
    /// `lambda-api`, which uses the same names).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "INVALID_REQUEST",
            Error::InvalidParams { .. } => "INVALID_PARAMS",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Conflict(_) => "CONFLICT",
            Error::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::Runtime(runtime_error) => match runtime_error {
                RuntimeError::Unavailable { .. } | RuntimeError::Busy { .. } => {
                    "RUNTIME_UNAVAILABLE"
                }
                RuntimeError::Initialization { .. } => "INITIALIZATION_ERROR",
                RuntimeError::Script { .. } => "RUNTIME_ERROR",
                RuntimeError::Timeout { .. } => "TIMEOUT",
                RuntimeError::ResourceLimit { .. } => "RESOURCE_LIMIT_EXCEEDED",
                RuntimeError::Internal(_) => "INTERNAL_ERROR",
            },
            Error::Store(StoreError::Conflict { .. }) => "CONFLICT",
            Error::Store(_) | Error::Internal(_) => "INTERNAL_ERROR",
        }
    }
}
