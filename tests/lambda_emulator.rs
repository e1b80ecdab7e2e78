//! A Lambda function's real binary behind cargo-lambda's runtime emulator, for the handler
//! tests (`functions_restore.rs`; `functions_backup.rs` and `fanout.rs` through
//! `lambda_harness.rs`). Included as a module by each test binary that needs it.
//!
//! - The function binaries are built together once per test binary (`cargo build --bins -p
//!   <each function package>`, same `target/`; a no-op when fresh), with the environment a
//!   shell would have.
//! - `cargo lambda watch --only-lambda-apis` serves the Runtime and Invoke APIs on a free
//!   loopback port, and the binary runs against it the way Lambda runs a `bootstrap`: a clean
//!   environment with only the function's configuration. (Without `--only-lambda-apis` the
//!   emulator would `cargo run` on first invoke, waiting for the shared `target/` lock.)
//! - Both run in process groups of their own, ended on drop and by a watchdog if the test
//!   process dies. Readiness is polled, never slept for.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ecr_vault_testkit::paths::{find_tool, repo_root};
use ecr_vault_testkit::process::free_port;
use serde_json::Value;

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Prefixes of the variables cargo sets for the crate it runs (not cargo configuration).
const CARGO_RUNTIME_VARS: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "CARGO_CFG_",
    "CARGO_FEATURE_",
];

/// Every function package: they are built together, so cargo unifies their dependencies'
/// features once instead of rebuilding the AWS SDK for each function with its own feature set.
const FUNCTION_PACKAGES: [&str; 3] = [
    "ecr-vault-backup-fn",
    "ecr-vault-restore-fn",
    "ecr-vault-gc-fn",
];

