//! The harness for scripts compiled to `wasm32-wasip1` and run by the
//! service's wasm runtime: one event on stdin, the result JSON on stdout,
//! logs on stderr. A fresh instance runs per execute, so there is no loop
//! and no frame protocol. A handler's `Err` is written to stderr behind a
//! marker the service recognises, then the module exits with status 1.

use std::io::{Read, Write};

use serde_json::Value;

/// Recognised by `lambda-runtime`'s Rust runtime (keep in sync).
const ERROR_MARKER: &str = "lambda-handler-error: ";

pub fn serve_once<F>(handler: F)
where
    F: Fn(Value) -> Result<Value, String>,
{
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        fail(&format!("cannot read the event: {error}"));
    }
    let event = match serde_json::from_str(&input) {
        Ok(event) => event,
        Err(error) => fail(&format!("the event is not JSON: {error}")),
    };
    match handler(event) {
        Ok(result) => {
            let mut stdout = std::io::stdout();
            if stdout.write_all(result.to_string().as_bytes()).is_err() || stdout.flush().is_err() {
                std::process::exit(1);
            }
        }
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ! {
    let _ = std::io::stdout().flush();
    eprintln!("{ERROR_MARKER}{message}");
    std::process::exit(1)
}
