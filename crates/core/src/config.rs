//! Configuration from environment variables, validated once at start.
//!
//! Every variable may instead be given as `<NAME>_FILE`, a path whose
//! contents (trailing newlines trimmed) are the value: the usual way to pass
//! secrets from Kubernetes or Docker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, naming the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where environment values come from; a function so tests can pass a map.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Reads `NAME`, else the file named by `NAME_FILE`; empty counts as unset.
pub fn read_var(env: &dyn Env, name: &str) -> Result<Option<String>, ConfigError> {
    if let Some(value) = env.get(name) {
        return Ok((!value.is_empty()).then_some(value));
    }
    let file_variable = format!("{name}_FILE");
    let Some(path) = env.get(&file_variable) else {
        return Ok(None);
    };
    let contents = std::fs::read_to_string(&path).map_err(|error| ConfigError {
        variable: file_variable.clone(),
        problem: format!("cannot read '{path}': {error}"),
    })?;
    let value = contents.trim_end_matches(['\n', '\r']).to_string();
    Ok((!value.is_empty()).then_some(value))
}

fn parse_var<T: FromStr>(
    env: &dyn Env,
    name: &str,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    match read_var(env, name)? {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| ConfigError {
            variable: name.to_string(),
            problem: format!("'{text}' is not {expected}"),
        }),
    }
}

fn parse_bool(env: &dyn Env, name: &str, default: bool) -> Result<bool, ConfigError> {
    match read_var(env, name)? {
        None => Ok(default),
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                variable: name.to_string(),
                problem: format!("'{text}' is not a boolean (use true or false)"),
            }),
        },
    }
}

fn positive(name: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError {
            variable: name.to_string(),
            problem: "must be greater than 0".to_string(),
        });
    }
    Ok(value)
}

/// Settings of the warm worker pools, handed to the runtimes at start.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// `WORKERS_PER_LANGUAGE`: blank workers kept pre-spawned.
    pub blank_per_language: usize,
    /// `WORKERS_MAX_PER_LANGUAGE`: cap on live workers of one language.
    pub max_per_language: usize,
    /// `WORKERS_MAX_PER_SCRIPT`: cap on workers holding one script.
    pub max_per_script: usize,
    /// `WORKER_QUEUE_WAIT_MS`: how long an execute waits for a free worker.
    pub queue_wait: Duration,
    /// `ALLOW_INSECURE_NO_SANDBOX`: run without bubblewrap (development only).
    pub allow_insecure_no_sandbox: bool,
    /// `WORKER_MEMORY_MB`.
    pub memory_bytes: u64,
    /// `MAX_RESULT_BYTES`.
    pub max_result_bytes: usize,
    /// `MAX_LOG_BYTES`.
    pub max_log_bytes: usize,
    /// `WORKER_MAX_PROCESSES`.
    pub max_processes: u32,
}

/// The whole service configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BIND_ADDR`, default `127.0.0.1:8080`.
    pub bind_addr: SocketAddr,
    /// `DATABASE_URL`: PostgreSQL; unset means the embedded SQLite file.
    pub database_url: Option<String>,
    /// `DATA_DIR`, default `./data`: the SQLite file, compiled artifacts.
    pub data_dir: PathBuf,
    /// `SESSION_EXPIRY_SECONDS`, default 3600.
    pub session_expiry: Duration,
    /// `SESSION_CLEANUP_INTERVAL_SECONDS`, default 60.
    pub session_cleanup_interval: Duration,
    /// `SESSION_CACHE_REVALIDATE_MS`, default 1000: how long a replica trusts
    /// its cached copy of a session before reading it again, which bounds
    /// how long a deletion on another replica takes to be seen here.
    pub session_cache_revalidate: Duration,
    /// `RUNTIME_TIMEOUT_SECONDS`, default 30: the cap on `context.timeout_ms`.
    pub runtime_timeout_cap: Duration,
    /// `DEFAULT_TIMEOUT_MS`, default 30000 (capped by the above).
    pub default_timeout: Duration,
    /// `MAX_SCRIPT_SIZE`, default 1 MiB.
    pub max_script_size: usize,
    /// `MAX_PARAMS_SIZE`, default 1 MiB: limit of an execute body.
    pub max_params_size: usize,
    /// `DB_LOGGING_ENABLED`, default true.
    pub db_logging_enabled: bool,
    /// `LOG_QUEUE_CAPACITY`, default 10000: rows the log batcher holds
    /// before executes wait for it (backpressure).
    pub log_queue_capacity: usize,
    /// `LOG_FLUSH_INTERVAL_MS`, default 200.
    pub log_flush_interval: Duration,
    /// `LOG_FORMAT`: text or json.
    pub log_format: LogFormat,
    /// `RUNTIME_MAPPINGS_FILE`, default `config/runtime_mappings.json` when it exists.
    pub runtime_mappings_file: Option<PathBuf>,
    /// `RESULT_CACHE_TTL_SECONDS`, default 3600; 0 disables the result cache.
    pub result_cache_ttl: Duration,
    /// `RESULT_CACHE_MAX_ENTRIES`, default 10000.
    pub result_cache_max_entries: usize,
    /// `RESULT_CACHE_MAX_BYTES`, default 64 MiB.
    pub result_cache_max_bytes: usize,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins; none by default.
    pub cors_allowed_origins: Vec<String>,
    pub workers: WorkerSettings,
}

