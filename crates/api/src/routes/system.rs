//! Health, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use utoipa::OpenApi;

use crate::dto::HealthResponse;
use crate::state::AppState;

const DATABASE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Service health: database and every runtime. 503 when the database is unreachable.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(DATABASE_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(error)) => format!("unreachable: {error}"),
        Err(_) => format!(
            "unreachable: no answer within {} s",
            DATABASE_PING_TIMEOUT.as_secs()
        ),
    };
    let database_ok = database == "ok";
    let runtimes: Map<String, Value> = state
        .runtimes
        .statuses()
        .into_iter()
        .map(|(language, status)| {
            (
                language.as_str().to_string(),
                Value::String(status.describe()),
            )
        })
        .collect();
    let body = HealthResponse {
        status: if database_ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        components: serde_json::json!({
            "controller": "ok",
            "database": database,
            "database_backend": state.store.backend(),
            "runtimes": runtimes,
        }),
    };
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("lambda_log_queue_depth").set(state.sessions.batcher().queue_depth() as f64);
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response(),
    }
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::ApiDoc::openapi())
}
