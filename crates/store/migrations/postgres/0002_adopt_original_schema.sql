-- A database created by the original platform already has these tables, so
-- 0001's CREATE TABLE IF NOT EXISTS left them as they were. Bring them to
-- this version's shape; on a database 0001 created, every statement is a
-- no-op.
ALTER TABLE meta.functions ADD COLUMN IF NOT EXISTS compile_options JSONB;

ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS user_id VARCHAR(128);
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS last_executed_at TIMESTAMPTZ;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS execution_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS status VARCHAR(32) NOT NULL DEFAULT 'active';
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS context JSONB;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS script_content TEXT;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS script_hash VARCHAR(64);
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS compiled_artifact BYTEA;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS compile_options JSONB;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS compile_status VARCHAR(32);
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS compile_error TEXT;
ALTER TABLE meta.sessions ADD COLUMN IF NOT EXISTS metadata JSONB;
-- The store reads the count as a 64-bit integer.
ALTER TABLE meta.sessions ALTER COLUMN execution_count TYPE BIGINT;

-- Session ids are up to 128 characters; the original logged only 64.
ALTER TABLE public.request_logs ALTER COLUMN request_id TYPE VARCHAR(128);

-- The original seeds stored a bare params JSON Schema; the API's shape is
-- {"params": <schema>, "result": <schema>}.
UPDATE meta.functions
SET schema_definition = jsonb_build_object('params', schema_definition)
WHERE id IN ('f47ac10b-58cc-4372-a567-0e02b2c3d479',
             'f47ac10b-58cc-4372-a567-0e02b2c3d480',
             'f47ac10b-58cc-4372-a567-0e02b2c3d481')
  AND schema_definition IS NOT NULL
  AND NOT (schema_definition ? 'params');

-- Indexes (here rather than in 0001 so they can use the columns above).
CREATE INDEX IF NOT EXISTS idx_functions_language ON meta.functions (language);
CREATE INDEX IF NOT EXISTS idx_functions_created_by ON meta.functions (created_by);
CREATE INDEX IF NOT EXISTS idx_sessions_expires_at ON meta.sessions (expires_at);
CREATE INDEX IF NOT EXISTS idx_sessions_language_title ON meta.sessions (language_title);
CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON meta.sessions (user_id);
CREATE INDEX IF NOT EXISTS idx_sessions_script_hash ON meta.sessions (script_hash);
CREATE INDEX IF NOT EXISTS idx_request_logs_request_id ON public.request_logs (request_id);
CREATE INDEX IF NOT EXISTS idx_request_logs_timestamp ON public.request_logs (timestamp);
CREATE INDEX IF NOT EXISTS idx_request_logs_language_title ON public.request_logs (language_title);
CREATE INDEX IF NOT EXISTS idx_request_logs_user_id ON public.request_logs (user_id);
CREATE INDEX IF NOT EXISTS idx_error_logs_request_log_id ON public.error_logs (request_log_id);
CREATE INDEX IF NOT EXISTS idx_error_logs_error_code ON public.error_logs (error_code);
CREATE INDEX IF NOT EXISTS idx_error_logs_timestamp ON public.error_logs (timestamp);
