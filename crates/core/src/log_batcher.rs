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
use tokio::sync::{mpsc, oneshot};
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
        let handle = tokio::spawn(drain(store, receiver, flush_interval));
        (
            LogBatcher {
                sender: Some(sender),
                capacity,
                log_requests,
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

async fn drain(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Item>, interval: Duration) {
    let mut pending = Pending::default();
    let mut flush_waiters = Vec::new();
    let mut open = true;
    while open {
        // Wait for the first row, then gather what else arrives within the
        // interval, so a burst becomes one insert.
        match receiver.recv().await {
            Some(item) => pending.add(item, &mut flush_waiters),
            None => open = false,
        }
        let deadline = tokio::time::Instant::now() + interval;
        while open && pending.len() < MAX_BATCH_ROWS && flush_waiters.is_empty() {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(item)) => pending.add(item, &mut flush_waiters),
                Ok(None) => open = false,
                Err(_) => break,
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
