//! The three predefined functions the platform ships, as the original V1.0.6
//! migration inserted them. The scripts are the original files byte for byte
//! (`crates/store/seeds/`); only the schema is wrapped in our API's
//! `{"params": ...}` shape.

use serde_json::{json, Value};
use uuid::Uuid;

/// `created_by` of predefined functions; `FunctionKind::Predefined` is
/// defined as exactly this value.
pub(crate) const SYSTEM_USER: &str = "system";

pub(crate) struct Seed {
    pub id: Uuid,
    pub language: &'static str,
    pub title: &'static str,
    pub language_title: &'static str,
    pub description: &'static str,
    pub script: &'static str,
    pub tags: [&'static str; 3],
    pub schema: fn() -> Value,
    pub examples: fn() -> Value,
}

impl Seed {
    pub fn tags(&self) -> Vec<String> {
        self.tags.iter().map(|tag| tag.to_string()).collect()
    }
}

fn calculator_schema() -> Value {
    json!({"params": {"type": "object", "properties": {
        "operation": {"type": "string", "enum": ["add", "subtract", "multiply", "divide"]},
        "a": {"type": "number"},
        "b": {"type": "number"}}}})
}

fn calculator_examples() -> Value {
    json!([
        {"operation": "add", "a": 5, "b": 3, "result": 8},
        {"operation": "multiply", "a": 4, "b": 2, "result": 8}
    ])
}

fn text_processor_schema() -> Value {
    json!({"params": {"type": "object", "properties": {
        "action": {"type": "string", "enum": ["count_words", "count_chars", "uppercase", "lowercase"]},
        "text": {"type": "string"}}}})
}

fn text_processor_examples() -> Value {
    json!([
        {"action": "count_words", "text": "Hello world", "result": 2},
        {"action": "uppercase", "text": "hello", "result": "HELLO"}
    ])
}

fn data_validator_schema() -> Value {
    json!({"params": {"type": "object", "properties": {
        "data": {"type": "object"},
        "rules": {"type": "array", "items": {"type": "string"}}}}})
}

fn data_validator_examples() -> Value {
    json!([
        {"data": {"age": 25}, "rules": ["required", "numeric"], "result": {"valid": true, "errors": []}}
    ])
}

pub(crate) const SEEDS: [Seed; 3] = [
    Seed {
        id: Uuid::from_u128(0xf47ac10b_58cc_4372_a567_0e02b2c3d479),
        language: "nodejs",
        title: "calculator",
        language_title: "nodejs-calculator",
        description: "Basic calculator functions in Node.js",
        script: include_str!("../seeds/nodejs-calculator.js"),
        tags: ["math", "basic", "nodejs"],
        schema: calculator_schema,
        examples: calculator_examples,
    },
    Seed {
        id: Uuid::from_u128(0xf47ac10b_58cc_4372_a567_0e02b2c3d480),
        language: "python",
        title: "text_processor",
        language_title: "python-text_processor",
        description: "Text processing functions in Python",
        script: include_str!("../seeds/python-text_processor.py"),
        tags: ["text", "processing", "python"],
        schema: text_processor_schema,
        examples: text_processor_examples,
    },
    Seed {
        id: Uuid::from_u128(0xf47ac10b_58cc_4372_a567_0e02b2c3d481),
        language: "rust",
        title: "data_validator",
        language_title: "rust-data_validator",
        description: "Data validation functions in Rust",
        script: include_str!("../seeds/rust-data_validator.rs"),
        tags: ["validation", "data", "rust"],
        schema: data_validator_schema,
        examples: data_validator_examples,
    },
];
