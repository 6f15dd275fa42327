//! Bounded in-memory stdout/stderr for a guest.
//!
//! wasmtime-wasi's own `MemoryOutputPipe` traps with a generic message when
//! full, which would make a result that is too large indistinguishable from
//! any other trap. This pipe records *that* it overflowed so the caller can
//! answer with the right limit, and either stops the guest (stdout: the
//! result is already unusable) or keeps it running with its logs truncated
//! (stderr: logs are best effort).

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// What to do with bytes past the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnOverflow {
    /// Trap the guest: used for stdout, whose content is the result.
    Trap,
    /// Drop the excess and let the guest carry on: used for logs.
    Truncate,
}

/// How much the guest may ask to write at once. Writes are all accepted into
/// memory immediately, so this only sizes wasi's write chunks.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Debug)]
struct PipeBuffer {
    bytes: Vec<u8>,
    capacity: usize,
    overflowed: bool,
    on_overflow: OnOverflow,
}

#[derive(Debug, Clone)]
pub(crate) struct BoundedPipe {
    buffer: Arc<Mutex<PipeBuffer>>,
}

impl BoundedPipe {
    pub(crate) fn new(capacity: usize, on_overflow: OnOverflow) -> Self {
        BoundedPipe {
            buffer: Arc::new(Mutex::new(PipeBuffer {
                bytes: Vec::new(),
                capacity,
                overflowed: false,
                on_overflow,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PipeBuffer> {
        // A poisoned lock only means another writer panicked mid-append; the
        // bytes are still a valid prefix of what the guest wrote.
        self.buffer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The captured bytes and whether any were dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut buffer = self.lock();
        (std::mem::take(&mut buffer.bytes), buffer.overflowed)
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Appends what fits; `false` when something did not.
    fn append(&self, data: &[u8]) -> bool {
        let mut buffer = self.lock();
        let room = buffer.capacity.saturating_sub(buffer.bytes.len());
        let fits = data.len().min(room);
        buffer.bytes.extend_from_slice(&data[..fits]);
        if fits < data.len() {
            buffer.overflowed = true;
            return false;
        }
        true
    }

    fn on_overflow(&self) -> OnOverflow {
        self.lock().on_overflow
    }
}

impl IsTerminal for BoundedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedPipe {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.append(&bytes) {
            return Ok(());
        }
        match self.on_overflow() {
            OnOverflow::Truncate => Ok(()),
            OnOverflow::Trap => Err(StreamError::trap("stdout exceeded the result size limit")),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for BoundedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.append(data) || self.on_overflow() == OnOverflow::Truncate {
            return Poll::Ready(Ok(data.len()));
        }
        Poll::Ready(Err(std::io::Error::other(
            "stdout exceeded the result size limit",
        )))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
