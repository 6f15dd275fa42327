use serde_json::{Value, Map};
use std::collections::HashMap;

pub fn handler(context: Map<String, Value>) -> Result<Value, String> {
    let params = context.get("params")
        .ok_or("Missing params")?
        .as_object()
        .ok_or("Invalid params format")?;
    
    let data = params.get("data")
        .ok_or("Missing data")?
        .as_object()
        .ok_or("Invalid data format")?;
    
    let rules = params.get("rules")
        .ok_or("Missing rules")?
        .as_array()
        .ok_or("Invalid rules format")?;
    
    let mut errors = Vec::new();
    let mut valid = true;
    
    for rule in rules {
        let rule_str = rule.as_str().unwrap_or("");
        match rule_str {
            "required" => {
                if data.is_empty() {
                    errors.push("Data is required".to_string());
                    valid = false;
                }
            }
            "numeric" => {
                for (key, value) in data {
                    if !value.is_number() {
                        errors.push(format!("Field {} must be numeric", key));
                        valid = false;
                    }
                }
            }
            _ => {
                errors.push(format!("Unknown rule: {}", rule_str));
                valid = false;
            }
        }
    }
    
    let result = serde_json::json!({
        "valid": valid,
        "errors": errors
    });
    
    Ok(result)
}