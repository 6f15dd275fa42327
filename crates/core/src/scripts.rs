//! Script identity: content hashes, worker keys and params schemas, shared
//! by sessions and the function registry.

use std::sync::Arc;

use lambda_runtime::{Language, Script};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SHA-256 (hex) of language, source and compile options: names artifacts.
pub fn script_hash(language: Language, source: &str, compile_options: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(language.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(compile_options.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// One warm worker per (script, owner): tenants never share an interpreter.
pub fn worker_key(script_hash: &str, owner: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(script_hash.as_bytes());
    hasher.update([0]);
    hasher.update(owner.unwrap_or("").as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

pub fn build_script(
    language: Language,
    source: &str,
    compile_options: Value,
    owner: Option<&str>,
    artifact: Option<Vec<u8>>,
) -> Script {
    let hash = script_hash(language, source, &compile_options);
    Script {
        language,
        worker_key: worker_key(&hash, owner),
        hash,
        source: Arc::from(source),
        compile_options,
        artifact: artifact.map(Arc::new),
    }
}

/// Whether a language's scripts are compiled at initialize, so that their
/// sessions carry a `compile_status`.
pub fn is_compiled(language: Language) -> bool {
    matches!(language, Language::Rust | Language::Wasm)
}

/// Whether a language compiles to an artifact worth storing and sharing:
/// Rust only. WebAssembly modules are compiled from the script by every
/// replica (machine code read back from a shared database cannot be
/// trusted, see `lambda_runtime::wasm`), so a lookup for one would always
/// miss, a database round trip on every new module's initialize.
pub fn has_artifacts(language: Language) -> bool {
    matches!(language, Language::Rust)
}

/// The params part of a function's `schema` (`{"params": ..., "result": ...}`).
pub fn params_schema(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("params").filter(|params| !params.is_null())
}

/// Compiles a params JSON Schema; an invalid schema is the caller's error.
pub fn compile_params_schema(schema: &Value) -> Result<Arc<jsonschema::Validator>> {
    jsonschema::validator_for(schema)
        .map(Arc::new)
        .map_err(|error| {
            Error::InvalidRequest(format!("schema.params is not a valid JSON Schema: {error}"))
        })
}

/// Checks params against a schema, naming the first failing path.
pub fn validate_params(validator: &jsonschema::Validator, params: &Value) -> Result<()> {
    match validator.iter_errors(params).next() {
        None => Ok(()),
        Some(error) => {
            let path = error.instance_path.to_string();
            Err(Error::InvalidParams {
                path: if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                },
                message: error.to_string(),
            })
        }
    }
}
