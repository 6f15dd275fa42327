//! `lambda-bench`: the benchmark harness for lambda-microservice.
//!
//! `lambda-bench [--smoke]` runs every scenario against the release
//! `lambda-microservice` binary (PostgreSQL, logging and auth on) and an
//! in-process axum baseline, and writes `bench/results/{latest,smoke}.{md,json,png}`.
//! The hidden subcommands `loadgen` and `baseline` are the load generator
//! and the baseline server, started by the harness as separate processes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

mod baseline;
mod chart;
mod harness;
mod loadgen;
mod processes;
mod procfs;
mod report;

use harness::{Harness, Plan, StartOptions};

#[derive(Parser)]
#[command(
    name = "lambda-bench",
    about = "Benchmark lambda-microservice against an in-process baseline"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A few seconds per scenario at one connection: checks that everything
    /// works and writes bench/results/smoke.*; exits non-zero on any failure.
    #[arg(long)]
    smoke: bool,
    /// The service binary (default: lambda-microservice next to this binary,
    /// i.e. target/release).
    #[arg(long, env = "BENCH_SERVICE_BIN")]
    service_bin: Option<PathBuf>,
    /// PostgreSQL URL with rights to create and drop databases; a
    /// throw-away `lm_bench_<random>` database is created on it.
    #[arg(
        long,
        env = "BENCH_DATABASE_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Where the results go (default: bench/results in the workspace).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Measured seconds per load run (full mode default 8).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Soak length in seconds (full mode default 60).
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Runs only these scenarios (for profiling one of them) and writes
    /// bench/results/partial.* instead of latest.*.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// The load generator's scheduling policy. `normal` measures as the
    /// harness did before this option, for comparing with earlier results.
    #[arg(long, value_enum, default_value_t)]
    loadgen_scheduling: loadgen::Scheduling,
}

/// The scenarios, in the order a full run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Warm execute at the lower connection counts, the seeded functions,
    /// and a result-cache hit (the platform's path without a runtime).
    Warm,
    Initialize,
    First,
    ManySessions,
    Soak,
    /// Warm execute at the highest connection count.
    High,
    KeepAlive,
}

#[derive(Subcommand)]
enum Command {
    /// The load generator (started by the harness).
    #[command(hide = true)]
    Loadgen {
        #[arg(long)]
        spec: PathBuf,
    },
    /// The baseline server (started by the harness).
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        bind: std::net::SocketAddr,
    },
    /// Renders a results JSON file again as markdown and PNG, beside it.
    #[command(hide = true)]
    Render {
        #[arg(long)]
        json: PathBuf,
    },
    /// Prints an HS256 token with every scope (for profiling by hand).
    #[command(hide = true)]
    Token {
        /// The service's JWT_SECRET.
        #[arg(long, env = "JWT_SECRET")]
        secret: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Command::Loadgen { spec }) => loadgen::main(spec).map(|()| true),
        Some(Command::Baseline { bind }) => baseline::main(*bind).map(|()| true),
        Some(Command::Render { json }) => render(json).map(|()| true),
        Some(Command::Token { secret }) => lambda_access::testing::mint_hs256(
            secret,
            "bench-user",
            "execute:all read:functions write:functions",
            std::time::Duration::from_secs(24 * 3600),
        )
        .map(|token| println!("{token}"))
        .map(|()| true)
        .map_err(anyhow::Error::from),
        None => run_harness(&cli),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("lambda-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn render(json: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    let report: report::Report = serde_json::from_str(&text).context("not a results file")?;
    let dir = json.parent().unwrap_or(Path::new("."));
    let stem = json
        .file_stem()
        .and_then(|stem| stem.to_str())
        .context("the results file has no name")?;
    for file in report.write(dir, stem)? {
        eprintln!("lambda-bench: wrote {}", file.display());
    }
    Ok(())
}

/// The checkout this run belongs to. `cargo run` names it at run time; the
/// path baked in at compile time is only a fallback, because a build cache
/// shared by several checkouts (CI's) serves a binary built in another one.
fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn locate_service(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--service-bin {} is not a file", path.display());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        candidates.push(dir.join("lambda-microservice"));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("release/lambda-microservice"));
    }
    candidates.push(workspace_root().join("target/release/lambda-microservice"));
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| {
            "the release service binary is missing: build it first with \
         `cargo build --release -p lambda-server` (or pass --service-bin)"
                .to_string()
        })
}

/// Warns when a crate's source is newer than the service binary.
fn warn_if_stale(service_bin: &Path) {
    let Ok(built) = std::fs::metadata(service_bin).and_then(|meta| meta.modified()) else {
        return;
    };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![
        workspace_root().join("crates"),
        workspace_root().join("runtimes"),
    ];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > 20_000 {
                return;
            }
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("tests") {
                    stack.push(path);
                }
            } else if let Ok(modified) = entry.metadata().and_then(|meta| meta.modified()) {
                if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
                    newest = Some((modified, path));
                }
            }
        }
    }
    if let Some((modified, path)) = newest {
        if modified > built {
            eprintln!(
                "lambda-bench: warning: {} is newer than {}; rebuild with `cargo build --release -p lambda-server`",
                path.display(),
                service_bin.display()
            );
        }
    }
}

