//! `Language-Title: <language>-<title>`, with optional aliases from a
//! runtime-mapping file (the original `config/runtime_mappings.json` format:
//! `[{"pattern": "^js-", "runtime_type": "nodejs", "is_regex": true}, ...]`).

use std::path::Path;

use lambda_runtime::Language;
use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A parsed, validated Language-Title in its canonical `<language>-<title>` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageTitle {
    pub language: Language,
    pub title: String,
}

impl LanguageTitle {
    pub fn canonical(&self) -> String {
        format!("{}-{}", self.language, self.title)
    }
}

#[derive(Debug, Deserialize)]
struct MappingEntry {
    pattern: String,
    runtime_type: String,
    #[serde(default)]
    is_regex: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Mapping {
    matcher: Matcher,
    language: Language,
}

/// Resolves Language-Title headers; holds the alias mappings.
#[derive(Debug, Clone, Default)]
pub struct LanguageTitleParser {
    mappings: Vec<Mapping>,
}

fn valid_title(title: &str) -> bool {
    (1..=64).contains(&title.len())
        && title
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl LanguageTitleParser {
    /// Loads a mapping file; a missing or malformed file is an error that
    /// names the file, because silently ignoring it would route scripts to
    /// the wrong language.
    pub fn from_file(path: &Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!("cannot read runtime mappings '{}': {error}", path.display())
        })?;
        Self::from_json(&text)
            .map_err(|error| format!("runtime mappings '{}': {error}", path.display()))
    }

    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let entries: Vec<MappingEntry> =
            serde_json::from_str(text).map_err(|error| format!("invalid JSON: {error}"))?;
        let mut mappings = Vec::with_capacity(entries.len());
        for entry in entries {
            let language: Language = entry
                .runtime_type
                .parse()
                .map_err(|error| format!("pattern '{}': {error}", entry.pattern))?;
            let matcher = if entry.is_regex {
                Matcher::Regex(
                    Regex::new(&entry.pattern)
                        .map_err(|error| format!("pattern '{}': {error}", entry.pattern))?,
                )
            } else {
                Matcher::Prefix(entry.pattern)
            };
            mappings.push(Mapping { matcher, language });
        }
        Ok(LanguageTitleParser { mappings })
    }

    /// Parses a header value. Malformed values are INVALID_REQUEST; a
    /// well-formed value naming no known language is NOT_FOUND.
    pub fn parse(&self, header: &str) -> Result<LanguageTitle> {
        let header = header.trim();
        for mapping in &self.mappings {
            let rest = match &mapping.matcher {
                Matcher::Prefix(prefix) => header.strip_prefix(prefix.as_str()),
                Matcher::Regex(regex) => regex
                    .find(header)
                    .filter(|found| found.start() == 0)
                    .map(|found| &header[found.end()..]),
            };
            if let Some(title) = rest {
                return Self::checked(mapping.language, title);
            }
        }
        let Some((language, title)) = header.split_once('-') else {
            return Err(Error::InvalidRequest(format!(
                "Language-Title '{header}' must look like <language>-<title>, e.g. nodejs-calculator"
            )));
        };
        if language.is_empty() {
            return Err(Error::InvalidRequest(
                "Language-Title has an empty language part".to_string(),
            ));
        }
        let language: Language = language.parse().map_err(|_| {
            Error::NotFound(format!(
                "unknown language '{language}' (known: nodejs, python, rust, wasm)"
            ))
        })?;
        Self::checked(language, title)
    }

    fn checked(language: Language, title: &str) -> Result<LanguageTitle> {
        if !valid_title(title) {
            return Err(Error::InvalidRequest(format!(
                "title '{title}' must be 1 to 64 characters of A-Z a-z 0-9 _ . -"
            )));
        }
        Ok(LanguageTitle {
            language,
            title: title.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_dash() {
        let parsed = LanguageTitleParser::default()
            .parse("nodejs-data-analyzer")
            .unwrap();
        assert_eq!(parsed.language, Language::Nodejs);
        assert_eq!(parsed.title, "data-analyzer");
        assert_eq!(parsed.canonical(), "nodejs-data-analyzer");
    }

    #[test]
    fn rejects_malformed_and_unknown() {
        let parser = LanguageTitleParser::default();
        assert!(matches!(
            parser.parse("nodejs"),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            parser.parse("nodejs-"),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            parser.parse("-calc"),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            parser.parse("nodejs-a b"),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            parser.parse(&format!("nodejs-{}", "x".repeat(65))),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            parser.parse("cobol-calc"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn aliases_come_from_the_mapping_file_format() {
        let parser = LanguageTitleParser::from_json(
            r#"[{"pattern": "^js-", "runtime_type": "nodejs", "is_regex": true},
                {"pattern": "py3-", "runtime_type": "python", "is_regex": false}]"#,
        )
        .unwrap();
        assert_eq!(parser.parse("js-calc").unwrap().canonical(), "nodejs-calc");
        assert_eq!(parser.parse("py3-text").unwrap().canonical(), "python-text");
        assert_eq!(parser.parse("rust-x").unwrap().canonical(), "rust-x");
        assert!(
            LanguageTitleParser::from_json(r#"[{"pattern": "x-", "runtime_type": "go"}]"#).is_err()
        );
    }
}
