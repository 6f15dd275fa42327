//! `lambda-microservice`: `serve` (default) runs the HTTP API with its
//! embedded runtimes; `migrate` applies the database schema and exits.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lambda_core::Config;

mod access;
mod http_server;
mod runtimes;
mod serve;
mod store;
mod telemetry;

/// Every request allocates and frees dozens of small objects (headers, JSON
/// values, the log row) across two threads, and hyper asks for an 8 KiB read
/// buffer per request, which makes glibc consolidate its fast bins each
/// time: about a tenth of the execute path's CPU. jemalloc's thread caches
/// take most of that cost away (bench/README.md); the in-process baseline,
/// which allocates little, did not move with another allocator preloaded.
/// Its memory price showed with 10,000 idle connections, 23 to 32 MiB over
/// glibc's, while hyper's read buffer doubled on every connection; since
/// the service has its own listener (`http_server`), the two hold about
/// the same there. mimalloc was as fast and held 40% more than glibc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "lambda-microservice",
    version,
    about = "Run Node.js, Python, Rust and WebAssembly functions, fast and sandboxed."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Configuration comes from the environment; see README.md.
    Serve,
    /// Apply the embedded migrations to the configured database, verify the schema, and exit.
    Migrate,
}

/// Every connection and every warm worker's pipes hold descriptors; the
/// usual soft limit of 1024 runs out under a few hundred connections, so
/// take what the hard limit allows.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct we pass.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = limit.rlim_max;
        if limit.rlim_cur >= wanted {
            return;
        }
        limit.rlim_cur = wanted;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    };
    if raised {
        tracing::info!(open_files = limit.rlim_cur, "raised the open-file limit");
    } else {
        tracing::warn!(
            "could not raise the open-file limit; many connections or workers may fail with EMFILE"
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_process_env() {
        Ok(config) => Arc::new(config),
        Err(error) => {
            eprintln!("lambda-microservice: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log_format);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lambda-microservice: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve::serve(config).await,
            Command::Migrate => store::open(&config).await.map(|_| {
                tracing::info!("schema is up to date");
            }),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("lambda-microservice: {error:#}");
            ExitCode::FAILURE
        }
    }
}
