//! Building every language runtime from the configuration.

use lambda_core::Config;
use lambda_runtime::config::RuntimeConfig;
use lambda_runtime::rust::RustConfig;
use lambda_runtime::wasm::{WasmConfig, WasmRuntime};
use lambda_runtime::{nodejs, python, rust, Limits, Runtimes};

pub fn build(config: &Config) -> Runtimes {
    let workers = &config.workers;
    if workers.allow_insecure_no_sandbox {
        tracing::warn!(
            "ALLOW_INSECURE_NO_SANDBOX=true: user code runs WITHOUT the bubblewrap sandbox. \
             Never use this outside development."
        );
    }
    let runtime_config = RuntimeConfig {
        blank_workers_per_language: workers.blank_per_language,
        max_workers_per_language: workers.max_per_language,
        max_workers_per_script: workers.max_per_script,
        queue_wait: workers.queue_wait,
        allow_insecure_no_sandbox: workers.allow_insecure_no_sandbox,
        work_dir: config.data_dir.join("runtime"),
        spawn_limits: Limits {
            timeout: config.default_timeout,
            memory_bytes: workers.memory_bytes,
            max_result_bytes: workers.max_result_bytes,
            max_log_bytes: workers.max_log_bytes,
            max_processes: workers.max_processes,
        },
        ..RuntimeConfig::default()
    };
    let wasm_config = WasmConfig {
        queue_wait: workers.queue_wait,
        ..WasmConfig::default()
    };
    // One wasmtime engine serves wasm sessions and Rust compiled to wasm32-wasip1.
    let wasm = WasmRuntime::new(wasm_config);
    let rust_config = RustConfig::new(runtime_config.clone(), config.data_dir.clone());
    Runtimes::new()
        .with(nodejs::runtime(&runtime_config))
        .with(python::runtime(&runtime_config))
        .with(rust::runtime(rust_config, Some(wasm.clone())))
        .with(wasm)
}