/// Builds the function binaries once per test binary and returns the path of `bin`.
pub async fn function_binary(package: &str, bin: &str) -> Result<PathBuf> {
    static BUILT: tokio::sync::Mutex<BTreeMap<String, PathBuf>> =
        tokio::sync::Mutex::const_new(BTreeMap::new());
    let mut built = BUILT.lock().await;
    if let Some(path) = built.get(bin) {
        return Ok(path.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    // Build scripts (ring, aws-lc-sys) track some of the variables `cargo test` sets; a nested
    // build that inherits them rebuilds those crates, and every later plain build back.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if CARGO_RUNTIME_VARS.iter().any(|p| k.starts_with(p)) || k == "OUT_DIR" {
            cmd.env_remove(&*k);
        }
    }
    cmd.args(["build", "--message-format=json", "--bins"]);
    for p in FUNCTION_PACKAGES
        .iter()
        .copied()
        .chain(std::iter::once(package))
    {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .current_dir(repo_root()?)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running cargo build")?;
    ensure!(
        out.status.success(),
        "cargo build of the functions failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for m in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
    {
        if let (Some(name), Some(exe)) = (m["target"]["name"].as_str(), m["executable"].as_str()) {
            built.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    built
        .get(bin)
        .cloned()
        .with_context(|| format!("cargo build reported no executable {bin} in {package}"))
}

/// A child in a process group of its own, ended with its group on drop.
pub struct Group(pub Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        Ok(Group(cmd.process_group(0).spawn()?))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Ends the groups `$2…` once process `$1` (the test binary) is gone.
const WATCHDOG: &str = r#"p=$1; shift
while kill -0 "$p" 2>/dev/null; do sleep 1; done
for g in "$@"; do kill -TERM -- "-$g" 2>/dev/null; done; sleep 2
for g in "$@"; do kill -KILL -- "-$g" 2>/dev/null; done"#;

/// What an invocation answered: the function's response, or its error.
#[derive(Debug)]
pub enum Outcome {
    Ok(Value),
    Err { error_type: String, message: String },
}

impl Outcome {
    pub fn ok(self) -> Value {
        match self {
            Outcome::Ok(v) => v,
            Outcome::Err {
                error_type,
                message,
            } => panic!("invocation failed: {error_type}: {message}"),
        }
    }

    pub fn err(self) -> (String, String) {
        match self {
            Outcome::Err {
                error_type,
                message,
            } => (error_type, message),
            Outcome::Ok(v) => panic!("invocation succeeded, expected an error: {v:#}"),
        }
    }
}

/// cargo-lambda's emulator and one function binary running against it.
pub struct Function {
    // Drop order: the watchdog first, then the function, then the emulator.
    watchdog: Option<Child>,
    pub function: Group,
    _emulator: Group,
    name: String,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Function {
    /// Starts the emulator, then `bin` of `package` with exactly `env` plus the Lambda
    /// runtime variables.
    pub async fn start(package: &str, bin: &str, env: &BTreeMap<String, String>) -> Result<Self> {
        let binary = function_binary(package, bin).await?;
        let cargo_lambda = find_tool(&["cargo-lambda"])?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("ecr-vault-fn-{bin}-"))
            .tempdir()?;

        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("emulator.log"))?;
        let mut cmd = Command::new(&cargo_lambda);
        cmd.args(["lambda", "watch", "--only-lambda-apis"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["-p", package, "--bin", bin])
            .current_dir(repo_root()?)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("AWS_") || k.starts_with("ECR_VAULT_") {
                cmd.env_remove(&*k);
            }
        }
        let mut emulator = Group::spawn(&mut cmd).context("starting cargo lambda watch")?;
        wait_listening(&mut emulator, port, &dir).await?;

        let runtime_api = format!("http://127.0.0.1:{port}/.rt/{bin}");
        let log = std::fs::File::create(dir.path().join("function.log"))?;
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", bin)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let function = Group::spawn(&mut cmd).context("starting the function")?;

        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("ecr-vault-fn-watchdog")
            .arg(std::process::id().to_string())
            .arg(function.0.id().to_string())
            .arg(emulator.0.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        Ok(Function {
            watchdog,
            function,
            _emulator: emulator,
            name: bin.to_string(),
            port,
            dir,
            http: reqwest::Client::builder()
                .timeout(INVOKE_TIMEOUT)
                .no_proxy()
                .build()?,
        })
    }

    /// The CloudWatch Embedded Metric Format lines the function printed.
    pub fn metrics(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("function.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }

    /// What CloudWatch Logs would receive from the function's stdout and stderr with the
    /// function's `ApplicationLogLevel` set to `level`: see [`lambda_level_filter`].
    pub fn delivered_at(&self, level: &str) -> Vec<Value> {
        let log = std::fs::read_to_string(self.dir.path().join("function.log")).unwrap_or_default();
        lambda_level_filter(&log, level)
    }

    /// The function's stdout and stderr (JSON logs), and the emulator's.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- function.log\n{}\n--- emulator.log\n{}",
            read("function.log"),
            read("emulator.log")
        )
    }

    /// Invokes the function with `payload` through the Lambda Invoke API.
    pub async fn invoke(&self, payload: &Value) -> Outcome {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{}/invocations",
            self.port, self.name
        );
        let resp = match self.http.post(&url).json(payload).send().await {
            Ok(r) => r,
            Err(e) => panic!("invoke failed: {e}\n{}", self.log()),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!(
                "invoke answered {status} with non-JSON {text:?}\n{}",
                self.log()
            )
        });
        match (status, body.get("errorType")) {
            (200, None) => Outcome::Ok(body),
            (_, Some(t)) => Outcome::Err {
                error_type: t.as_str().unwrap_or_default().to_owned(),
                message: body["errorMessage"].as_str().unwrap_or_default().to_owned(),
            },
            _ => panic!("invoke answered {status}: {text}\n{}", self.log()),
        }
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Polls until the emulator accepts connections on `port`.
async fn wait_listening(emulator: &mut Group, port: u16, dir: &tempfile::TempDir) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(status) = emulator.0.try_wait()? {
            let log = std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default();
            bail!("cargo lambda watch exited ({status}):\n{log}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            let log = std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default();
            bail!("cargo lambda watch not listening after {READY_TIMEOUT:?}:\n{log}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Lambda's application log-level filter for a function with the JSON log format, as the
/// Lambda developer guide ("Log-level filtering") documents it: a JSON object on stdout or
/// stderr is kept when its `level` is at or above `min`; a missing or invalid `level` counts
/// as INFO. Emulated because cargo-lambda's emulator passes output through unfiltered and no
/// local server implements the filter; only JSON-object lines are returned (the function
/// writes nothing else under `AWS_LAMBDA_LOG_FORMAT=JSON`).
pub fn lambda_level_filter(log: &str, min: &str) -> Vec<Value> {
    const ORDER: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rank = |l: &str| ORDER.iter().position(|o| o.eq_ignore_ascii_case(l));
    let info = rank("INFO").unwrap_or_default();
    let min = rank(min).unwrap_or_else(|| panic!("{min} is not a Lambda log level"));
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .filter(|v| {
            v.get("level")
                .and_then(Value::as_str)
                .and_then(rank)
                .unwrap_or(info)
                >= min
        })
        .collect()
}

/// A sample event from `events/` with string substitutions.
pub fn sample(name: &str, subst: &[(&str, &str)]) -> Value {
    let path: PathBuf = repo_root()
        .expect("repository root")
        .join("events")
        .join(name);
    let mut text = std::fs::read_to_string(&path).expect("sample event");
    for (from, to) in subst {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).expect("sample event is JSON")
}
