-- Write-behind execution counters arrive in batches, and a batch is retried
-- until it lands. A batch whose commit succeeded but whose answer was lost
-- (the connection dropped) comes again: its id here makes the retry a no-op.
-- Ids are forgotten after a day (the session sweeper), long after any retry.
CREATE TABLE IF NOT EXISTS meta.counter_batches (
    batch_id UUID PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_counter_batches_applied_at ON meta.counter_batches (applied_at);
