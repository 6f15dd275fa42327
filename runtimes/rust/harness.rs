//! The warm-worker harness compiled into every native Rust script.
//!
//! `lambda-runtime` generates a crate root that declares the user's script
//! as `mod user` (its own file, so rustc's line numbers are the user's) and
//! this file as `mod harness`, then calls [`serve`] with a closure that
//! adapts whichever handler the script defines (`adapters.rs`). The harness speaks the
//! frame protocol of `runtimes/PROTOCOL.md` on fds 3 (requests) and 4
//! (responses).
//!
//! User output (`println!`, `eprintln!`) is captured per request by pointing
//! fds 1 and 2 at an in-memory file while the handler runs, then returned in
//! the response frame; between requests fds 1 and 2 are the service's
//! diagnostics pipe again.
//!
//! Only `std` and `serde_json` are available here: this file is compiled with
//! the same rustc and flags as the script.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

extern "C" {
    fn dup(fd: i32) -> i32;
    fn dup2(old_fd: i32, new_fd: i32) -> i32;
    fn memfd_create(name: *const std::ffi::c_char, flags: u32) -> i32;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
}

const REQUEST_FD: i32 = 3;
const RESPONSE_FD: i32 = 4;
/// Largest request frame accepted: a request is the event plus a few
/// fields, and the service bounds events far below this.
const MAX_REQUEST_BYTES: u32 = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Out of memory: under the sandbox's address-space limit an allocation can
// fail. Rust's default is to print to stderr (the user's log capture) and
// abort, which the service could only report as a crash; instead tell the
// service it was memory, then abort.

pub struct Allocator;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

const MEMORY_ERROR: &[u8] = br#"{"type":"error","kind":"memory","message":"memory allocation failed: the script exceeded its memory limit","logs":[],"logs_truncated":false}"#;

fn out_of_memory() -> ! {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if !REPORTED.swap(true, Ordering::SeqCst) {
        let length = (MEMORY_ERROR.len() as u32).to_be_bytes();
        // Raw writes: nothing here may allocate.
        unsafe {
            write(RESPONSE_FD, length.as_ptr(), length.len());
            write(RESPONSE_FD, MEMORY_ERROR.as_ptr(), MEMORY_ERROR.len());
        }
    }
    std::process::abort()
}

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            out_of_memory();
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if ptr.is_null() {
            out_of_memory();
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if new_ptr.is_null() {
            out_of_memory();
        }
        new_ptr
    }
}

// ---------------------------------------------------------------------------
// Panics: recorded by a hook (message and location) instead of printed.

struct PanicReport {
    message: String,
    file: Option<String>,
    line: u32,
    column: u32,
}

static LAST_PANIC: Mutex<Option<PanicReport>> = Mutex::new(None);

fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_string()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "panic with a non-string payload".to_string()
        };
        let report = PanicReport {
            message,
            file: info.location().map(|location| location.file().to_string()),
            line: info.location().map_or(0, |location| location.line()),
            column: info.location().map_or(0, |location| location.column()),
        };
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(report);
        }
    }));
}

// ---------------------------------------------------------------------------
// Log capture.

struct LogCapture {
    file: File,
    diagnostics_fd: i32,
    /// Whether the memfd holds a previous request's output. Most handlers
    /// log nothing; for them a request costs no truncate, seek or read.
    dirty: bool,
}

