//! Pieces both backends share: the schema they verify, error mapping and the
//! small pure rules (version bumps, paging, column limits).

use crate::{FunctionFilter, StoreError};

/// Every table and column this version reads or writes, as
/// `(postgres schema, table, columns)`. SQLite uses the bare table names.
pub(crate) const EXPECTED_COLUMNS: &[(&str, &str, &[&str])] = &[
    (
        "meta",
        "functions",
        &[
            "id",
            "language",
            "title",
            "language_title",
            "description",
            "schema_definition",
            "examples",
            "created_at",
            "updated_at",
            "created_by",
            "is_active",
            "version",
            "tags",
            "compile_options",
        ],
    ),
    (
        "meta",
        "scripts",
        &["function_id", "content", "created_at", "updated_at"],
    ),
    (
        "meta",
        "sessions",
        &[
            "request_id",
            "language_title",
            "user_id",
            "created_at",
            "expires_at",
            "last_executed_at",
            "execution_count",
            "status",
            "context",
            "script_content",
            "script_hash",
            "compiled_artifact",
            "compile_options",
            "compile_status",
            "compile_error",
            "metadata",
        ],
    ),
    ("meta", "counter_batches", &["batch_id", "applied_at"]),
    (
        "public",
        "request_logs",
        &[
            "id",
            "request_id",
            "language_title",
            "timestamp",
            "client_ip",
            "user_id",
            "request_headers",
            "request_payload",
            "response_payload",
            "status_code",
            "duration_ms",
            "cached",
            "error_details",
            "runtime_metrics",
        ],
    ),
    (
        "public",
        "error_logs",
        &[
            "id",
            "request_log_id",
            "timestamp",
            "error_code",
            "error_message",
            "stack_trace",
            "context",
        ],
    ),
];

/// Rows per multi-row INSERT of logs. request_logs has 14 columns, so 1000
/// rows bind 14,000 values: under SQLite's 32,766 and PostgreSQL's 65,535.
pub(crate) const LOG_ROWS_PER_STATEMENT: usize = 1000;

/// Column limits of `public.request_logs` / `public.error_logs`. Log rows are
/// built from request data (a client's X-Request-ID, a proxy's address); one
/// oversized value must not lose the whole batch, so they are cut to fit.
pub(crate) const REQUEST_ID_MAX_CHARS: usize = 128;
pub(crate) const LANGUAGE_TITLE_MAX_CHARS: usize = 128;
pub(crate) const CLIENT_IP_MAX_CHARS: usize = 45;
pub(crate) const USER_ID_MAX_CHARS: usize = 128;
pub(crate) const ERROR_CODE_MAX_CHARS: usize = 64;

/// Cut `text` to at most `max_chars` characters (VARCHAR(n) counts
/// characters, not bytes).
pub(crate) fn truncate_chars(text: &str, max_chars: usize) -> &str {
    // No more bytes than the limit: no more characters either (the common
    // case, without walking the characters).
    if text.len() <= max_chars {
        return text;
    }
    match text.char_indices().nth(max_chars) {
        Some((byte_index, _)) => &text[..byte_index],
        None => text,
    }
}

/// "1.0.0" -> "1.0.1". A version whose last part is not a number (never
/// written by this crate, but the column is free text) gets ".1" appended so
/// an update still changes it.
pub(crate) fn bump_patch(version: &str) -> String {
    match version.rsplit_once('.') {
        Some((head, patch)) => match patch.parse::<u64>() {
            Ok(number) => format!("{head}.{}", number.saturating_add(1)),
            Err(_) => format!("{version}.1"),
        },
        None => match version.parse::<u64>() {
            Ok(number) => number.saturating_add(1).to_string(),
            Err(_) => format!("{version}.1"),
        },
    }
}

/// `(limit, offset)` for a 1-based page; page 0 is treated as page 1.
pub(crate) fn limit_offset(filter: &FunctionFilter) -> (i64, i64) {
    let limit = i64::from(filter.per_page);
    let offset = i64::from(filter.page.max(1) - 1) * limit;
    (limit, offset)
}

/// A unique-key violation becomes `Conflict`; everything else stays a
/// database error. Uses the driver's error kind (SQLSTATE 23505 /
/// SQLITE_CONSTRAINT_PRIMARYKEY|UNIQUE), not the message text.
pub(crate) fn conflict_or_database(
    error: sqlx::Error,
    what: impl FnOnce() -> String,
) -> StoreError {
    match &error {
        sqlx::Error::Database(database_error) if database_error.is_unique_violation() => {
            StoreError::Conflict { what: what() }
        }
        _ => StoreError::Database(error),
    }
}

pub(crate) fn missing_to_result(missing: Vec<String>) -> crate::Result<()> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaMismatch {
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_patch() {
        assert_eq!(bump_patch("1.0.0"), "1.0.1");
        assert_eq!(bump_patch("1.2.9"), "1.2.10");
        assert_eq!(bump_patch("7"), "8");
        assert_eq!(bump_patch("1.0.beta"), "1.0.beta.1");
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 5), "abc");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }
}
