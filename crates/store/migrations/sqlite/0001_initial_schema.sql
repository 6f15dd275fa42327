-- The PostgreSQL schema in SQLite terms: UUIDs as hyphenated text, JSON (and
-- the tags array) as JSON text, timestamps as fixed-width RFC 3339 UTC text
-- with microseconds ('2026-01-02T03:04:05.123456Z') so that text order is
-- time order, booleans as 0/1.
CREATE TABLE IF NOT EXISTS functions (
    id TEXT PRIMARY KEY NOT NULL,
    language TEXT NOT NULL,
    title TEXT NOT NULL,
    language_title TEXT NOT NULL UNIQUE,
    description TEXT,
    schema_definition TEXT,
    examples TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_by TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    version TEXT NOT NULL DEFAULT '1.0.0',
    tags TEXT NOT NULL DEFAULT '[]',
    compile_options TEXT
);

CREATE INDEX IF NOT EXISTS idx_functions_language ON functions (language);
CREATE INDEX IF NOT EXISTS idx_functions_created_by ON functions (created_by);

CREATE TABLE IF NOT EXISTS scripts (
    function_id TEXT PRIMARY KEY NOT NULL REFERENCES functions (id),
    content TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    request_id TEXT PRIMARY KEY NOT NULL,
    language_title TEXT NOT NULL,
    user_id TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    last_executed_at TEXT,
    execution_count INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active',
    context TEXT,
    script_content TEXT,
    script_hash TEXT,
    compiled_artifact BLOB,
    compile_options TEXT,
    compile_status TEXT,
    compile_error TEXT,
    metadata TEXT
);

CREATE INDEX IF NOT EXISTS idx_sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS idx_sessions_language_title ON sessions (language_title);
CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON sessions (user_id);
CREATE INDEX IF NOT EXISTS idx_sessions_script_hash ON sessions (script_hash);

CREATE TABLE IF NOT EXISTS request_logs (
    id TEXT PRIMARY KEY NOT NULL,
    request_id TEXT NOT NULL,
    language_title TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    client_ip TEXT,
    user_id TEXT,
    request_headers TEXT,
    request_payload TEXT,
    response_payload TEXT,
    status_code INTEGER,
    duration_ms INTEGER,
    cached INTEGER NOT NULL DEFAULT 0,
    error_details TEXT,
    runtime_metrics TEXT
);

CREATE INDEX IF NOT EXISTS idx_request_logs_request_id ON request_logs (request_id);
CREATE INDEX IF NOT EXISTS idx_request_logs_timestamp ON request_logs (timestamp);
CREATE INDEX IF NOT EXISTS idx_request_logs_language_title ON request_logs (language_title);
CREATE INDEX IF NOT EXISTS idx_request_logs_user_id ON request_logs (user_id);

CREATE TABLE IF NOT EXISTS error_logs (
    id TEXT PRIMARY KEY NOT NULL,
    request_log_id TEXT NOT NULL REFERENCES request_logs (id),
    timestamp TEXT NOT NULL,
    error_code TEXT NOT NULL,
    error_message TEXT NOT NULL,
    stack_trace TEXT,
    context TEXT
);

CREATE INDEX IF NOT EXISTS idx_error_logs_request_log_id ON error_logs (request_log_id);
CREATE INDEX IF NOT EXISTS idx_error_logs_error_code ON error_logs (error_code);
CREATE INDEX IF NOT EXISTS idx_error_logs_timestamp ON error_logs (timestamp);
