//! Write-behind for request logs and session counters.
//!
//! Executes never wait on the database: they hand a row to a bounded queue
//! and go on. One task drains the queue in batches (multi-row inserts, one
//! transaction). When the database is down the task keeps its batch and
//! retries with backoff; the queue then fills, and only once it is full do
//! executes wait for room (backpressure) — rows are never dropped. On
//! shutdown everything queued is flushed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lambda_store::{ExecutionCount, RequestLog, Store};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Rows per database round trip.
const MAX_BATCH_ROWS: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Item {
    Request(Box<RequestLog>),
    Executed {
        request_id: String,
        at: DateTime<Utc>,
    },
    Flush(oneshot::Sender<()>),
}

/// The sending side, cloned into every request path.
#[derive(Clone)]
pub struct LogBatcher {
    sender: Option<mpsc::Sender<Item>>,
    capacity: usize,
    /// `DB_LOGGING_ENABLED`: request logs are off, session counters stay on.
    log_requests: bool,
    /// Ends the batcher's gathering window early: a flush was asked for, or
    /// a full batch is queued.
    write_now: Arc<Notify>,
}

/// Owns the draining task; `shutdown` flushes and stops it.
pub struct LogBatcherTask {
    handle: JoinHandle<()>,
}

/// How long the store remembers an applied counter batch. A batch is
/// retried within seconds of its lost answer, unless the database stays
/// away; a day covers any outage short of one that needs an operator.
pub(crate) const COUNTER_BATCH_MEMORY: chrono::TimeDelta = chrono::TimeDelta::days(1);

#[derive(Default)]
struct Pending {
    requests: Vec<RequestLog>,
    executions: HashMap<String, (i64, DateTime<Utc>)>,
    /// The id the store knows these counts by, kept across retries so a
    /// retry of a batch that did land counts nothing twice.
    executions_batch: Option<Uuid>,
}

impl Pending {
    fn len(&self) -> usize {
        self.requests.len() + self.executions.len()
    }

    fn add(&mut self, item: Item, flush_waiters: &mut Vec<oneshot::Sender<()>>) {
        match item {
            Item::Request(log) => self.requests.push(*log),
            Item::Executed { request_id, at } => {
                let entry = self.executions.entry(request_id).or_insert((0, at));
                entry.0 += 1;
                entry.1 = entry.1.max(at);
            }
            Item::Flush(waiter) => flush_waiters.push(waiter),
        }
    }
}

impl LogBatcher {
    pub fn start(
        store: Arc<dyn Store>,
        capacity: usize,
        flush_interval: Duration,
        log_requests: bool,
    ) -> (LogBatcher, LogBatcherTask) {
        let (sender, receiver) = mpsc::channel(capacity);
        let write_now = Arc::new(Notify::new());
        let handle = tokio::spawn(drain(
            store,
            receiver,
            flush_interval,
            Arc::clone(&write_now),
        ));
        (
            LogBatcher {
                sender: Some(sender),
                capacity,
                log_requests,
                write_now,
            },
            LogBatcherTask { handle },
        )
    }

    /// Whether request logs are recorded at all (`DB_LOGGING_ENABLED`).
    pub fn logs_requests(&self) -> bool {
        self.log_requests
    }

    /// Queues a request log; waits only when the queue is full.
    pub async fn log_request(&self, log: RequestLog) {
        if !self.log_requests {
            return;
        }
        self.send(Item::Request(Box::new(log))).await;
    }

    /// Counts one execution of a session.
    pub async fn count_execution(&self, request_id: &str, at: DateTime<Utc>) {
        self.send(Item::Executed {
            request_id: request_id.to_string(),
            at,
        })
        .await;
    }

    /// Waits until everything queued before this call is written (or the
    /// batcher is gone). For tests and for reads that must see counters.
    pub async fn flush(&self) {
        let (waiter, done) = oneshot::channel();
        self.send(Item::Flush(waiter)).await;
        self.write_now.notify_one();
        let _ = done.await;
    }

    /// Rows waiting to be written, for `/metrics`.
    pub fn queue_depth(&self) -> usize {
        self.sender
            .as_ref()
            .map(|sender| self.capacity - sender.capacity())
            .unwrap_or(0)
    }

    async fn send(&self, item: Item) {
        if let Some(sender) = &self.sender {
            if sender.send(item).await.is_err() {
                tracing::error!("log batcher has stopped; a log row was not recorded");
                return;
            }
            if self.capacity - sender.capacity() >= MAX_BATCH_ROWS {
                self.write_now.notify_one();
            }
        }
    }
}

impl LogBatcherTask {
    /// Flushes what is queued and stops. Every `LogBatcher` clone must be
    /// dropped first, or this waits for them.
    pub async fn shutdown(self) {
        if let Err(error) = self.handle.await {
            tracing::error!(%error, "log batcher task failed");
        }
    }
}

