//! initialize, execute, and session read/delete.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lambda_core::{Caller, ExecuteRequest, InitializeRequest};

use crate::dto::{
    ExecuteBody, ExecuteResponse, InitializeBody, InitializeResponse, SessionResponse,
};
use crate::error::ApiError;
use crate::extract::{language_title_header, CacheControlHeader, JsonBody};
use crate::gate::ExecuteLog;
use crate::state::AppState;

fn request_id_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("x-request-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim().to_string()))
            .map_err(|_| ApiError::invalid_request("header X-Request-ID is not valid text")),
    }
}

/// Create a session for a script or a registered function.
#[utoipa::path(post, path = "/api/v1/initialize", tag = "sessions",
    params(("Language-Title" = String, Header, description = "<language>-<title>, e.g. nodejs-calculator"),
           ("X-Request-ID" = Option<String>, Header, description = "the client's id for this session")),
    request_body = InitializeBody,
    responses((status = 200, body = InitializeResponse),
              (status = 400, body = crate::dto::ErrorBody, description = "INVALID_REQUEST or INITIALIZATION_ERROR"),
              (status = 404, body = crate::dto::ErrorBody), (status = 409, body = crate::dto::ErrorBody),
              (status = 413, body = crate::dto::ErrorBody), (status = 503, body = crate::dto::ErrorBody)))]
pub async fn initialize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<JsonBody<InitializeBody>, ApiError>,
) -> Result<Json<InitializeResponse>, ApiError> {
    // The body is read before any header is judged, so a refused request
    // leaves the client's keep-alive connection usable.
    let JsonBody(body) = body?;
    let language_title = language_title_header(&headers)?;
    let request_id = request_id_header(&headers)?;
    let request = InitializeRequest {
        language_title,
        request_id: request_id.clone(),
        context: body.context,
        script_content: body.script_content,
    };
    let initialized = state
        .sessions
        .initialize(&caller, request)
        .await
        .map_err(|error| {
            let error = ApiError::from(error);
            match request_id {
                Some(id) => error.with_request_id(id),
                None => error,
            }
        })?;
    Ok(Json(InitializeResponse {
        request_id: initialized.request_id,
        status: "initialized",
        expires_at: initialized.expires_at,
        created_at: initialized.created_at,
        language_title: initialized.language_title,
        script_hash: initialized.script_hash,
    }))
}

/// Run a session's script with params.
#[utoipa::path(post, path = "/api/v1/execute/{request_id}", tag = "sessions",
    params(("request_id" = String, Path), ("X-Cache-Control" = Option<String>, Header, description = "no-cache | max-age=<seconds>")),
    request_body = ExecuteBody,
    responses((status = 200, body = ExecuteResponse),
              (status = 400, body = crate::dto::ErrorBody, description = "INVALID_REQUEST or INVALID_PARAMS"),
              (status = 404, body = crate::dto::ErrorBody), (status = 460, body = crate::dto::ErrorBody, description = "RUNTIME_ERROR"),
              (status = 503, body = crate::dto::ErrorBody), (status = 504, body = crate::dto::ErrorBody),
              (status = 507, body = crate::dto::ErrorBody)))]
pub async fn execute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(request_id): Path<String>,
    CacheControlHeader(cache): CacheControlHeader,
    body: Result<JsonBody<ExecuteBody>, ApiError>,
) -> Response {
    let mut log = ExecuteLog {
        session_id: request_id.clone(),
        language_title: None,
        cached: false,
        params: None,
    };
    let outcome = match (body, cache) {
        (Err(error), _) | (_, Err(error)) => Err(error),
        (Ok(JsonBody(body)), Ok(cache)) => {
            let request = ExecuteRequest {
                params: body.params,
                cache,
            };
            let outcome = state
                .sessions
                .execute(&caller, &request_id, &request)
                .await
                .map_err(ApiError::from);
            log.params = Some(request.params);
            outcome
        }
    };
    let mut response = match outcome {
        Ok(outcome) => {
            log.language_title = Some(outcome.language_title.clone());
            log.cached = outcome.cached;
            Json(ExecuteResponse {
                request_id: outcome.request_id,
                language_title: outcome.language_title,
                execution_time: outcome.execution_time_ms,
                cached: outcome.cached,
                result: outcome.result,
                logs: outcome.logs,
            })
            .into_response()
        }
        Err(error) => error.with_request_id(request_id.clone()).into_response(),
    };
    response.extensions_mut().insert(log);
    response
}

/// A session's state.
#[utoipa::path(get, path = "/api/v1/sessions/{request_id}", tag = "sessions",
    params(("request_id" = String, Path)),
    responses((status = 200, body = SessionResponse), (status = 404, body = crate::dto::ErrorBody)))]
pub async fn get_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(request_id): Path<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    let view = state
        .sessions
        .get(&caller, &request_id)
        .await
        .map_err(|error| ApiError::from(error).with_request_id(request_id.clone()))?;
    let record = view.record;
    Ok(Json(SessionResponse {
        request_id: record.request_id,
        language_title: record.language_title,
        status: view.status.as_str().to_string(),
        created_at: record.created_at,
        expires_at: record.expires_at,
        execution_count: record.execution_count,
        last_executed_at: record.last_executed_at,
        user_id: record.user_id,
        script_hash: record.script_hash,
        compile_status: record.compile_status,
        compile_error: record.compile_error,
    }))
}

/// End a session.
#[utoipa::path(delete, path = "/api/v1/sessions/{request_id}", tag = "sessions",
    params(("request_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::dto::ErrorBody)))]
pub async fn delete_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(request_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .sessions
        .delete(&caller, &request_id)
        .await
        .map_err(|error| ApiError::from(error).with_request_id(request_id))?;
    Ok(StatusCode::NO_CONTENT)
}
