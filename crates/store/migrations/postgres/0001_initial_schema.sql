-- The original platform's schema (meta.functions, meta.scripts, meta.sessions,
-- public.request_logs, public.error_logs) plus the columns this version adds:
-- functions.compile_options and the session compile/artifact columns.
-- Indexes are created in 0002, after it adds columns an original-platform
-- database lacks.
CREATE SCHEMA IF NOT EXISTS meta;

CREATE TABLE IF NOT EXISTS meta.functions (
    id UUID PRIMARY KEY,
    language VARCHAR(32) NOT NULL,
    title VARCHAR(64) NOT NULL,
    language_title VARCHAR(128) NOT NULL UNIQUE,
    description TEXT,
    schema_definition JSONB,
    examples JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    created_by VARCHAR(128),
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    version VARCHAR(32) NOT NULL DEFAULT '1.0.0',
    tags VARCHAR(64)[] NOT NULL DEFAULT '{}',
    compile_options JSONB
);

CREATE TABLE IF NOT EXISTS meta.scripts (
    function_id UUID PRIMARY KEY REFERENCES meta.functions (id),
    content TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS meta.sessions (
    request_id VARCHAR(128) PRIMARY KEY,
    language_title VARCHAR(128) NOT NULL,
    user_id VARCHAR(128),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMPTZ NOT NULL,
    last_executed_at TIMESTAMPTZ,
    execution_count BIGINT NOT NULL DEFAULT 0,
    status VARCHAR(32) NOT NULL DEFAULT 'active',
    context JSONB,
    script_content TEXT,
    script_hash VARCHAR(64),
    compiled_artifact BYTEA,
    compile_options JSONB,
    compile_status VARCHAR(32),
    compile_error TEXT,
    metadata JSONB
);

CREATE TABLE IF NOT EXISTS public.request_logs (
    id UUID PRIMARY KEY,
    request_id VARCHAR(128) NOT NULL,
    language_title VARCHAR(128) NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    client_ip VARCHAR(45),
    user_id VARCHAR(128),
    request_headers JSONB,
    request_payload JSONB,
    response_payload JSONB,
    status_code INTEGER,
    duration_ms INTEGER,
    cached BOOLEAN NOT NULL DEFAULT FALSE,
    error_details JSONB,
    runtime_metrics JSONB
);

CREATE TABLE IF NOT EXISTS public.error_logs (
    id UUID PRIMARY KEY,
    request_log_id UUID NOT NULL REFERENCES public.request_logs (id),
    timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    error_code VARCHAR(64) NOT NULL,
    error_message TEXT NOT NULL,
    stack_trace TEXT,
    context JSONB
);