async fn drain(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<Item>,
    interval: Duration,
    write_now: Arc<Notify>,
) {
    let mut pending = Pending::default();
    let mut flush_waiters = Vec::new();
    let mut open = true;
    while open {
        match receiver.recv().await {
            Some(item) => pending.add(item, &mut flush_waiters),
            None => open = false,
        }
        // After the first row, let the rows of the next `interval` gather
        // in the queue untouched, so a burst becomes one insert. A sender
        // wakes this task only while it waits in `recv`: taking the rows
        // one by one as they came cost a wake-up and a timer per row.
        if open && flush_waiters.is_empty() && receiver.len() < MAX_BATCH_ROWS {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = write_now.notified() => {}
            }
        }
        while pending.len() < MAX_BATCH_ROWS {
            match receiver.try_recv() {
                Ok(item) => pending.add(item, &mut flush_waiters),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        write_with_retry(store.as_ref(), &mut pending).await;
        for waiter in flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// Writes until it succeeds: rows are kept, not dropped, while the database
/// is away (the bounded queue in front pushes back on executes meanwhile).
async fn write_with_retry(store: &dyn Store, pending: &mut Pending) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match write(store, pending).await {
            Ok(()) => return,
            Err(error) => {
                metrics::counter!("lambda_log_write_failures_total").increment(1);
                tracing::warn!(%error, rows = pending.len(), retry_in_ms = backoff.as_millis() as u64,
                    "writing request logs failed; keeping them and retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn write(store: &dyn Store, pending: &mut Pending) -> lambda_store::Result<()> {
    if !pending.requests.is_empty() {
        store.insert_logs(&pending.requests).await?;
        metrics::counter!("lambda_request_logs_written_total")
            .increment(pending.requests.len() as u64);
        pending.requests.clear();
    }
    if !pending.executions.is_empty() {
        let counts: Vec<ExecutionCount> = pending
            .executions
            .iter()
            .map(|(request_id, &(count, at))| ExecutionCount {
                request_id: request_id.clone(),
                count,
                last_executed_at: at,
            })
            .collect();
        let batch = *pending.executions_batch.get_or_insert_with(Uuid::now_v7);
        store.record_execution_counts(batch, &counts).await?;
        pending.executions.clear();
        pending.executions_batch = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chrono::TimeDelta;
    use lambda_store::{SessionRecord, SessionStatus, SqliteStore};
    use serde_json::json;

    use super::*;

    /// A gathering window no test waits out: a write before it ends was
    /// cut short.
    const LONG_WINDOW: Duration = Duration::from_secs(60);

    async fn store_with_session(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let store = SqliteStore::open(&dir.path().join("batcher.db"))
            .await
            .expect("sqlite store");
        store.migrate().await.expect("migrate");
        let now = Utc::now();
        store
            .insert_session(&SessionRecord {
                request_id: "counted".to_string(),
                language_title: "nodejs-add".to_string(),
                user_id: None,
                created_at: now,
                expires_at: now + TimeDelta::hours(1),
                last_executed_at: None,
                execution_count: 0,
                status: SessionStatus::Active,
                context: json!({}),
                script_content: "return 1;".to_string(),
                script_hash: "hash".to_string(),
                compiled_artifact: None,
                compile_options: None,
                compile_status: None,
                compile_error: None,
                metadata: json!({}),
            })
            .await
            .expect("insert session");
        Arc::new(store)
    }

    async fn execution_count(store: &dyn Store) -> i64 {
        store
            .get_session("counted")
            .await
            .expect("read session")
            .map(|session| session.execution_count)
            .unwrap_or(-1)
    }

    #[tokio::test]
    async fn a_flush_ends_the_gathering_window() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_session(&dir).await;
        let (batcher, task) = LogBatcher::start(Arc::clone(&store), 100, LONG_WINDOW, true);
        for _ in 0..3 {
            batcher.count_execution("counted", Utc::now()).await;
        }
        tokio::time::timeout(Duration::from_secs(5), batcher.flush())
            .await
            .expect("flush returns without waiting out the window");
        assert_eq!(execution_count(store.as_ref()).await, 3);
        drop(batcher);
        tokio::time::timeout(Duration::from_secs(5), task.shutdown())
            .await
            .expect("the batcher stops once its senders are gone");
    }

    #[tokio::test]
    async fn a_full_batch_is_written_without_waiting_out_the_window() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_session(&dir).await;
        let (batcher, _task) =
            LogBatcher::start(Arc::clone(&store), 4 * MAX_BATCH_ROWS, LONG_WINDOW, true);
        let n = MAX_BATCH_ROWS as i64 + 10;
        for _ in 0..n {
            batcher.count_execution("counted", Utc::now()).await;
        }
        // No flush: only the queue reaching a full batch starts this write.
        let deadline = Instant::now() + Duration::from_secs(5);
        while execution_count(store.as_ref()).await < MAX_BATCH_ROWS as i64 {
            assert!(
                Instant::now() < deadline,
                "a full batch waited for the gathering window"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
