//! A real `lambda-microservice` process on a free loopback port, for
//! black-box tests over real HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The repository's Language-Title aliases, embedded and written next to
/// each test service: a path baked in at compile time would point into
/// whichever checkout built this crate, and a build cache shared by several
/// checkouts (CI's) serves that build to the others.
const RUNTIME_MAPPINGS: &str = include_str!("../../../config/runtime_mappings.json");

/// How to start the service. `env` is applied after the defaults, so a test
/// can override any of them.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// PostgreSQL URL; `None` runs on the embedded SQLite store.
    pub database_url: Option<String>,
    /// Reuse a data directory (SQLite file, artifacts) across restarts.
    pub data_dir: Option<PathBuf>,
    /// Reuse a port (for restart tests); `None` picks a free one.
    pub port: Option<u16>,
    pub env: Vec<(String, String)>,
}

impl ServiceOptions {
    pub fn postgres(url: &str) -> Self {
        ServiceOptions {
            database_url: Some(url.to_string()),
            ..Default::default()
        }
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }
}

pub struct TestService {
    pub base_url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    _temp_dir: Option<tempfile::TempDir>,
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl TestService {
    /// Starts `binary` and waits until `/health` answers.
    pub async fn start(binary: &Path, options: ServiceOptions) -> anyhow::Result<TestService> {
        let (data_dir, temp_dir) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                // Not under /tmp: the sandbox mounts a private /tmp over it.
                let base = std::path::Path::new("/var/tmp/lambda-tests");
                std::fs::create_dir_all(base)?;
                let temp = tempfile::tempdir_in(base)?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let log_path = data_dir.join(format!(
            "service-{port}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path)?;
        let mappings = data_dir.join("runtime_mappings.json");
        std::fs::write(&mappings, RUNTIME_MAPPINGS)?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("DATA_DIR", &data_dir)
            // The service's own default filter, not the caller's.
            .env_remove("RUST_LOG")
            // Tests make many calls from one address; the limits themselves
            // are tested with their own settings.
            .env("RATE_LIMIT_EXECUTE_ANONYMOUS_PER_MINUTE", "1000000")
            .env("RATE_LIMIT_EXECUTE_PER_MINUTE", "1000000")
            .env("RATE_LIMIT_FUNCTIONS_PER_MINUTE", "1000000")
            .env("RATE_LIMIT_OTHER_PER_MINUTE", "1000000")
            .env("RUNTIME_MAPPINGS_FILE", &mappings)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(url) = &options.database_url {
            command.env("DATABASE_URL", url);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut service = TestService {
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir,
            child: Some(child),
            log_path,
            _temp_dir: temp_dir,
        };
        service.wait_ready(Duration::from_secs(60)).await?;
        Ok(service)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("service exited during start-up ({status}):\n{}", self.log());
                }
            }
            if let Ok(response) = client.get(self.url("/health")).send().await {
                let code = response.status().as_u16();
                if code == 200 || code == 503 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("service not ready within {within:?}:\n{}", self.log())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// What the service wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then wait for a graceful exit (SIGKILL after `within`).
    pub async fn stop_within(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("service already stopped");
        };
        terminate(&child);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait()?;
                bail!(
                    "service did not stop within {within:?} ({status}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.stop_within(Duration::from_secs(60)).await
    }
}

impl Drop for TestService {
    /// SIGTERM first, so the service stops its workers itself as in a
    /// real stop; SIGKILL only if it does not exit within 5 s.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM to `child`: the service's graceful stop.
fn terminate(child: &Child) {
    // SAFETY: plain kill(2) on the pid of our own child, which has not been
    // reaped yet (the caller still owns its `Child`).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}
