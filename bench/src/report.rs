//! The results: a markdown table, a JSON file and a PNG chart, with every
//! figure absolute and as a ratio to the baseline of the same run, and the
//! issue's targets as pass/fail columns (targets, not gates).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::harness::{LoadRow, Measurements, Plan};
use crate::loadgen::Scheduling;

const MIB: f64 = 1024.0 * 1024.0;

/// Selects the rows of one section of the markdown report.
type RowFilter = fn(&LoadRow) -> bool;

/// One target of issue 6 and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// None: not measured in this run.
    pub pass: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub mode: String,
    pub started_at: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub plan: serde_json::Value,
    pub measurements: Measurements,
    pub targets: Vec<TargetCheck>,
    pub soak: Option<SoakVerdict>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub service_bin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakVerdict {
    pub windows: Vec<SoakWindow>,
    /// Mean p99 of the last third of the windows over the first third.
    pub p99_drift: f64,
    /// Service RSS at the end over its RSS after the first window.
    pub rss_growth: f64,
    pub worker_rss_growth: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakWindow {
    pub start_s: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub service_rss_mib: f64,
    pub worker_rss_mib: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0 && value.is_finite()).then(|| value / base)
}

fn fmt_ratio(value: Option<f64>) -> String {
    match value {
        Some(value) if value >= 100.0 => format!("{value:.0}×"),
        Some(value) if value >= 10.0 => format!("{value:.1}×"),
        Some(value) => format!("{value:.2}×"),
        None => "–".into(),
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

/// What a row is compared with: the baseline runs at its connection count
/// (else the nearest count that has any) just before and just after it in
/// time, averaged. The machine's speed drifts within a run, and a baseline
/// run next to a row saw the machine as the row did. A baseline row is its
/// own reference.
#[derive(Debug, Clone)]
struct Reference {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_cores: f64,
    peak_rss_bytes: f64,
    /// The baseline runs averaged (one or two).
    runs: Vec<f64>,
}

impl Reference {
    fn of(rows: &[&LoadRow]) -> Option<Reference> {
        let n = rows.len() as f64;
        let mean = |value: fn(&LoadRow) -> f64| rows.iter().map(|row| value(row)).sum::<f64>() / n;
        (!rows.is_empty()).then(|| Reference {
            rps: mean(|row| row.load.rps),
            p50_us: mean(|row| row.load.latency.p50_us as f64),
            p99_us: mean(|row| row.load.latency.p99_us as f64),
            cpu_cores: mean(|row| row.cpu_cores),
            peak_rss_bytes: mean(|row| row.peak_rss_bytes as f64),
            runs: rows.iter().map(|row| row.load.rps).collect(),
        })
    }
}

/// The baseline runs of a run, in the order they ran.
fn baseline_runs(measurements: &Measurements) -> Vec<&LoadRow> {
    let mut runs: Vec<&LoadRow> = measurements
        .rows
        .iter()
        .filter(|row| row.language == "baseline")
        .collect();
    runs.sort_by(|a, b| a.started_s.total_cmp(&b.started_s));
    runs
}

fn reference_for(baselines: &[&LoadRow], row: &LoadRow) -> Option<Reference> {
    if row.language == "baseline" {
        return Reference::of(&[row]);
    }
    let level = baselines
        .iter()
        .map(|base| base.connections)
        .min_by_key(|level| level.abs_diff(row.connections))?;
    let at_level = baselines.iter().filter(|base| base.connections == level);
    // Results written before rows had a start time have 0 everywhere (and
    // one baseline run per level): the last one "before" is then that run.
    let before = at_level
        .clone()
        .rev()
        .find(|base| base.started_s <= row.started_s);
    let after = at_level.clone().find(|base| base.started_s > row.started_s);
    let around: Vec<&LoadRow> = before.into_iter().chain(after).copied().collect();
    Reference::of(&around)
}

fn soak_verdict(measurements: &Measurements, plan: &Plan) -> Option<SoakVerdict> {
    let row = measurements
        .rows
        .iter()
        .find(|row| row.scenario == "soak")?;
    let window_s = plan.soak_window_ms as f64 / 1000.0;
    // The load generator measures from warmup_ms after it starts; the RSS
    // timeline is in seconds since the harness started: align on the last
    // sample, which is taken when the generator ends.
    let end_t = row
        .rss_timeline
        .last()
        .map(|sample| sample.0)
        .unwrap_or(0.0);
    let measured_start = end_t - plan.soak_ms as f64 / 1000.0;
    let windows: Vec<SoakWindow> = row
        .load
        .windows
        .iter()
        .map(|window| {
            let window_end = measured_start + window.start_s + window_s;
            let sample = row
                .rss_timeline
                .iter()
                .rev()
                .find(|sample| sample.0 <= window_end)
                .or(row.rss_timeline.first());
            SoakWindow {
                start_s: window.start_s,
                rps: window.rps,
                p50_ms: ms(window.latency.p50_us),
                p99_ms: ms(window.latency.p99_us),
                max_ms: ms(window.latency.max_us),
                errors: window.errors,
                service_rss_mib: sample.map(|s| s.1 as f64 / MIB).unwrap_or(0.0),
                worker_rss_mib: sample.map(|s| s.2 as f64 / MIB).unwrap_or(0.0),
            }
        })
        .collect();
    if windows.len() < 2 {
        return None;
    }
    let third = (windows.len() / 3).max(1);
    let mean = |slice: &[SoakWindow], f: fn(&SoakWindow) -> f64| {
        slice.iter().map(f).sum::<f64>() / slice.len() as f64
    };
    let first = &windows[..third];
    let last = &windows[windows.len() - third..];
    let p99_drift = mean(last, |w| w.p99_ms) / mean(first, |w| w.p99_ms).max(0.001);
    let rss_growth =
        windows[windows.len() - 1].service_rss_mib / windows[0].service_rss_mib.max(0.001);
    let worker_rss_growth =
        windows[windows.len() - 1].worker_rss_mib / windows[0].worker_rss_mib.max(0.001);
    let errors: u64 = windows.iter().map(|w| w.errors).sum();
    Some(SoakVerdict {
        pass: p99_drift <= 1.25 && rss_growth <= 1.10 && errors == 0,
        windows,
        p99_drift,
        rss_growth,
        worker_rss_growth,
    })
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[sorted.len() / 2])
}

/// "N req/s = X% of B": a throughput against the baseline runs next to it.
fn share_of_baseline(rps: f64, base: Option<&Reference>) -> String {
    let base_rps = base.map(|base| base.rps).unwrap_or(0.0);
    let runs = match base.map(|base| base.runs.as_slice()) {
        Some([before, after]) => format!(" (baseline before and after: {before:.0}, {after:.0})"),
        _ => String::new(),
    };
    format!(
        "{rps:.0} req/s = {:.1}% of {base_rps:.0}{runs}",
        ratio(rps, base_rps).unwrap_or(0.0) * 100.0
    )
}

fn targets(
    measurements: &Measurements,
    plan: &Plan,
    soak: Option<&SoakVerdict>,
) -> Vec<TargetCheck> {
    let level = if plan.levels.contains(&32) {
        32
    } else {
        plan.levels[0]
    };
    let bases = baseline_runs(measurements);
    let warm = |language: &str| {
        measurements.rows.iter().find(|row| {
            row.scenario == "warm execute" && row.language == language && row.connections == level
        })
    };
    // The platform's own path with no runtime: the ceiling of every
    // throughput target (see `Harness::warm_execute_cached`).
    let ceiling = measurements
        .rows
        .iter()
        .find(|row| row.scenario == crate::harness::CACHED_SCENARIO && row.connections == level);
    let mut checks = Vec::new();
    let at = if level == 32 {
        String::new()
    } else {
        format!(" (measured at c={level}, smoke)")
    };
    // (language, share of baseline, original claim)
    for (language, share, claim) in [
        ("nodejs", 0.35, Some(1000.0)),
        ("python", 0.35, Some(800.0)),
        ("rust", 0.45, Some(1200.0)),
        ("wasm", 0.45, None),
    ] {
        let Some(row) = warm(language) else {
            checks.push(TargetCheck {
                target: format!("{language}: warm execute"),
                measured: measurements
                    .runtimes
                    .unavailable
                    .get(language)
                    .map(|reason| format!("unavailable: {}", crate::harness::truncate(reason, 120)))
                    .unwrap_or_else(|| "not measured".into()),
                pass: None,
            });
            continue;
        };
        let base = reference_for(&bases, row);
        let share_measured = base.as_ref().and_then(|base| ratio(row.load.rps, base.rps));
        checks.push(TargetCheck {
            target: format!(
                "{language}: throughput >= {:.0}% of baseline{at}",
                share * 100.0
            ),
            measured: format!(
                "{}{}",
                share_of_baseline(row.load.rps, base.as_ref()),
                ceiling
                    .and_then(|ceiling| ratio(row.load.rps, ceiling.load.rps))
                    .map(|of_ceiling| format!(
                        " ({:.0}% of the result-cache ceiling)",
                        of_ceiling * 100.0
                    ))
                    .unwrap_or_default()
            ),
            pass: share_measured.map(|measured| measured >= share),
        });
        if let Some(claim) = claim {
            checks.push(TargetCheck {
                target: format!(
                    "{language}: >= 10x the original claim ({:.0} req/s){at}",
                    claim * 10.0
                ),
                measured: format!("{:.0} req/s", row.load.rps),
                pass: Some(row.load.rps >= claim * 10.0),
            });
        }
        checks.push(TargetCheck {
            target: format!("{language}: warm p99 <= 5 ms{at}"),
            measured: format!("{:.2} ms", ms(row.load.latency.p99_us)),
            pass: Some(row.load.latency.p99_us <= 5_000),
        });
        if language == "rust" || language == "wasm" {
            checks.push(TargetCheck {
                target: format!("{language}: warm p50 <= 1 ms{at}"),
                measured: format!("{:.2} ms", ms(row.load.latency.p50_us)),
                pass: Some(row.load.latency.p50_us <= 1_000),
            });
        }
        checks.push(TargetCheck {
            target: format!("{language}: no error responses under load{at}"),
            measured: format!("{} errors of {}", row.load.errors, row.load.requests),
            pass: Some(row.load.errors == 0),
        });
    }
    if let Some(ceiling) = ceiling {
        checks.push(TargetCheck {
            target: format!(
                "platform ceiling: a result-cache hit (auth, rate limit, session, request log; \
                 no runtime){at}"
            ),
            measured: share_of_baseline(ceiling.load.rps, reference_for(&bases, ceiling).as_ref()),
            pass: None,
        });
    }
    for row in measurements
        .rows
        .iter()
        .filter(|row| row.scenario == "initialize")
    {
        let limit_ms = if row.subject.contains("cached") {
            Some(20.0)
        } else if row.subject.contains("cold") {
            None
        } else {
            Some(5.0)
        };
        let measured = format!(
            "p50 {:.2} ms (n={})",
            ms(row.load.latency.p50_us),
            row.load.requests
        );
        match limit_ms {
            Some(limit) => checks.push(TargetCheck {
                target: format!("initialize {}: p50 <= {limit:.0} ms", row.subject),
                measured,
                pass: Some(ms(row.load.latency.p50_us) <= limit),
            }),
            None => checks.push(TargetCheck {
                target: format!("initialize {}: (no target)", row.subject),
                measured,
                pass: None,
            }),
        }
    }
    let warm_one = |language: &str| {
        measurements.rows.iter().find(|row| {
            row.scenario == "warm execute" && row.language == language && row.connections == 1
        })
    };
    for record in &measurements.first_execute {
        let first = median(&record.first_execute_ms);
        // The warm reference: the next execute on the same session from the
        // same client (same HTTP path); else the load generator's c=1 p50.
        let second = median(&record.second_execute_ms);
        let warm_p50 = warm_one(&record.language).map(|row| ms(row.load.latency.p50_us));
        let reference = second.or(warm_p50);
        let pass = match (first, reference) {
            (Some(first), Some(warm)) => Some(first <= 2.0 * warm),
            _ => None,
        };
        let show = |value: Option<f64>| {
            value
                .map(|v| format!("{v:.2} ms"))
                .unwrap_or_else(|| "–".into())
        };
        checks.push(TargetCheck {
            target: format!(
                "{}: first execute after initialize <= 2x a warm execute",
                record.language
            ),
            measured: format!(
                "first {} vs second {} (load generator c=1 p50 {})",
                show(first),
                show(second),
                show(warm_p50)
            ),
            pass,
        });
    }
    let peak = measurements
        .rows
        .iter()
        .filter(|row| row.language != "baseline")
        .max_by_key(|row| row.peak_rss_bytes);
    // A run of only some scenarios (`--only first`) may put the service
    // under no load at all: that is no measurement, not a pass at 0 MiB.
    checks.push(TargetCheck {
        target: "service RSS under load <= 256 MiB (excluding workers)".into(),
        measured: peak.map_or_else(
            || "not measured".into(),
            |row| {
                format!(
                    "peak {:.1} MiB ({}, c={})",
                    row.peak_rss_bytes as f64 / MIB,
                    row.scenario,
                    row.connections
                )
            },
        ),
        pass: peak.map(|row| row.peak_rss_bytes as f64 <= 256.0 * MIB),
    });
    if let Some(soak) = soak {
        checks.push(TargetCheck {
            target:
                "soak: no p99 drift (last third <= 1.25x first third), RSS growth <= 10%, no errors"
                    .into(),
            measured: format!(
                "p99 drift {:.2}x, service RSS {:.2}x, workers RSS {:.2}x",
                soak.p99_drift, soak.rss_growth, soak.worker_rss_growth
            ),
            pass: Some(soak.pass),
        });
    }
    checks
}

impl Report {
    pub fn build(
        mode: &str,
        started_at: String,
        duration_s: f64,
        machine: Machine,
        plan: &Plan,
        measurements: Measurements,
    ) -> Report {
        let soak = soak_verdict(&measurements, plan);
        let targets = targets(&measurements, plan, soak.as_ref());
        Report {
            mode: mode.into(),
            started_at,
            duration_s,
            machine,
            plan: serde_json::to_value(plan).unwrap_or_default(),
            measurements,
            targets,
            soak,
        }
    }

    fn load_table(&self, out: &mut String, rows: &[&LoadRow]) {
        let bases = baseline_runs(&self.measurements);
        out.push_str("| scenario | subject | conns | req/s | ×base | p50 ms | ×base | p90 ms | p99 ms | ×base | max ms | errors | svc CPU (cores) | ×base | workers CPU | postgres CPU | loadgen CPU | machine busy | svc peak RSS MiB | ×base | worker procs | workers RSS MiB |\n");
        out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for row in rows {
            let base = reference_for(&bases, row);
            let base = base.as_ref();
            let latency = &row.load.latency;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {:.1} |",
                row.scenario,
                row.subject,
                row.connections,
                row.load.rps,
                fmt_ratio(base.and_then(|b| ratio(row.load.rps, b.rps))),
                ms(latency.p50_us),
                fmt_ratio(base.and_then(|b| ratio(latency.p50_us as f64, b.p50_us))),
                ms(latency.p90_us),
                ms(latency.p99_us),
                fmt_ratio(base.and_then(|b| ratio(latency.p99_us as f64, b.p99_us))),
                ms(latency.max_us),
                row.load.errors,
                row.cpu_cores,
                fmt_ratio(base.and_then(|b| ratio(row.cpu_cores, b.cpu_cores))),
                row.worker_cpu_cores,
                row.postgres_cpu_cores,
                row.loadgen_cpu_cores,
                row.machine_cpu_cores,
                row.peak_rss_bytes as f64 / MIB,
                fmt_ratio(base.and_then(|b| ratio(row.peak_rss_bytes as f64, b.peak_rss_bytes))),
                row.peak_workers,
                row.peak_worker_rss_bytes as f64 / MIB,
            );
        }
    }

    /// The plan's load generator policy; results from before the plan
    /// named it were measured under the normal one.
    fn loadgen_scheduling(&self) -> Scheduling {
        self.plan
            .get("loadgen_scheduling")
            .and_then(|value| Scheduling::deserialize(value).ok())
            .unwrap_or(Scheduling::Normal)
    }

    /// How far the baseline's runs at the targets' connection count were
    /// apart: how much the machine drifted during the run.
    fn baseline_spread(&self, out: &mut String) {
        let runs = baseline_runs(&self.measurements);
        let Some(level) = runs
            .iter()
            .map(|run| run.connections)
            .find(|&level| level == 32)
            .or_else(|| runs.iter().map(|run| run.connections).min())
        else {
            return;
        };
        let rps: Vec<f64> = runs
            .iter()
            .filter(|run| run.connections == level)
            .map(|run| run.load.rps)
            .collect();
        let (low, high) = rps
            .iter()
            .fold((f64::INFINITY, 0.0_f64), |(low, high), &value| {
                (low.min(value), high.max(value))
            });
        if rps.len() > 1 {
            let _ = writeln!(
                out,
                "\nThe baseline ran {} times at c={level}, between the other runs: {low:.0} to {high:.0} \
                 req/s ({:.0}% apart). Each share is against the mean of its runs just before and after the row.",
                rps.len(),
                ratio(high - low, low).unwrap_or(0.0) * 100.0
            );
        }
    }

    pub fn markdown(&self) -> String {
        let m = &self.measurements;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Lambda Microservice benchmark ({} mode)\n",
            self.mode
        );
        let _ = writeln!(
            out,
            "Run {} on {} CPUs ({}), {:.0} s. Service: release binary against PostgreSQL, request logging ON, JWT auth ON, \
             rate limits raised, default worker pools. Every execute sends `X-Cache-Control: no-cache` (the result cache \
             is bypassed), except in the `{}` row, where the cache answers: the platform's \
             path without a runtime, the ceiling of every language's row. Load: `lambda-bench loadgen` under {}, closed loop over HTTP/1.1 keep-alive on 127.0.0.1, same machine. \
             `×base` is the ratio to the in-process axum baseline at the same connection count in this run, \
             averaged over its runs just before and just after the row (throughput: higher is better; latency, CPU, \
             RSS: lower is better).\n",
            self.started_at,
            self.machine.cpus,
            self.machine.kernel,
            self.duration_s,
            crate::harness::CACHED_SCENARIO,
            self.loadgen_scheduling().describe()
        );
        out.push_str("## Runtimes\n\n| language | /health | this run |\n|---|---|---|\n");
        for language in crate::harness::LANGUAGES {
            let health = m
                .runtimes
                .health
                .get(language)
                .map(String::as_str)
                .unwrap_or("–");
            let status = match (
                m.runtimes.sessions.get(language),
                m.runtimes.unavailable.get(language),
            ) {
                (Some(_), _) => "measured".to_string(),
                (None, Some(reason)) => format!(
                    "unavailable: {}",
                    crate::harness::truncate(&reason.replace('\n', " "), 160)
                ),
                (None, None) => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {language} | {} | {} |",
                crate::harness::truncate(health, 80),
                status.replace('|', "/")
            );
        }
        out.push_str("\n## Targets (issue 6; targets, not gates)\n\n| target | measured | result |\n|---|---|---|\n");
        for check in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                check.target,
                check.measured,
                verdict(check.pass)
            );
        }
        self.baseline_spread(&mut out);
        let sections: [(&str, RowFilter); 4] = [
            ("Warm execute", |row| {
                row.scenario.starts_with("warm execute")
            }),
            ("Initialize", |row| row.scenario == "initialize"),
            ("10,000 sessions and keep-alive connections", |row| {
                row.scenario.contains(" sessions: ") || row.scenario.starts_with("keep-alive")
            }),
            ("Soak (whole run)", |row| row.scenario == "soak"),
        ];
        // The many-sessions runs are kept with their scenario, not in `rows`.
        let many_rows: Vec<&LoadRow> = m
            .many_sessions
            .iter()
            .flat_map(|many| many.create.iter().chain(many.execute.iter()))
            .collect();
        for (title, filter) in sections {
            let rows: Vec<&LoadRow> = m
                .rows
                .iter()
                .chain(many_rows.iter().copied())
                .filter(|row| filter(row))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n## {title}\n");
            self.load_table(&mut out, &rows);
        }
        if !m.first_execute.is_empty() {
            out.push_str("\n## Initialize → first execute (new script each time, sequential)\n\n");
            out.push_str("| language | samples | initialize p50 ms | first execute p50 ms | second execute p50 ms | warm p50 ms (c=1, load generator) | first / warm | errors |\n|---|--:|--:|--:|--:|--:|--:|--:|\n");
            for record in &m.first_execute {
                let warm = m
                    .rows
                    .iter()
                    .find(|row| {
                        row.scenario == "warm execute"
                            && row.language == record.language
                            && row.connections == 1
                    })
                    .map(|row| ms(row.load.latency.p50_us));
                let first = median(&record.first_execute_ms);
                let second = median(&record.second_execute_ms);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    record.language,
                    record.samples,
                    median(&record.initialize_ms)
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    first
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    second
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    warm.map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    fmt_ratio(first.zip(second.or(warm)).and_then(|(f, w)| ratio(f, w))),
                    record.errors.len()
                );
            }
        }
        if let Some(many) = &m.many_sessions {
            let _ = writeln!(
                out,
                "\n**Sessions alive at once:** {} of {} created; service RSS {:.1} MiB before, {:.1} MiB after \
                 ({:.2} KiB per session; freed heap from earlier scenarios is reused, so this is a lower bound), \
                 peak {:.1} MiB while creating.",
                many.created,
                many.requested,
                many.rss_before_bytes as f64 / MIB,
                many.rss_after_bytes as f64 / MIB,
                if many.created > 0 {
                    (many.rss_after_bytes as f64 - many.rss_before_bytes as f64) / 1024.0 / many.created as f64
                } else {
                    0.0
                },
                many.create.as_ref().map(|row| row.peak_rss_bytes as f64 / MIB).unwrap_or(0.0)
            );
        }
        if let Some(row) = m
            .rows
            .iter()
            .find(|row| row.scenario.starts_with("keep-alive"))
        {
            if let Some(idle) = &row.load.idle {
                let _ = writeln!(
                    out,
                    "\n**Keep-alive:** {} idle connections requested, {} opened, {} still answered after the load (fd limit {}).",
                    idle.requested, idle.opened, idle.alive_at_end, m.fd_limit
                );
            }
        }
        if let Some(soak) = &self.soak {
            out.push_str("\n## Soak windows\n\n| t (s) | req/s | p50 ms | p99 ms | max ms | errors | service RSS MiB | workers RSS MiB |\n|--:|--:|--:|--:|--:|--:|--:|--:|\n");
            for window in &soak.windows {
                let _ = writeln!(
                    out,
                    "| {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} |",
                    window.start_s,
                    window.rps,
                    window.p50_ms,
                    window.p99_ms,
                    window.max_ms,
                    window.errors,
                    window.service_rss_mib,
                    window.worker_rss_mib
                );
            }
            let _ = writeln!(
                out,
                "\np99 drift (last third / first third): {:.2}×; service RSS growth: {:.2}×; workers RSS growth: {:.2}× → {}",
                soak.p99_drift,
                soak.rss_growth,
                soak.worker_rss_growth,
                if soak.pass { "PASS" } else { "FAIL" }
            );
        }
        if !m.notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            for note in &m.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        if !m.failures.is_empty() {
            out.push_str("\n## Failures\n\n");
            for failure in &m.failures {
                let _ = writeln!(out, "- {}", failure.replace('\n', " "));
            }
        }
        out
    }

    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let markdown = dir.join(format!("{stem}.md"));
        std::fs::write(&markdown, self.markdown())
            .with_context(|| format!("cannot write {}", markdown.display()))?;
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
        let png = dir.join(format!("{stem}.png"));
        crate::chart::draw(self, &png).with_context(|| format!("cannot draw {}", png.display()))?;
        Ok(vec![markdown, json, png])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(language: &str, connections: usize, started_s: f64, rps: f64) -> LoadRow {
        let mut row = LoadRow {
            language: language.into(),
            connections,
            started_s,
            cpu_cores: rps / 100_000.0,
            ..LoadRow::default()
        };
        row.load.rps = rps;
        row.load.latency.p99_us = (rps / 100.0) as u64;
        row
    }

    fn measured(rows: Vec<LoadRow>) -> Measurements {
        Measurements {
            rows,
            ..Measurements::default()
        }
    }

    #[test]
    fn a_row_is_compared_with_the_baseline_runs_just_before_and_after_it() {
        let measurements = measured(vec![
            run("baseline", 32, 0.0, 100_000.0),
            run("rust", 32, 10.0, 25_000.0),
            run("baseline", 32, 20.0, 80_000.0),
            run("wasm", 32, 30.0, 30_000.0),
            run("baseline", 32, 40.0, 120_000.0),
            run("baseline", 1, 50.0, 9_000.0),
        ]);
        let rows = &measurements.rows;
        let bases = baseline_runs(&measurements);
        let rust = reference_for(&bases, &rows[1]).expect("a reference");
        assert_eq!(rust.runs, vec![100_000.0, 80_000.0]);
        assert_eq!(rust.rps, 90_000.0);
        assert_eq!(rust.p99_us, 900.0);
        let wasm = reference_for(&bases, &rows[3]).expect("a reference");
        assert_eq!(wasm.runs, vec![80_000.0, 120_000.0]);
        assert_eq!(wasm.cpu_cores, 1.0);
    }

    #[test]
    fn the_ends_of_a_run_and_other_levels_use_what_there_is() {
        let measurements = measured(vec![
            run("baseline", 1, 0.0, 9_000.0),
            run("baseline", 32, 10.0, 100_000.0),
            run("nodejs", 32, 20.0, 20_000.0),
            run("nodejs", 256, 30.0, 20_000.0),
            run("nodejs", 1, 40.0, 3_000.0),
        ]);
        let rows = &measurements.rows;
        let bases = baseline_runs(&measurements);
        // After the last baseline run at its level: that run alone.
        let after_last = reference_for(&bases, &rows[2]).expect("a reference");
        assert_eq!(after_last.runs, vec![100_000.0]);
        // No baseline at 256: the nearest level's (32).
        let other_level = reference_for(&bases, &rows[3]).expect("a reference");
        assert_eq!(other_level.runs, vec![100_000.0]);
        assert_eq!(
            reference_for(&bases, &rows[4]).expect("a reference").rps,
            9_000.0
        );
        // A baseline row is its own reference, whatever ran around it.
        assert_eq!(
            reference_for(&bases, &rows[1]).expect("a reference").runs,
            vec![100_000.0]
        );
        assert!(reference_for(&[], &rows[2]).is_none());
    }

    #[test]
    fn results_without_start_times_keep_their_one_baseline_per_level() {
        let measurements = measured(vec![
            run("baseline", 32, 0.0, 100_000.0),
            run("python", 32, 0.0, 20_000.0),
        ]);
        let rows = &measurements.rows;
        let bases = baseline_runs(&measurements);
        let python = reference_for(&bases, &rows[1]).expect("a reference");
        assert_eq!(python.runs, vec![100_000.0]);
        assert!(
            share_of_baseline(20_000.0, Some(&python)).starts_with("20000 req/s = 20.0% of 100000")
        );
    }

    #[test]
    fn the_report_names_the_load_generators_scheduling_policy() {
        let machine = Machine {
            cpus: 2,
            kernel: "Linux".into(),
            service_bin: "lambda-microservice".into(),
        };
        let mut report = Report::build(
            "full",
            "2026-12-06T00:00:00Z".into(),
            1.0,
            machine,
            &Plan::full(),
            Measurements::default(),
        );
        assert_eq!(report.loadgen_scheduling(), Scheduling::Batch);
        assert!(report.markdown().contains("under SCHED_BATCH"));
        // Results written before the plan named a policy were measured
        // under the normal one, and render so.
        report
            .plan
            .as_object_mut()
            .expect("a plan object")
            .remove("loadgen_scheduling");
        assert_eq!(report.loadgen_scheduling(), Scheduling::Normal);
        assert!(report
            .markdown()
            .contains("under the normal scheduling policy"));
    }

    #[test]
    fn service_rss_is_judged_only_when_the_service_ran_under_load() {
        let rss_check = |rows: Vec<LoadRow>| {
            targets(&measured(rows), &Plan::full(), None)
                .into_iter()
                .find(|check| check.target.starts_with("service RSS"))
                .expect("an RSS check")
        };
        let unmeasured = rss_check(vec![run("baseline", 32, 0.0, 100_000.0)]);
        assert_eq!(unmeasured.pass, None);
        assert_eq!(unmeasured.measured, "not measured");

        let mut heavy = run("wasm", 32, 10.0, 30_000.0);
        heavy.scenario = "warm execute".into();
        heavy.peak_rss_bytes = 300 * 1024 * 1024;
        let over = rss_check(vec![run("baseline", 32, 0.0, 100_000.0), heavy]);
        assert_eq!(over.pass, Some(false));
        assert_eq!(over.measured, "peak 300.0 MiB (warm execute, c=32)");
    }
}
