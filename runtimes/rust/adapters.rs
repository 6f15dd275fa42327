//! Adapters from the handler forms of API.md to one shape,
//! `Fn(Value) -> Result<Value, String>`, shared by both harnesses
//! (`harness.rs` for native workers, `harness_wasi.rs` for wasm32-wasip1).
//! Which form a script uses is decided by the generated crate root; the
//! types (`Map` or `Value` in, what `Ok` holds) by inference here.

use std::fmt::Display;

use serde_json::{Map, Value};

/// What a `handler` may take: the event as a JSON object or any JSON value.
pub trait FromEvent: Sized {
    fn from_event(event: Value) -> Result<Self, String>;
}

impl FromEvent for Value {
    fn from_event(event: Value) -> Result<Self, String> {
        Ok(event)
    }
}

impl FromEvent for Map<String, Value> {
    fn from_event(event: Value) -> Result<Self, String> {
        match event {
            Value::Object(map) => Ok(map),
            other => Err(format!("the event is not a JSON object: {other}")),
        }
    }
}

/// What a `handler` may return inside its `Ok`.
pub trait IntoResult {
    fn into_result(self) -> Value;
}

impl IntoResult for Value {
    fn into_result(self) -> Value {
        self
    }
}

impl IntoResult for Map<String, Value> {
    fn into_result(self) -> Value {
        Value::Object(self)
    }
}

impl IntoResult for String {
    fn into_result(self) -> Value {
        Value::String(self)
    }
}

impl IntoResult for () {
    fn into_result(self) -> Value {
        Value::Null
    }
}

/// `handler(event) -> Result<R, E>` with the event as a value or map.
pub fn call_handler<A, R, E, F>(handler: F, event: Value) -> Result<Value, String>
where
    A: FromEvent,
    R: IntoResult,
    E: Display,
    F: Fn(A) -> Result<R, E>,
{
    let input = A::from_event(event)?;
    handler(input)
        .map(IntoResult::into_result)
        .map_err(|error| error.to_string())
}

/// `handle(event: &str) -> Result<String, String>`: JSON text in and out.
pub fn call_handle<S, E, F>(handle: F, event: Value) -> Result<Value, String>
where
    S: AsRef<str>,
    E: Display,
    F: Fn(&str) -> Result<S, E>,
{
    let text = event.to_string();
    let output = handle(&text).map_err(|error| error.to_string())?;
    serde_json::from_str(output.as_ref()).map_err(|error| {
        format!("handle returned text that is not JSON ({error}); return serialized JSON")
    })
}
