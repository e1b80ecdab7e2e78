//! Child server processes: free loopback ports, a private data directory, a log file, readiness
//! polling with a deadline, and cleanup that cannot be forgotten.
//!
//! Cleanup happens twice over:
//! - `Drop` kills the server and waits for it, so a panicking test leaks nothing;
//! - a tiny `sh` watchdog per server kills it (and removes its directory) when the test process
//!   itself dies without unwinding (SIGKILL, `std::process::exit`, or a stack kept in a
//!   `static`, which is never dropped).

use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tempfile::TempDir;

/// How long a server may take to answer its first request. Generous: the machine is shared and
/// a cold Python import (moto) or a first SeaweedFS volume allocation can be slow.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks the kernel for `n` distinct free ports on 127.0.0.1. All listeners stay open until every
/// port is chosen, so the ports are distinct; they are released before the server binds them
/// (a small race with other processes remains; callers retry on "address already in use").
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        listeners.push(l);
    }
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// A free port `p` such that `p + offset` is free too (SeaweedFS derives some gRPC ports as
/// HTTP port + 10000 whatever the flags say).
pub fn free_port_pair(offset: u16) -> Result<u16> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let p = l.local_addr()?.port();
        let Some(q) = p.checked_add(offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", q)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair (p, p+{offset}) found on 127.0.0.1")
}

/// Makes a private temporary directory named after the server.
pub fn server_dir(name: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("ecr-vault-{name}-"))
        .tempdir()
        .context("creating a temporary directory")
}

/// A running server: killed and waited for on drop.
pub struct ServerProcess {
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log_path: PathBuf,
    // Dropped after `Drop::drop` has killed the process, so the data goes last.
    dir: TempDir,
}

const SCRUBBED_ENV_PREFIXES: &[&str] = &["REGISTRY_", "AWS_", "S3_", "MOTO_", "WEED_"];

const WATCHDOG: &str = r#"p=$1; c=$2; d=$3
while kill -0 "$p" 2>/dev/null; do sleep 1; done
kill -9 "$c" 2>/dev/null
rm -rf "$d""#;

impl ServerProcess {
    /// Starts `program args` in `dir`, with stdout and stderr written to `dir/server.log`, and
    /// `env` added to an environment scrubbed of `REGISTRY_*`, `AWS_*`, `S3_*`, `MOTO_*` and
    /// `WEED_*`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        env: &[(&str, OsString)],
        dir: TempDir,
    ) -> Result<Self> {
        let log_path = dir.path().join("server.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log2 = log.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Settings from the caller's environment must not change the servers: distribution
        // reads REGISTRY_*, SeaweedFS turns AWS_ACCESS_KEY_ID into an identity, moto reads
        // MOTO_*. Only `env` goes in.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if SCRUBBED_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) {
                cmd.env_remove(&*k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("ecr-vault-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Ok(ServerProcess {
            name: name.to_string(),
            child,
            watchdog,
            log_path,
            dir,
        })
    }

    /// The server's private directory (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file the server writes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `max_bytes` of the server log, for error messages.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        let Ok(mut f) = File::open(&self.log_path) else {
            return String::from("<no log>");
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Errors (with the log tail) if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited early ({status}); log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(4000)
            )),
        }
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes. Backoff starts
    /// at 10 ms and doubles up to 250 ms. Errors carry the last probe error and the log tail.
    pub async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let start = Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            self.check_running()?;
            let err = match probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if start.elapsed() > timeout {
                self.check_running()?;
                bail!(
                    "{} not ready after {:?}: last probe error: {err:#}; log {}:\n{}",
                    self.name,
                    timeout,
                    self.log_path.display(),
                    self.log_tail(4000)
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// True if a start failed because another process grabbed one of our ports in the meantime
/// (`weed mini` says "Port allocation failed" for any port it cannot use).
pub fn is_port_conflict(err: &anyhow::Error) -> bool {
    let msg = format!("{err:#}").to_lowercase();
    msg.contains("address already in use") || msg.contains("port allocation failed")
}

/// Runs `start` up to three times while it fails with a port conflict.
pub async fn retry_on_port_conflict<T, F, Fut>(mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start().await {
            Err(e) if attempt < 3 && is_port_conflict(&e) => continue,
            other => return other,
        }
    }
}

/// A GET that succeeds on any HTTP status in `ok`, for readiness probes.
pub async fn http_status_probe(client: &reqwest::Client, url: &str, ok: &[u16]) -> Result<()> {
    let resp = client.get(url).send().await?;
    let status = resp.status().as_u16();
    if ok.is_empty() || ok.contains(&status) {
        Ok(())
    } else {
        bail!("GET {url} answered {status}")
    }
}

/// A short-timeout HTTP client for probes.
pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap_or_default()
}
