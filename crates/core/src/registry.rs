//! The function registry: predefined (seeded) and dynamic functions.
//!
//! Registration compiles the script with its language's runtime so a script
//! that does not load is refused up front, and checks the params schema is
//! a valid JSON Schema.

use std::sync::Arc;

use lambda_runtime::{RuntimeError, RuntimeStatus, Runtimes};
use lambda_store::{
    FunctionFilter, FunctionKind, FunctionRecord, FunctionUpdate, NewFunction, Store, StoreError,
};
use serde_json::Value;

use crate::caller::Caller;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::language_title::LanguageTitleParser;
use crate::scripts::{build_script, compile_params_schema, params_schema};

/// A registration as the API received it.
#[derive(Debug, Clone, Default)]
pub struct FunctionDraft {
    pub language_title: String,
    pub description: Option<String>,
    pub script_content: Option<String>,
    pub schema: Option<Value>,
    pub examples: Option<Value>,
    pub compile_options: Option<Value>,
    pub tags: Option<Vec<String>>,
}

pub struct Registry {
    store: Arc<dyn Store>,
    runtimes: Runtimes,
    parser: LanguageTitleParser,
    config: Arc<Config>,
}

pub const MAX_PER_PAGE: u32 = 100;

fn check_tags(tags: Option<&[String]>) -> Result<()> {
    let tags = tags.unwrap_or_default();
    if tags.len() > 32 || tags.iter().any(|tag| tag.is_empty() || tag.len() > 64) {
        return Err(Error::InvalidRequest(
            "tags: at most 32, each 1 to 64 characters".into(),
        ));
    }
    Ok(())
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        runtimes: Runtimes,
        parser: LanguageTitleParser,
        config: Arc<Config>,
    ) -> Self {
        Registry {
            store,
            runtimes,
            parser,
            config,
        }
    }

    fn require_read(caller: &Caller) -> Result<()> {
        if caller.may_read_functions {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "token lacks the scope read:functions".into(),
            ))
        }
    }

    fn require_write(caller: &Caller) -> Result<()> {
        if caller.may_write_functions {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "token lacks the scope write:functions".into(),
            ))
        }
    }

    pub async fn list(
        &self,
        caller: &Caller,
        filter: FunctionFilter,
    ) -> Result<(i64, Vec<FunctionRecord>)> {
        Self::require_read(caller)?;
        if filter.page == 0 || filter.per_page == 0 || filter.per_page > MAX_PER_PAGE {
            return Err(Error::InvalidRequest(format!(
                "page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}"
            )));
        }
        Ok(self.store.list_functions(&filter).await?)
    }

    pub async fn get(&self, caller: &Caller, language_title: &str) -> Result<FunctionRecord> {
        Self::require_read(caller)?;
        let canonical = self.parser.parse(language_title)?.canonical();
        self.store
            .get_function(&canonical)
            .await?
            .ok_or_else(|| Error::NotFound(format!("function '{canonical}' not found")))
    }

    /// Checks that the script loads in its language, and the schema compiles.
    async fn check(
        &self,
        language_title: &str,
        source: &str,
        compile_options: &Value,
        schema: Option<&Value>,
    ) -> Result<()> {
        if source.len() > self.config.max_script_size {
            return Err(Error::PayloadTooLarge {
                what: "script_content",
                size: source.len(),
                limit: self.config.max_script_size,
            });
        }
        crate::sessions::check_script_text(source)?;
        if let Some(schema) = schema {
            if !schema.is_object() {
                return Err(Error::InvalidRequest(
                    "schema must be an object like {\"params\": <JSON Schema>, \"result\": <JSON Schema>}".into(),
                ));
            }
            if let Some(params) = params_schema(Some(schema)) {
                compile_params_schema(params)?;
            }
        }
        let language = self.parser.parse(language_title)?.language;
        let runtime = self.runtimes.get(language).ok_or_else(|| {
            Error::Runtime(RuntimeError::Unavailable {
                language,
                reason: format!("no {language} runtime is built into this service yet"),
            })
        })?;
        if let RuntimeStatus::Unavailable { reason } = runtime.status() {
            return Err(Error::Runtime(RuntimeError::Unavailable {
                language,
                reason,
            }));
        }
        let script = build_script(language, source, compile_options.clone(), None, None);
        runtime.prepare(&script).await?;
        // The check's warm worker belongs to no session.
        runtime.release(&script.worker_key).await;
        Ok(())
    }

    pub async fn register(&self, caller: &Caller, draft: FunctionDraft) -> Result<FunctionRecord> {
        Self::require_write(caller)?;
        let parsed = self.parser.parse(&draft.language_title)?;
        check_tags(draft.tags.as_deref())?;
        let source = draft
            .script_content
            .ok_or_else(|| Error::InvalidRequest("script_content is required".into()))?;
        let compile_options = draft.compile_options.clone().unwrap_or(Value::Null);
        let canonical = parsed.canonical();
        self.check(&canonical, &source, &compile_options, draft.schema.as_ref())
            .await?;
        let function = NewFunction {
            language: parsed.language.as_str().to_string(),
            title: parsed.title,
            language_title: canonical.clone(),
            description: draft.description,
            created_by: caller.subject.clone(),
            script_content: source,
            schema: draft.schema,
            examples: draft.examples,
            compile_options: draft.compile_options,
            tags: draft.tags.unwrap_or_default(),
        };
        self.store
            .insert_function(&function)
            .await
            .map_err(|error| match error {
                StoreError::Conflict { .. } => {
                    Error::Conflict(format!("function '{canonical}' already exists"))
                }
                other => Error::Store(other),
            })
    }

    /// Only a dynamic function's owner (or an admin) may change it.
    async fn owned_function(
        &self,
        caller: &Caller,
        language_title: &str,
    ) -> Result<FunctionRecord> {
        Self::require_write(caller)?;
        let canonical = self.parser.parse(language_title)?.canonical();
        let function = self
            .store
            .get_function(&canonical)
            .await?
            .ok_or_else(|| Error::NotFound(format!("function '{canonical}' not found")))?;
        if function.kind == FunctionKind::Predefined {
            return Err(Error::Forbidden(format!(
                "'{canonical}' is a predefined function and cannot be changed"
            )));
        }
        if !caller.admin && !caller.owns(function.created_by.as_deref()) {
            return Err(Error::Forbidden(format!(
                "'{canonical}' belongs to another subject"
            )));
        }
        Ok(function)
    }

    pub async fn update(
        &self,
        caller: &Caller,
        language_title: &str,
        draft: FunctionDraft,
    ) -> Result<FunctionRecord> {
        check_tags(draft.tags.as_deref())?;
        let current = self.owned_function(caller, language_title).await?;
        let source = draft
            .script_content
            .clone()
            .unwrap_or_else(|| current.script_content.clone());
        let compile_options = draft
            .compile_options
            .clone()
            .or_else(|| current.compile_options.clone())
            .unwrap_or(Value::Null);
        let schema = draft.schema.clone().or_else(|| current.schema.clone());
        self.check(
            &current.language_title,
            &source,
            &compile_options,
            schema.as_ref(),
        )
        .await?;
        let update = FunctionUpdate {
            description: draft.description,
            script_content: draft.script_content,
            schema: draft.schema,
            examples: draft.examples,
            compile_options: draft.compile_options,
            tags: draft.tags,
        };
        self.store
            .update_function(&current.language_title, &update)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("function '{}' not found", current.language_title))
            })
    }

    pub async fn retire(&self, caller: &Caller, language_title: &str) -> Result<()> {
        let current = self.owned_function(caller, language_title).await?;
        if !self.store.retire_function(&current.language_title).await? {
            return Err(Error::NotFound(format!(
                "function '{}' not found",
                current.language_title
            )));
        }
        Ok(())
    }
}
