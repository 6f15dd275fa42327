//! Secret masking for anything that is logged or stored (request_logs rows,
//! error logs, traces). Masking is by field name, deliberately broad: a
//! false positive hides a harmless value, a false negative leaks a secret.

use serde_json::{Map, Value};

/// What replaces a masked value.
pub const MASK: &str = "***";

/// Lower-case fragments that mark a key as secret.
const SECRET_KEY_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "auth",
    "credential",
    "private_key",
    "privatekey",
    "access_key",
    "accesskey",
    "cookie",
    "session_key",
];

/// True when a field or header name looks like it holds a secret
/// (case-insensitive substring match).
pub fn is_secret_key(key: &str) -> bool {
    // Avoid allocating for the common short, already lower-case key.
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        let lower = key.to_ascii_lowercase();
        SECRET_KEY_FRAGMENTS.iter().any(|f| lower.contains(f))
    } else {
        SECRET_KEY_FRAGMENTS.iter().any(|f| key.contains(f))
    }
}

/// Replaces, in place and at any depth, the value of every object key that
/// [`is_secret_key`] flags with `"***"`, and any string that is itself a
/// bearer credential (`Bearer ...` or a JWT) wherever it appears.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if is_secret_key(key) {
                    *field = Value::String(MASK.to_owned());
                } else {
                    mask_secrets(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        Value::String(text) if looks_like_credential(text) => {
            *text = MASK.to_owned();
        }
        _ => {}
    }
}

/// A bearer header value or a JWT (`eyJ...` header.payload.signature) found
/// under an innocent key name, e.g. `{"headers": ["Bearer eyJ..."]}`.
fn looks_like_credential(text: &str) -> bool {
    let text = text.trim();
    if text.len() >= 7 && text[..7].eq_ignore_ascii_case("bearer ") {
        return true;
    }
    text.starts_with("eyJ")
        && text.split('.').count() == 3
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Request headers as a JSON object for logs: values of `Authorization`,
/// `Proxy-Authorization`, `Cookie`, `Set-Cookie` and any header whose name
/// looks secret become `"***"`. A header sent several times becomes an
/// array; non-UTF-8 values are replaced lossily.
pub fn mask_headers(headers: &http::HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let key = name.as_str();
        let masked = is_secret_key(key) || key == "set-cookie";
        let mut values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                if masked {
                    Value::String(MASK.to_owned())
                } else {
                    let text = String::from_utf8_lossy(v.as_bytes());
                    let mut value = Value::String(text.into_owned());
                    mask_secrets(&mut value);
                    value
                }
            })
            .collect();
        let value = if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Array(values)
        };
        out.insert(key.to_owned(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE};
    use serde_json::json;

    #[test]
    fn masks_secret_keys_at_any_depth() {
        let mut value = json!({
            "user": "ann",
            "Password": "hunter2",
            "config": {
                "DB_PASSWD": "x",
                "clientSecret": "y",
                "refresh_token": "z",
                "X-Api-Key": "k",
                "apikey": 1,
                "Authorization": "Basic abc",
                "aws_access_key_id": "AKIA",
                "private_key": {"pem": "..."},
                "credentials": ["a", "b"],
                "limit": 10
            },
            "items": [{"auth": "q", "name": "n"}, "plain"]
        });
        mask_secrets(&mut value);
        assert_eq!(
            value,
            json!({
                "user": "ann",
                "Password": "***",
                "config": {
                    "DB_PASSWD": "***",
                    "clientSecret": "***",
                    "refresh_token": "***",
                    "X-Api-Key": "***",
                    "apikey": "***",
                    "Authorization": "***",
                    "aws_access_key_id": "***",
                    "private_key": "***",
                    "credentials": "***",
                    "limit": 10
                },
                "items": [{"auth": "***", "name": "n"}, "plain"]
            })
        );
    }

    #[test]
    fn masks_credentials_under_innocent_keys() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let mut value = json!({"h": ["bearer abc", jwt], "note": "eyJ is not a jwt", "n": "a.b.c"});
        mask_secrets(&mut value);
        assert_eq!(
            value,
            json!({"h": ["***", "***"], "note": "eyJ is not a jwt", "n": "a.b.c"})
        );
    }

    #[test]
    fn leaves_ordinary_values_alone() {
        let original = json!({"a": 1, "b": [true, null, {"c": "d"}], "text": "hello"});
        let mut value = original.clone();
        mask_secrets(&mut value);
        assert_eq!(value, original);
    }

    #[test]
    fn headers_hide_authorization_and_cookies() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        headers.append(COOKIE, HeaderValue::from_static("sid=1"));
        headers.append(COOKIE, HeaderValue::from_static("other=2"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        headers.insert(
            "language-title",
            HeaderValue::from_static("nodejs-calculator"),
        );
        let masked = mask_headers(&headers);
        assert_eq!(
            masked,
            json!({
                "authorization": "***",
                "cookie": ["***", "***"],
                "content-type": "application/json",
                "x-api-key": "***",
                "language-title": "nodejs-calculator"
            })
        );
        assert!(!masked.to_string().contains("abc"));
    }
}
