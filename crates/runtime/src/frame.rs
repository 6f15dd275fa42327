//! The frame protocol of runtimes/PROTOCOL.md, service side: a frame is a
//! big-endian u32 length followed by that many bytes of JSON.
//!
//! Requests are built as bytes directly (the event JSON is spliced in, never
//! re-serialized); responses are parsed once into [`Response`].

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version workers announce in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The worker closed its end (it exited or was killed).
    #[error("the worker closed its channel")]
    Closed,
    /// A frame over the reader's limit; its payload was not read.
    #[error("a {len}-byte frame exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("reading a frame failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a malformed frame: {0}")]
    Malformed(String),
}

/// Appends the 4-byte header and `payload` to `out`.
fn put_frame(out: &mut Vec<u8>, payload_len: usize) -> Result<(), FrameError> {
    let len = u32::try_from(payload_len).map_err(|_| FrameError::TooLarge {
        len: payload_len,
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A `load` request frame (header included).
pub fn load_frame(filename: &str, source: &str) -> Result<Vec<u8>, FrameError> {
    #[derive(serde::Serialize)]
    struct Load<'a> {
        r#type: &'static str,
        filename: &'a str,
        source: &'a str,
    }
    let payload = serde_json::to_vec(&Load {
        r#type: "load",
        filename,
        source,
    })
    .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    put_frame(&mut out, payload.len())?;
    out.extend_from_slice(&payload);
    Ok(out)
}

/// An `execute` request frame (header included). `event_json` must be one
/// JSON value (core serializes it); it is copied in verbatim as the last
/// field.
pub fn execute_frame(
    event_json: &str,
    max_log_bytes: usize,
    max_result_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let head = format!(
        "{{\"type\":\"execute\",\"max_log_bytes\":{max_log_bytes},\"max_result_bytes\":{max_result_bytes},\"event\":"
    );
    let event = event_json.trim();
    let event = if event.is_empty() { "null" } else { event };
    let payload_len = head.len() + event.len() + 1;
    let mut out = Vec::with_capacity(payload_len + 4);
    put_frame(&mut out, payload_len)?;
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.push(b'}');
    Ok(out)
}

/// Writes a complete frame (as built above) in one call.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    writer.write_all(frame).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    })
}

/// Reads one frame's payload into `buf` (cleared first). Refuses frames
/// longer than `max_len` before reading their payload, so a runaway worker
/// cannot make the service buffer more than the limit.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: usize,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    buf.clear();
    buf.resize(len, 0);
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Every frame a worker sends.
#[derive(Debug)]
pub enum Response {
    Ready {
        protocol: u32,
        runtime: String,
    },
    Loaded {
        style: Option<String>,
    },
    Result {
        result: Value,
        logs: Vec<String>,
        logs_truncated: bool,
    },
    Error(WorkerError),
}

/// The payload of an `error` frame.
#[derive(Debug)]
pub struct WorkerError {
    pub kind: ErrorKind,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub stack: Option<String>,
    pub logs: Vec<String>,
    pub logs_truncated: bool,
}

/// `error.kind` of PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Initialization,
    Script,
    Memory,
    ResultSize,
    OutputSize,
    Processes,
}

/// Every field any response may carry. Parsing into this flat struct is one
/// pass over the payload; serde's internally tagged enums would first
/// buffer the whole frame (a result of megabytes) into an intermediate tree.
#[derive(Deserialize)]
struct FlatResponse {
    r#type: String,
    #[serde(default)]
    protocol: u32,
    #[serde(default)]
    runtime: String,
    #[serde(default)]
    style: Option<String>,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    logs: Vec<String>,
    #[serde(default)]
    logs_truncated: bool,
    #[serde(default)]
    kind: Option<ErrorKind>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    line: Option<u32>,
    #[serde(default)]
    column: Option<u32>,
    #[serde(default)]
    stack: Option<String>,
}

/// Parses a response payload.
pub fn parse_response(payload: &[u8]) -> Result<Response, FrameError> {
    let flat: FlatResponse =
        serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    match flat.r#type.as_str() {
        "ready" => Ok(Response::Ready {
            protocol: flat.protocol,
            runtime: flat.runtime,
        }),
        "loaded" => Ok(Response::Loaded { style: flat.style }),
        "result" => Ok(Response::Result {
            result: flat.result,
            logs: flat.logs,
            logs_truncated: flat.logs_truncated,
        }),
        "error" => Ok(Response::Error(WorkerError {
            kind: flat
                .kind
                .ok_or_else(|| FrameError::Malformed("an error frame without a kind".into()))?,
            message: flat.message,
            line: flat.line,
            column: flat.column,
            stack: flat.stack,
            logs: flat.logs,
            logs_truncated: flat.logs_truncated,
        })),
        other => Err(FrameError::Malformed(format!(
            "unknown frame type '{other}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn execute_frame_round_trips_through_read_frame() {
        let frame = execute_frame(r#"{"params":{"a":1}}"#, 10, 20).unwrap();
        let mut reader = &frame[..];
        let mut buf = Vec::new();
        read_frame(&mut reader, 1 << 20, &mut buf).await.unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["event"]["params"]["a"], 1);
        assert_eq!(v["max_log_bytes"], 10);
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading_it() {
        let mut data = (1000u32).to_be_bytes().to_vec();
        data.extend(std::iter::repeat_n(b'x', 1000));
        let mut reader = &data[..];
        let mut buf = Vec::new();
        let err = read_frame(&mut reader, 999, &mut buf).await.unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 1000,
                max: 999
            }
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn result_frames_parse_with_fields_in_any_order() {
        let r = parse_response(br#"{"result":{"a":[1,2]},"logs":["x"],"type":"result"}"#).unwrap();
        match r {
            Response::Result { result, logs, .. } => {
                assert_eq!(result["a"][1], 2);
                assert_eq!(logs, vec!["x"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_response(br#"{"type":"bogus"}"#).is_err());
        assert!(parse_response(br#"{"type":"error","message":"no kind"}"#).is_err());
    }

    #[test]
    fn error_frames_parse() {
        let r =
            parse_response(br#"{"type":"error","kind":"result_size","message":"m","line":null}"#)
                .unwrap();
        assert!(matches!(
            r,
            Response::Error(WorkerError {
                kind: ErrorKind::ResultSize,
                ..
            })
        ));
    }
}
