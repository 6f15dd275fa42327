//! A fresh, empty PostgreSQL database per test.
//!
//! The server is `DATABASE_URL` when set; otherwise one throwaway server per
//! test process, started from the machine's PostgreSQL binaries in a temp
//! directory and stopped (and deleted) by a watchdog once the process exits,
//! since Rust runs no destructors for statics.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use sqlx::{Connection, PgConnection};

/// The database every test database is created from and dropped through.
const ADMIN_DATABASE: &str = "postgres";

/// Set to keep test databases after the test, for inspection.
const KEEP_ENV: &str = "LM_KEEP_TEST_DATABASES";

/// A uniquely named database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Create `lm_test_<uuid>` on the test server (see the module docs).
    pub async fn create() -> Result<TestDatabase> {
        let admin_url = admin_url().await?;
        let name = format!("lm_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to the test server at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut connection)
            .await
            .with_context(|| format!("creating test database {name}"))?;
        // Best effort: the database exists either way.
        let _ = connection.close().await;
        let url = with_database(&admin_url, &name)?;
        Ok(TestDatabase {
            name,
            url,
            admin_url,
        })
    }

    /// `postgres://...` of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    /// Drop the database so a long-lived `DATABASE_URL` server does not fill
    /// up. Runs on its own thread and runtime because the test's runtime may
    /// be shutting down; failures are ignored (the throwaway server is
    /// deleted anyway).
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some() {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut connection) = PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut connection)
                            .await;
                    let _ = connection.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// The URL of a superuser connection to the test server's `postgres`
/// database: `DATABASE_URL` if set, else the throwaway server (started on
/// first use).
pub async fn admin_url() -> Result<String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            return Ok(url);
        }
    }
    static SERVER: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let server = tokio::task::spawn_blocking(|| {
        SERVER
            .get_or_init(|| start_throwaway_server().map_err(|error| format!("{error:#}")))
            .clone()
    })
    .await
    .context("the PostgreSQL start-up thread panicked")?;
    server.map_err(|message| anyhow!(message))
}

/// `url` with its database (path) replaced by `database`, keeping user,
/// password, host, port and query parameters.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base
        .find("://")
        .map(|index| index + 3)
        .ok_or_else(|| anyhow!("not a postgres:// URL: {url}"))?;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);
    let mut result = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    Ok(result)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// initdb and postgres refuse to run as root; CI runs as root, so there the
/// server runs as the `postgres` system user.
fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The directory holding `initdb` and `pg_ctl`: PATH first, then the Debian
/// layout `/usr/lib/postgresql/<version>/bin`, newest version first.
fn find_server_binaries() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_binaries(&dir) {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_binaries(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn start_throwaway_server() -> Result<String> {
    let Some(bin) = find_server_binaries() else {
        bail!(
            "no PostgreSQL for tests: set DATABASE_URL to a server this user may create \
             databases on, or install the PostgreSQL server binaries (initdb, pg_ctl; \
             e.g. `apt-get install postgresql`)"
        );
    };
    let base = std::env::temp_dir().join(format!(
        "lm-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    if is_root() {
        let status = Command::new("chown")
            .arg("postgres:")
            .arg(&base)
            .status()
            .context("running chown")?;
        if !status.success() {
            bail!(
                "chown postgres {} failed: is there a postgres user?",
                base.display()
            );
        }
    }
    let data = base.join("data");
    let log = base.join("postgres.log");
    let pg_ctl = bin.join("pg_ctl");

    // The watchdog starts first so that even a failed start-up is cleaned up.
    spawn_watchdog(&pg_ctl, &data, &base)?;

    run(
        server_command(&bin.join("initdb"))
            .current_dir(&base)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
        "initdb",
    )?;
    let port = free_port()?;
    let server_options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        base.display()
    );
    let started = run(
        server_command(&pg_ctl)
            .current_dir(&base)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(&server_options)
            .arg("start"),
        "pg_ctl start",
    );
    if let Err(error) = started {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("{error:#}\nserver log:\n{log_text}");
    }
    Ok(format!(
        "postgres://postgres@127.0.0.1:{port}/{ADMIN_DATABASE}"
    ))
}

/// A detached `sh` that waits for this process to exit, then stops the
/// server and deletes its directory. Its own session, so a Ctrl-C to the
/// test's process group does not kill it before it cleans up.
fn spawn_watchdog(pg_ctl: &Path, data: &Path, base: &Path) -> Result<()> {
    const SCRIPT: &str = r#"
        parent="$1"; pg_ctl="$2"; data="$3"; base="$4"; as_postgres="$5"
        while kill -0 "$parent" 2>/dev/null; do sleep 1; done
        if [ -f "$data/postmaster.pid" ]; then
            if [ "$as_postgres" = 1 ]; then
                runuser -u postgres -- "$pg_ctl" -D "$data" stop -m immediate
            else
                "$pg_ctl" -D "$data" stop -m immediate
            fi
        fi
        rm -rf "$base"
    "#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg("lm-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(pg_ctl)
        .arg(data)
        .arg(base)
        .arg(if is_root() { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command
        .spawn()
        .context("starting the PostgreSQL watchdog")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_urls() -> Result<()> {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x")?,
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x")?, "postgres://h/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x")?,
            "postgres://h/x?sslmode=disable"
        );
        Ok(())
    }
}
