-- Applied write-behind counter batches, so a retried batch counts once
-- (see the PostgreSQL migration 0003).
CREATE TABLE IF NOT EXISTS counter_batches (
    batch_id TEXT PRIMARY KEY NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_counter_batches_applied_at ON counter_batches (applied_at);
