//! The JSON bodies of API.md, as types: they generate the OpenAPI document,
//! so the document cannot drift from what the handlers send.

use chrono::{DateTime, Utc};
use lambda_store::{FunctionKind, FunctionRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InitializeBody {
    /// `environment`, `user_id`, `timeout_ms`, `retain_session`, `compile_options`, and anything else the script should see.
    #[schema(value_type = Object)]
    pub context: Option<Value>,
    /// The script; without it, the registered function named by Language-Title runs.
    pub script_content: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InitializeResponse {
    pub request_id: String,
    /// `initialized`.
    pub status: &'static str,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub language_title: String,
    pub script_hash: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecuteBody {
    /// Absent params mean `{}`.
    #[schema(value_type = Object)]
    #[serde(default)]
    pub params: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse {
    pub request_id: String,
    pub language_title: String,
    /// Milliseconds.
    pub execution_time: u64,
    pub cached: bool,
    #[schema(value_type = Object)]
    pub result: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    pub request_id: String,
    pub language_title: String,
    /// `active`, `completed`, `expired` or `error`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub execution_count: i64,
    pub last_executed_at: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
    pub script_hash: String,
    pub compile_status: Option<String>,
    pub compile_error: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct FunctionQuery {
    pub language: Option<String>,
    pub user_id: Option<String>,
    /// `predefined` or `dynamic`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionSummary {
    pub language: String,
    pub title: String,
    pub language_title: String,
    pub description: Option<String>,
    /// `predefined` or `dynamic`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionList {
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
    pub functions: Vec<FunctionSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionDetail {
    #[serde(flatten)]
    pub summary: FunctionSummary,
    pub script_content: String,
    /// `{"params": <JSON Schema>, "result": <JSON Schema>}`.
    #[schema(value_type = Object)]
    pub schema: Option<Value>,
    #[schema(value_type = Object)]
    pub examples: Option<Value>,
    #[schema(value_type = Object)]
    pub compile_options: Option<Value>,
    pub version: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct FunctionBody {
    /// Required on POST; on PUT it must match the path when given.
    pub language_title: Option<String>,
    pub description: Option<String>,
    pub script_content: Option<String>,
    #[schema(value_type = Object)]
    pub schema: Option<Value>,
    #[schema(value_type = Object)]
    pub examples: Option<Value>,
    #[schema(value_type = Object)]
    pub compile_options: Option<Value>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `degraded` when the database is unreachable.
    pub status: &'static str,
    pub version: &'static str,
    #[schema(value_type = Object)]
    pub components: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub request_id: String,
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// `line`, `column`, `stack_trace`, `path`, ... by error.
    #[schema(value_type = Object)]
    pub details: Option<Value>,
}

impl From<&FunctionRecord> for FunctionSummary {
    fn from(function: &FunctionRecord) -> Self {
        let (kind, user_id) = match function.kind {
            FunctionKind::Predefined => ("predefined", None),
            FunctionKind::Dynamic => ("dynamic", function.created_by.clone()),
        };
        FunctionSummary {
            language: function.language.clone(),
            title: function.title.clone(),
            language_title: function.language_title.clone(),
            description: function.description.clone(),
            kind,
            user_id,
            created_at: function.created_at,
            updated_at: function.updated_at,
        }
    }
}

impl From<FunctionRecord> for FunctionDetail {
    fn from(function: FunctionRecord) -> Self {
        FunctionDetail {
            summary: FunctionSummary::from(&function),
            script_content: function.script_content,
            schema: function.schema,
            examples: function.examples,
            compile_options: function.compile_options,
            version: function.version,
            tags: function.tags,
        }
    }
}