impl LogCapture {
    fn new() -> Result<LogCapture, String> {
        let fd = unsafe { memfd_create(c"lambda-logs".as_ptr(), 0) };
        if fd < 0 {
            return Err(format!(
                "memfd_create failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        let diagnostics_fd = unsafe { dup(1) };
        if diagnostics_fd < 0 {
            return Err(format!(
                "dup(1) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(LogCapture {
            file: unsafe { File::from_raw_fd(fd) },
            diagnostics_fd,
            dirty: false,
        })
    }

    fn start(&mut self) {
        if self.dirty {
            let _ = self.file.set_len(0);
            let _ = self.file.seek(SeekFrom::Start(0));
            self.dirty = false;
        }
        unsafe {
            dup2(self.file.as_raw_fd(), 1);
            dup2(self.file.as_raw_fd(), 2);
        }
    }

    /// Restores fds 1/2 and returns this request's lines, bounded.
    fn finish(&mut self, max_log_bytes: usize) -> (Vec<String>, bool) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        unsafe {
            dup2(self.diagnostics_fd, 1);
            dup2(self.diagnostics_fd, 2);
        }
        let written = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if written == 0 {
            return (Vec::new(), false);
        }
        self.dirty = true;
        // Line text counts against the limit, newlines do not: twice the
        // limit always covers it.
        let wanted = (max_log_bytes as u64)
            .saturating_mul(2)
            .saturating_add(1024);
        let mut raw = Vec::new();
        let _ = self.file.seek(SeekFrom::Start(0));
        let _ = (&mut self.file).take(wanted).read_to_end(&mut raw);
        let mut truncated = written > wanted;
        let text = String::from_utf8_lossy(&raw);
        let mut lines = Vec::new();
        let mut n_bytes = 0usize;
        for line in text.lines() {
            if n_bytes + line.len() > max_log_bytes {
                truncated = true;
                break;
            }
            n_bytes += line.len();
            lines.push(line.to_string());
        }
        (lines, truncated)
    }
}

// ---------------------------------------------------------------------------
// Frames.

/// Reads one request frame. `input` is buffered, so a frame that arrived
/// whole (the usual case) costs one read.
fn read_frame(input: &mut impl Read) -> Option<Value> {
    let mut length = [0u8; 4];
    if input.read_exact(&mut length).is_err() {
        return None;
    }
    let length = u32::from_be_bytes(length);
    if length > MAX_REQUEST_BYTES {
        return None;
    }
    let mut payload = vec![0u8; length as usize];
    input.read_exact(&mut payload).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// Writes one response frame, header and payload in a single write.
fn send(output: &mut File, frame: &Value) -> bool {
    let mut bytes = vec![0u8; 4];
    if serde_json::to_writer(&mut bytes, frame).is_err() {
        return false;
    }
    let length = ((bytes.len() - 4) as u32).to_be_bytes();
    bytes[..4].copy_from_slice(&length);
    output.write_all(&bytes).is_ok()
}

/// The length of `value` as JSON, without building the text.
fn serialized_size(value: &Value) -> usize {
    struct Counter(usize);
    impl Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Runs the execute path a few times with a stand-in handler before
/// `ready` (PROTOCOL.md): the first real execute then finds the JSON,
/// capture and frame code paged in instead of faulting it in on the
/// request path. Never calls the user's handler and writes no frame.
fn warm_up(capture: &mut LogCapture, user_file: &str) {
    let request = br#"{"type":"execute","max_log_bytes":65536,"max_result_bytes":6291456,"event":{"params":{"a":1,"b":2.5,"s":"text","list":[true,null]},"context":{},"request_id":"warm-up","language_title":"rust-warm-up"}}"#;
    let stand_in = |event: Value| -> Result<Value, String> {
        Ok(json!({"echo": event.get("params").cloned().unwrap_or(Value::Null)}))
    };
    for _ in 0..3 {
        let Ok(request) = serde_json::from_slice::<Value>(request) else {
            return;
        };
        let reply = execute(&stand_in, request, capture, user_file);
        let mut sink = Vec::new();
        let _ = serde_json::to_writer(&mut sink, &reply);
    }
}

fn error_frame(kind: &str, message: String, logs: Vec<String>, truncated: bool) -> Value {
    json!({"type": "error", "kind": kind, "message": message, "line": null, "column": null,
           "logs": logs, "logs_truncated": truncated})
}

/// Runs the worker until the service closes fd 3. `style` names the
/// handler form for the `loaded` reply; `runtime` goes into `ready`.
pub fn serve<F>(style: &str, runtime: &str, user_file: &str, handler: F)
where
    F: Fn(Value) -> Result<Value, String>,
{
    install_panic_hook();
    let mut requests = std::io::BufReader::with_capacity(64 * 1024, unsafe {
        File::from_raw_fd(REQUEST_FD)
    });
    let mut responses = unsafe { File::from_raw_fd(RESPONSE_FD) };
    let mut capture = match LogCapture::new() {
        Ok(capture) => capture,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "lambda harness: {message}");
            std::process::exit(70);
        }
    };
    warm_up(&mut capture, user_file);
    if !send(
        &mut responses,
        &json!({"type": "ready", "protocol": 1, "runtime": runtime}),
    ) {
        return;
    }
    while let Some(request) = read_frame(&mut requests) {
        let reply = match request.get("type").and_then(Value::as_str) {
            // The script is compiled in: nothing to load.
            Some("load") => json!({"type": "loaded", "style": style}),
            Some("execute") => execute(&handler, request, &mut capture, user_file),
            _ => return,
        };
        if !send(&mut responses, &reply) {
            return;
        }
    }
}

/// Not generic over the handler, so that [`warm_up`] runs this very code.
fn execute(
    handler: &dyn Fn(Value) -> Result<Value, String>,
    request: Value,
    capture: &mut LogCapture,
    user_file: &str,
) -> Value {
    let max_log_bytes = request
        .get("max_log_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(65536) as usize;
    let max_result_bytes = request
        .get("max_result_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(6 * 1024 * 1024) as usize;
    let event = match request {
        Value::Object(mut fields) => fields.remove("event").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    if let Ok(mut last) = LAST_PANIC.lock() {
        *last = None;
    }
    capture.start();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler(event)));
    let (logs, truncated) = capture.finish(max_log_bytes);
    match outcome {
        Ok(Ok(result)) => {
            let size = serialized_size(&result);
            if size > max_result_bytes {
                return error_frame(
                    "result_size",
                    format!("the result is {size} bytes, over the limit of {max_result_bytes}"),
                    logs,
                    truncated,
                );
            }
            json!({"type": "result", "result": result, "logs": logs, "logs_truncated": truncated})
        }
        Ok(Err(message)) => error_frame("script", message, logs, truncated),
        Err(_) => {
            let report = LAST_PANIC.lock().ok().and_then(|mut last| last.take());
            let Some(report) = report else {
                return error_frame(
                    "script",
                    "the handler panicked".to_string(),
                    logs,
                    truncated,
                );
            };
            let in_user_file = report.file.as_deref() == Some(user_file);
            let location = report
                .file
                .as_deref()
                .map(|file| format!(" at {file}:{}:{}", report.line, report.column))
                .unwrap_or_default();
            let mut frame = error_frame(
                "script",
                format!("panicked: {}", report.message),
                logs,
                truncated,
            );
            frame["stack"] = json!(format!("panicked{location}: {}", report.message));
            if in_user_file {
                frame["line"] = json!(report.line);
                frame["column"] = json!(report.column);
            }
            frame
        }
    }
}