fn run_harness(cli: &Cli) -> anyhow::Result<bool> {
    let mut plan = if cli.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    if let Some(seconds) = cli.duration_secs {
        plan.duration_ms = seconds.clamp(1, 600) * 1000;
    }
    if let Some(seconds) = cli.soak_secs {
        plan.soak_ms = seconds.clamp(1, 3600) * 1000;
    }
    plan.loadgen_scheduling = cli.loadgen_scheduling;
    let service_bin = locate_service(cli.service_bin.as_deref())?;
    if cli.service_bin.is_none() {
        warn_if_stale(&service_bin);
    }
    let out_dir = cli
        .out_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench/results"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let only = (!cli.only.is_empty()).then_some(cli.only.as_slice());
    runtime.block_on(harness_main(
        plan,
        only,
        &service_bin,
        &cli.admin_url,
        &out_dir,
    ))
}

async fn harness_main(
    plan: Plan,
    only: Option<&[Scenario]>,
    service_bin: &Path,
    admin_url: &str,
    out_dir: &Path,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mode = if plan.smoke { "smoke" } else { "full" };
    let work_dir =
        std::env::temp_dir().join(format!("lambda-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    eprintln!(
        "lambda-bench: {mode} mode; service {}; work dir {}",
        service_bin.display(),
        work_dir.display()
    );

    let mut database = processes::Database::create(admin_url).await?;
    eprintln!("lambda-bench: database {}", database.name);
    let measured = run_scenarios(plan.clone(), only, service_bin, &database.url, &work_dir).await;
    let drop_outcome = database.drop_database().await;

    let mut measurements = match measured {
        Ok(measurements) => measurements,
        Err(error) => {
            eprintln!(
                "lambda-bench: logs kept in {} (service.log, baseline.log)",
                work_dir.display()
            );
            drop_outcome?;
            return Err(error);
        }
    };
    if let Err(error) = drop_outcome {
        measurements.failures.push(format!("{error:#}"));
    }
    let machine = report::Machine {
        cpus: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| format!("Linux {}", text.trim()))
            .unwrap_or_else(|_| "unknown kernel".into()),
        service_bin: service_bin.display().to_string(),
    };
    let stem = match (plan.smoke, only) {
        (true, _) => "smoke",
        (false, Some(_)) => "partial",
        (false, None) => "latest",
    };
    let report = report::Report::build(
        mode,
        started_at,
        started.elapsed().as_secs_f64(),
        machine,
        &plan,
        measurements,
    );
    let files = report.write(out_dir, stem)?;
    println!("{}", report.markdown());
    for file in &files {
        let size = std::fs::metadata(file).map(|meta| meta.len()).unwrap_or(0);
        if size == 0 {
            eprintln!("lambda-bench: {} is empty", file.display());
            return Ok(false);
        }
        eprintln!("lambda-bench: wrote {} ({size} bytes)", file.display());
    }
    let failures = &report.measurements.failures;
    eprintln!(
        "lambda-bench: {mode} run finished in {:.1} s with {} failure(s)",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for failure in failures {
        eprintln!("  FAILED: {failure}");
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else {
        eprintln!("lambda-bench: logs kept in {}", work_dir.display());
    }
    Ok(failures.is_empty())
}

async fn run_scenarios(
    plan: Plan,
    only: Option<&[Scenario]>,
    service_bin: &Path,
    database_url: &str,
    work_dir: &Path,
) -> anyhow::Result<harness::Measurements> {
    let mut harness = Harness::start(StartOptions {
        plan,
        service_bin,
        database_url,
        work_dir,
    })
    .await?;
    let interrupted = {
        let scenarios = async {
            eprintln!("lambda-bench: setting up sessions");
            harness.setup_sessions().await;
            // Up to the middle level first; the highest level (256) runs
            // near the end, because it grows every worker pool to its cap
            // and the service's open descriptors with it.
            let levels = harness.plan.levels.clone();
            let (low, high) = levels.split_at(levels.len().div_ceil(2));
            let runs = |scenario| only.is_none_or(|only: &[Scenario]| only.contains(&scenario));
            if runs(Scenario::Warm) {
                eprintln!("lambda-bench: warm execute");
                harness.warm_execute(low).await;
                harness.warm_execute_seeded().await;
                harness.warm_execute_cached().await;
            }
            if runs(Scenario::Initialize) {
                eprintln!("lambda-bench: initialize");
                harness.initialize_latency().await;
            }
            if runs(Scenario::First) {
                eprintln!("lambda-bench: initialize → first execute");
                harness.first_execute().await;
            }
            if runs(Scenario::ManySessions) {
                eprintln!("lambda-bench: many sessions");
                harness.many_sessions().await;
            }
            if runs(Scenario::Soak) {
                eprintln!("lambda-bench: soak");
                harness.soak().await;
            }
            if runs(Scenario::High) && !high.is_empty() {
                eprintln!("lambda-bench: warm execute, high connection counts");
                harness.warm_execute(high).await;
            }
            if runs(Scenario::KeepAlive) {
                eprintln!("lambda-bench: keep-alive connections");
                harness.keep_alive().await;
            }
        };
        tokio::select! {
            () = scenarios => false,
            _ = tokio::signal::ctrl_c() => true,
        }
    };
    if let Some(status) = harness.service.exited() {
        harness.measurements.failures.push(format!(
            "the service exited during the run ({status}):\n{}",
            harness.service.log_tail()
        ));
    }
    eprintln!("lambda-bench: stopping the service");
    harness.stop_all();
    if interrupted {
        bail!("interrupted");
    }
    Ok(std::mem::take(&mut harness.measurements))
}
