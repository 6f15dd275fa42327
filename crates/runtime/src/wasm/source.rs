//! Turning `script_content` into wasm bytes: WAT text or base64 of a binary.

use base64::Engine as _;

use crate::{RuntimeError, SourceLocation};

/// WAT is recognised by its first token (after whitespace and `;;` line
/// comments): `(module` or any other s-expression. Base64 never starts
/// with `(` or `;`, so the two can't be confused.
pub(crate) fn is_wat(source: &str) -> bool {
    let mut rest = source.trim_start();
    while let Some(comment) = rest.strip_prefix(";;") {
        rest = match comment.find('\n') {
            Some(end) => comment[end..].trim_start(),
            None => "",
        };
    }
    rest.starts_with('(')
}

/// The wasm binary `source` stands for.
pub(crate) fn decode(source: &str) -> Result<Vec<u8>, RuntimeError> {
    if is_wat(source) {
        return wat::parse_str(source).map_err(|error| wat_error(&error.to_string()));
    }
    // Base64 pasted from a terminal often carries line breaks.
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes()))
        .map_err(|error| RuntimeError::Initialization {
            message: format!(
                "script_content is neither WAT text (starting with `(module`) nor base64 of a \
                 wasm binary: {error}"
            ),
            location: SourceLocation::default(),
        })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(RuntimeError::Initialization {
            message: "script_content decodes from base64 but is not a wasm binary (no `\\0asm` \
                      header)"
                .to_string(),
            location: SourceLocation::default(),
        });
    }
    Ok(bytes)
}

/// `wat` renders errors as `message\n     --> <anon>:LINE:COL\n ...`; it has
/// no accessor for the position, so it is read back from the text.
fn wat_error(rendered: &str) -> RuntimeError {
    let message = rendered
        .lines()
        .next()
        .unwrap_or(rendered)
        .trim()
        .to_string();
    let location = rendered
        .lines()
        .find_map(|line| line.trim().strip_prefix("-->"))
        .and_then(|position| {
            let mut parts = position.trim().rsplitn(3, ':');
            let column = parts.next()?.parse().ok()?;
            let line = parts.next()?.parse().ok()?;
            Some(SourceLocation {
                line: Some(line),
                column: Some(column),
            })
        })
        .unwrap_or_default();
    RuntimeError::Initialization {
        message: format!("invalid WAT: {message}"),
        location,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wat_is_detected_after_comments_and_whitespace() {
        assert!(is_wat("  \n(module)"));
        assert!(is_wat(";; echo\n  (module)"));
        assert!(!is_wat("AGFzbQEAAAA="));
    }

    #[test]
    fn wat_parse_errors_carry_line_and_column() {
        let Err(RuntimeError::Initialization { message, location }) =
            decode("(module\n  (func (nonsense)))")
        else {
            panic!("expected an initialization error");
        };
        assert!(message.starts_with("invalid WAT"), "{message}");
        assert_eq!(location.line, Some(2), "{message}");
        assert!(location.column.is_some());
    }

    #[test]
    fn base64_of_a_binary_decodes() {
        let bytes = decode("AGFzbQEAAAA=").map_err(|e| e.to_string());
        assert_eq!(bytes, Ok(b"\0asm\x01\0\0\0".to_vec()));
    }
}
