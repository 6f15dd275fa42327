//! The function registry: list, detail, register, update, retire.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use lambda_core::{Caller, FunctionDraft};
use lambda_store::{FunctionFilter, FunctionKind};

use crate::dto::{FunctionBody, FunctionDetail, FunctionList, FunctionQuery, FunctionSummary};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

/// List functions, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/functions", tag = "functions", params(FunctionQuery),
    responses((status = 200, body = FunctionList), (status = 400, body = crate::dto::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<FunctionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FunctionList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
    let kind = match query.kind.as_deref() {
        None => None,
        Some("predefined") => Some(FunctionKind::Predefined),
        Some("dynamic") => Some(FunctionKind::Dynamic),
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "type must be predefined or dynamic, not '{other}'"
            )))
        }
    };
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(20);
    let filter = FunctionFilter {
        language: query.language,
        user_id: query.user_id,
        kind,
        page,
        per_page,
    };
    let (total, functions) = state.registry.list(&caller, filter).await?;
    Ok(Json(FunctionList {
        total,
        page,
        per_page,
        functions: functions.iter().map(FunctionSummary::from).collect(),
    }))
}

/// One function with its script, schema and examples.
#[utoipa::path(get, path = "/api/v1/functions/{language_title}", tag = "functions",
    params(("language_title" = String, Path)),
    responses((status = 200, body = FunctionDetail), (status = 404, body = crate::dto::ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(language_title): Path<String>,
) -> Result<Json<FunctionDetail>, ApiError> {
    let function = state.registry.get(&caller, &language_title).await?;
    Ok(Json(function.into()))
}

fn draft(body: FunctionBody, language_title: String) -> FunctionDraft {
    FunctionDraft {
        language_title,
        description: body.description,
        script_content: body.script_content,
        schema: body.schema,
        examples: body.examples,
        compile_options: body.compile_options,
        tags: body.tags,
    }
}

/// Register a dynamic function.
#[utoipa::path(post, path = "/api/v1/functions", tag = "functions", request_body = FunctionBody,
    responses((status = 201, body = FunctionDetail), (status = 400, body = crate::dto::ErrorBody),
              (status = 409, body = crate::dto::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<FunctionBody>,
) -> Result<(StatusCode, Json<FunctionDetail>), ApiError> {
    let language_title = body
        .language_title
        .clone()
        .ok_or_else(|| ApiError::invalid_request("language_title is required"))?;
    let function = state
        .registry
        .register(&caller, draft(body, language_title))
        .await?;
    Ok((StatusCode::CREATED, Json(function.into())))
}

/// Update a dynamic function (bumps its version).
#[utoipa::path(put, path = "/api/v1/functions/{language_title}", tag = "functions",
    params(("language_title" = String, Path)), request_body = FunctionBody,
    responses((status = 200, body = FunctionDetail), (status = 400, body = crate::dto::ErrorBody),
              (status = 403, body = crate::dto::ErrorBody), (status = 404, body = crate::dto::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(language_title): Path<String>,
    JsonBody(body): JsonBody<FunctionBody>,
) -> Result<Json<FunctionDetail>, ApiError> {
    if let Some(named) = &body.language_title {
        if named != &language_title {
            return Err(ApiError::invalid_request(
                "language_title in the body must match the path (functions cannot be renamed)",
            ));
        }
    }
    let function = state
        .registry
        .update(
            &caller,
            &language_title,
            draft(body, language_title.clone()),
        )
        .await?;
    Ok(Json(function.into()))
}

/// Retire a dynamic function.
#[utoipa::path(delete, path = "/api/v1/functions/{language_title}", tag = "functions",
    params(("language_title" = String, Path)),
    responses((status = 204), (status = 403, body = crate::dto::ErrorBody), (status = 404, body = crate::dto::ErrorBody)))]
pub async fn retire(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(language_title): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.retire(&caller, &language_title).await?;
    Ok(StatusCode::NO_CONTENT)
}