impl Config {
    /// The configuration of this process's environment.
    pub fn from_process_env() -> Result<Config, ConfigError> {
        Self::from_env(&ProcessEnv)
    }

    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let bind_addr = parse_var(
            env,
            "BIND_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "a socket address such as 127.0.0.1:8080",
        )?;
        let database_url = read_var(env, "DATABASE_URL")?;
        if let Some(url) = &database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError {
                    variable: "DATABASE_URL".to_string(),
                    problem:
                        "must be a postgres:// URL (unset it to use the embedded SQLite store)"
                            .to_string(),
                });
            }
        }
        let data_dir = PathBuf::from(read_var(env, "DATA_DIR")?.unwrap_or_else(|| "./data".into()));
        let seconds = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let value = parse_var(env, name, default, "a whole number of seconds")?;
            Ok(Duration::from_secs(positive(name, value)?))
        };
        let millis = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let value = parse_var(env, name, default, "a whole number of milliseconds")?;
            Ok(Duration::from_millis(positive(name, value)?))
        };
        let size = |name: &str, default: usize| -> Result<usize, ConfigError> {
            let value = parse_var(env, name, default, "a whole number of bytes")?;
            Ok(positive(name, value as u64)? as usize)
        };
        let count = |name: &str, default: usize| -> Result<usize, ConfigError> {
            let value = parse_var(env, name, default, "a whole number")?;
            Ok(positive(name, value as u64)? as usize)
        };

        let runtime_timeout_cap = seconds("RUNTIME_TIMEOUT_SECONDS", 30)?;
        let default_timeout = millis("DEFAULT_TIMEOUT_MS", 30_000)?.min(runtime_timeout_cap);
        let log_format = match read_var(env, "LOG_FORMAT")?.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    variable: "LOG_FORMAT".to_string(),
                    problem: format!("'{other}' is not one of: text, json"),
                })
            }
        };
        let runtime_mappings_file = match read_var(env, "RUNTIME_MAPPINGS_FILE")? {
            Some(path) => Some(PathBuf::from(path)),
            None => {
                let default = PathBuf::from("config/runtime_mappings.json");
                default.exists().then_some(default)
            }
        };
        let result_cache_ttl = Duration::from_secs(parse_var(
            env,
            "RESULT_CACHE_TTL_SECONDS",
            3600,
            "a whole number of seconds (0 disables the cache)",
        )?);
        let max_per_language = count("WORKERS_MAX_PER_LANGUAGE", 16)?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = WorkerSettings {
            blank_per_language: parse_var(env, "WORKERS_PER_LANGUAGE", 2, "a whole number")?,
            max_per_language,
            max_per_script: count(
                "WORKERS_MAX_PER_SCRIPT",
                default_workers_per_script(cores, max_per_language),
            )?,
            queue_wait: millis("WORKER_QUEUE_WAIT_MS", 5_000)?,
            allow_insecure_no_sandbox: parse_bool(env, "ALLOW_INSECURE_NO_SANDBOX", false)?,
            memory_bytes: parse_var(env, "WORKER_MEMORY_MB", 256u64, "a whole number of MiB")
                .and_then(|mib| positive("WORKER_MEMORY_MB", mib))?
                * 1024
                * 1024,
            max_result_bytes: size("MAX_RESULT_BYTES", 6 * 1024 * 1024)?,
            max_log_bytes: size("MAX_LOG_BYTES", 64 * 1024)?,
            max_processes: parse_var(env, "WORKER_MAX_PROCESSES", 32u32, "a whole number")?,
        };
        Ok(Config {
            bind_addr,
            database_url,
            data_dir,
            session_expiry: seconds("SESSION_EXPIRY_SECONDS", 3600)?,
            session_cleanup_interval: seconds("SESSION_CLEANUP_INTERVAL_SECONDS", 60)?,
            session_cache_revalidate: Duration::from_millis(parse_var(
                env,
                "SESSION_CACHE_REVALIDATE_MS",
                1000,
                "a whole number of milliseconds",
            )?),
            runtime_timeout_cap,
            default_timeout,
            max_script_size: size("MAX_SCRIPT_SIZE", 1024 * 1024)?,
            max_params_size: size("MAX_PARAMS_SIZE", 1024 * 1024)?,
            db_logging_enabled: parse_bool(env, "DB_LOGGING_ENABLED", true)?,
            log_queue_capacity: count("LOG_QUEUE_CAPACITY", 10_000)?,
            log_flush_interval: millis("LOG_FLUSH_INTERVAL_MS", 200)?,
            log_format,
            runtime_mappings_file,
            result_cache_ttl,
            result_cache_max_entries: count("RESULT_CACHE_MAX_ENTRIES", 10_000)?,
            result_cache_max_bytes: size("RESULT_CACHE_MAX_BYTES", 64 * 1024 * 1024)?,
            cors_allowed_origins: read_var(env, "CORS_ALLOWED_ORIGINS")?
                .map(|origins| {
                    origins
                        .split(',')
                        .map(|origin| origin.trim().to_string())
                        .filter(|origin| !origin.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            workers,
        })
    }
}

/// Twice the cores: while one worker's answer travels back and the next
/// request reaches it, its core would idle; a second worker per core fills
/// that gap. Scripts cannot reach the network, so more than that only
/// splits the same CPU over more processes, each JIT-warming its own heap
/// (measured on 2 cores, Node.js add at 32 connections: 4 workers beat 2 by
/// 5 to 12% and 6 or 8; 16 served 1.7x less than 2). But at most half the
/// language's workers: a worker checked in goes to its own script's queue
/// first, so a script allowed all of them could keep every other script of
/// its language waiting for as long as its own load lasts.
fn default_workers_per_script(cores: usize, max_per_language: usize) -> usize {
    (2 * cores).min(max_per_language / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_on_an_empty_environment() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.session_expiry, Duration::from_secs(3600));
        assert_eq!(config.max_script_size, 1024 * 1024);
        assert!(config.db_logging_enabled);
        assert!(config.database_url.is_none());
    }

    #[test]
    fn a_script_gets_two_workers_per_core_but_never_all_of_its_language() {
        assert_eq!(default_workers_per_script(2, 16), 4);
        assert_eq!(default_workers_per_script(2, 4), 2);
        assert_eq!(default_workers_per_script(16, 16), 8);
        assert_eq!(default_workers_per_script(1, 1), 1);
        let config = Config::from_env(&env(&[("WORKERS_MAX_PER_LANGUAGE", "6")])).unwrap();
        assert!(config.workers.max_per_script <= 3);
        let config = Config::from_env(&env(&[("WORKERS_MAX_PER_SCRIPT", "9")])).unwrap();
        assert_eq!(config.workers.max_per_script, 9);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let error = Config::from_env(&env(&[("SESSION_EXPIRY_SECONDS", "soon")])).unwrap_err();
        assert_eq!(error.variable, "SESSION_EXPIRY_SECONDS");
        let error = Config::from_env(&env(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
        let error = Config::from_env(&env(&[("LOG_FORMAT", "xml")])).unwrap_err();
        assert_eq!(error.variable, "LOG_FORMAT");
    }

    #[test]
    fn file_variants_are_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("lm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("url");
        std::fs::write(&path, "postgres://u@h/db\n\n").unwrap();
        let config =
            Config::from_env(&env(&[("DATABASE_URL_FILE", path.to_str().unwrap())])).unwrap();
        assert_eq!(config.database_url.as_deref(), Some("postgres://u@h/db"));
        let missing =
            Config::from_env(&env(&[("DATABASE_URL_FILE", "/nonexistent/x")])).unwrap_err();
        assert_eq!(missing.variable, "DATABASE_URL_FILE");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
