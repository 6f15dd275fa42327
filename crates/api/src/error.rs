//! The one place where errors become HTTP statuses and API.md codes.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambda_core::Error as CoreError;
use lambda_runtime::RuntimeError;
use lambda_store::StoreError;
use serde_json::{json, Map, Value};

/// 460: the user's code failed (API.md's RUNTIME_ERROR).
pub fn status_runtime_error() -> StatusCode {
    StatusCode::from_u16(460).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
}

/// What an error response carries, also put in the response's extensions so
/// the request log can record it.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
    pub stack_trace: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
    pub request_id: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            request_id: None,
            headers: Vec::new(),
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

fn location_details(mut error: ApiError, location: &lambda_runtime::SourceLocation) -> ApiError {
    if let Some(line) = location.line {
        error = error.detail("line", line);
    }
    if let Some(column) = location.column {
        error = error.detail("column", column);
    }
    error
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        let code = error.code();
        match error {
            CoreError::InvalidRequest(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            CoreError::InvalidParams { ref path, .. } => {
                let path = path.clone();
                ApiError::new(StatusCode::BAD_REQUEST, code, error.to_string()).detail("path", path)
            }
            CoreError::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, code, message),
            CoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, code, message),
            CoreError::PayloadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, error.to_string())
            }
            CoreError::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, code, message),
            CoreError::Runtime(runtime_error) => from_runtime(runtime_error, code),
            CoreError::Store(StoreError::Conflict { what }) => {
                ApiError::new(StatusCode::CONFLICT, code, format!("{what} already exists"))
            }
            CoreError::Store(store_error) => {
                // Database details stay in our logs, never in responses.
                tracing::error!(error = %store_error, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code,
                    "the service's database is unavailable or failed; try again",
                )
            }
            CoreError::Internal(message) => {
                tracing::error!(%message, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error")
            }
        }
    }
}

fn from_runtime(error: RuntimeError, code: &'static str) -> ApiError {
    let message = error.to_string();
    match error {
        RuntimeError::Unavailable { language, .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                .detail("language", language.as_str())
        }
        RuntimeError::Busy {
            language,
            waited_ms,
        } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            .detail("language", language.as_str())
            .detail("waited_ms", waited_ms)
            .with_header(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            ),
        RuntimeError::Initialization { location, .. } => location_details(
            ApiError::new(StatusCode::BAD_REQUEST, code, message.clone()),
            &location,
        )
        .detail("compiler_message", message),
        RuntimeError::Script {
            location,
            stack_trace,
            logs,
            ..
        } => {
            let mut error = location_details(
                ApiError::new(status_runtime_error(), code, message),
                &location,
            );
            if let Some(stack_trace) = stack_trace {
                error = error.detail("stack_trace", stack_trace);
            }
            if !logs.is_empty() {
                error = error.detail("logs", logs);
            }
            error
        }
        RuntimeError::Timeout { timeout_ms } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, code, message)
                .detail("timeout_ms", timeout_ms)
        }
        RuntimeError::ResourceLimit { kind, detail } => ApiError::new(
            StatusCode::from_u16(507).unwrap_or(StatusCode::INSUFFICIENT_STORAGE),
            code,
            message,
        )
        .detail("limit", serde_json::to_value(kind).unwrap_or(Value::Null))
        .detail("detail", detail),
        RuntimeError::Internal(message) => {
            tracing::error!(%message, "runtime fault");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let stack_trace = self
            .details
            .get("stack_trace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            error["details"] = Value::Object(self.details);
        }
        let body = json!({
            "request_id": self.request_id.unwrap_or_default(),
            "error": error,
        });
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            stack_trace,
        });
        response
    }
}
