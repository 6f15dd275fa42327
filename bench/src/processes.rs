//! The processes the harness starts (service, baseline) and the database it
//! creates; each is cleaned up explicitly and, as a last resort, on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;

use crate::procfs;

/// How long a child gets to exit after SIGTERM before SIGKILL.
const GRACEFUL_EXIT: Duration = Duration::from_secs(20);

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Guarded {
    pub name: &'static str,
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl Guarded {
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        log_path: &Path,
    ) -> anyhow::Result<Guarded> {
        let log = std::fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot duplicate the log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        Ok(Guarded {
            name,
            child: Some(child),
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether it has exited already (and how).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(error)) => Some(error.to_string()),
            None => Some("stopped".into()),
        }
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, wait up to [`GRACEFUL_EXIT`], then SIGKILL. Returns whether
    /// it exited on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: signalling our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while started.elapsed() < GRACEFUL_EXIT {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "lambda-bench: the {} ignored SIGTERM for {} s; killing it",
            self.name,
            GRACEFUL_EXIT.as_secs()
        );
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process identity that survives pid reuse: (pid, start time in ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    start_ticks: u64,
}

impl ProcessIdentity {
    pub fn of(pid: u32) -> Option<ProcessIdentity> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
        Some(ProcessIdentity {
            pid,
            start_ticks: fields.get(19)?.parse().ok()?,
        })
    }

    /// Still running (not a zombie) as the same process.
    pub fn alive(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let state_zombie = text
            .rfind(')')
            .and_then(|end| text.get(end + 2..end + 3))
            .is_some_and(|state| state == "Z" || state == "X");
        !state_zombie && ProcessIdentity::of(self.pid) == Some(*self)
    }

    pub fn kill(&self) {
        if self.alive() {
            if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                // SAFETY: pid and start time were checked just above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Everything below `root` now, to check after `root` is gone.
pub fn tree_identities(root: u32) -> Vec<ProcessIdentity> {
    procfs::descendants(root)
        .into_iter()
        .filter_map(ProcessIdentity::of)
        .collect()
}

/// A throw-away PostgreSQL database: created at start, dropped at the end.
pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
    dropped: bool,
}

fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    // postgres://user@host:port/db?opts -> replace the path.
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let scheme_end = before_query
        .find("://")
        .context("the admin URL has no scheme")?
        + 3;
    let path_start = before_query[scheme_end..]
        .find('/')
        .map(|index| index + scheme_end)
        .unwrap_or(before_query.len());
    let mut out = format!("{}/{database}", &before_query[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

impl Database {
    pub async fn create(admin_url: &str) -> anyhow::Result<Database> {
        let host_ok = [
            "@127.0.0.1",
            "@localhost",
            "//127.0.0.1",
            "//localhost",
            "@[::1]",
        ]
        .iter()
        .any(|marker| admin_url.contains(marker));
        if !host_ok {
            bail!("the benchmark database must be on this machine (127.0.0.1 or localhost): {admin_url}");
        }
        let name = format!("lm_bench_{}", uuid::Uuid::new_v4().simple());
        let mut connection = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {admin_url} (set --admin-url or BENCH_DATABASE_ADMIN_URL)"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let _ = connection.close().await;
        Ok(Database {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name)?,
            name,
            dropped: false,
        })
    }

    pub async fn drop_database(&mut self) -> anyhow::Result<()> {
        if self.dropped {
            return Ok(());
        }
        let mut connection = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .context("cannot connect to PostgreSQL to drop the benchmark database")?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut connection)
        .await
        .with_context(|| format!("cannot drop database {}", self.name))?;
        let _ = connection.close().await;
        self.dropped = true;
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if !self.dropped {
            eprintln!(
                "lambda-bench: database {} was not dropped; drop it with: psql -c 'DROP DATABASE {} WITH (FORCE)'",
                self.name, self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@localhost/db?sslmode=disable", "x").unwrap(),
            "postgres://u@localhost/x?sslmode=disable"
        );
    }
}
