//! The backup function's real binary behind cargo-lambda's runtime emulator, as a module the
//! function tests share: build once, start the emulator and the function with a vault's
//! configuration, invoke over the Lambda Invoke API. How and why it runs this way is told in
//! `functions_backup.rs`, whose helpers these are (kept there too, so that file stands alone).

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ecr_vault_testkit::fixtures::{ImageBuilder, PushedImage};
use ecr_vault_testkit::paths::{find_tool, repo_root};
use ecr_vault_testkit::process::free_port;
use ecr_vault_testkit::{Stack, unique_name};
use ecr_vault_vault::{Vault, VaultLocation, VaultOptions};
use serde_json::Value;
use tokio::sync::OnceCell;

pub(crate) const FUNCTION: &str = "ecr-vault-backup";
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Builds the function binary once and returns its path.
pub(crate) async fn function_binary() -> Result<PathBuf> {
    static BUILT: OnceCell<PathBuf> = OnceCell::const_new();
    BUILT
        .get_or_try_init(|| async {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = tokio::process::Command::new(cargo);
            // `cargo test` gives the test binary CARGO_MANIFEST_DIR, CARGO_PKG_*, OUT_DIR...
            // Build scripts (ring, aws-lc-sys) track some of them, so a nested build that
            // inherits them rebuilds those crates, and every later plain build rebuilds them
            // back. Build with the environment a shell would have.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if CARGO_RUNTIME_VARS.iter().any(|p| k.starts_with(p)) || k == "OUT_DIR" {
                    cmd.env_remove(&*k);
                }
            }
            let out = cmd
                .args([
                    "build",
                    "--message-format=json",
                    "-p",
                    "ecr-vault-backup-fn",
                ])
                .args(["--bin", FUNCTION])
                .current_dir(repo_root()?)
                .stdin(Stdio::null())
                .output()
                .await
                .context("running cargo build")?;
            ensure!(
                out.status.success(),
                "cargo build of the function failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == FUNCTION)
                .and_then(|m| m["executable"].as_str().map(PathBuf::from))
                .context("cargo build reported no executable for the function")
        })
        .await
        .cloned()
}

/// A child in a process group of its own, ended with its group on drop.
pub(crate) struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        Ok(Group(cmd.process_group(0).spawn()?))
    }

    fn id(&self) -> u32 {
        self.0.id()
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

/// cargo-lambda's emulator and the backup function running against it.
pub(crate) struct Function {
    // Drop order: the watchdog first, then the function, then the emulator.
    watchdog: Option<Child>,
    function: Group,
    _emulator: Group,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// What an invocation answered: the function's response, or its error.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ok(Value),
    Err { error_type: String, message: String },
}

impl Outcome {
    pub(crate) fn ok(self) -> Value {
        match self {
            Outcome::Ok(v) => v,
            Outcome::Err {
                error_type,
                message,
            } => panic!("invocation failed: {error_type}: {message}"),
        }
    }

    pub(crate) fn err(self) -> (String, String) {
        match self {
            Outcome::Err {
                error_type,
                message,
            } => (error_type, message),
            Outcome::Ok(v) => panic!("invocation succeeded, expected an error: {v:#}"),
        }
    }
}

impl Function {
    /// Starts the emulator, then the function with the stack's AWS endpoints, the registry
    /// override, the vault at `bucket`/`prefix`, and `extra` configuration.
    pub(crate) async fn start(
        stack: &Stack,
        bucket: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        let binary = function_binary().await?;
        let cargo_lambda = find_tool(&["cargo-lambda"])?;
        let dir = tempfile::Builder::new()
            .prefix("ecr-vault-fn-backup-")
            .tempdir()?;

        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("emulator.log"))?;
        let mut cmd = Command::new(&cargo_lambda);
        cmd.args(["lambda", "watch", "--only-lambda-apis"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["-p", "ecr-vault-backup-fn", "--bin", FUNCTION])
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

        // The function's environment: what Lambda and the template would set, nothing else.
        let mut env: BTreeMap<String, String> = stack.env().into_iter().collect();
        env.retain(|k, _| k.starts_with("AWS_"));
        let runtime_api = format!("http://127.0.0.1:{port}/.rt/{FUNCTION}");
        for (k, v) in [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("ECR_VAULT_BUCKET", bucket),
            ("ECR_VAULT_PREFIX", prefix),
            ("ECR_VAULT_LOCK_MODE", "COMPLIANCE"),
            ("ECR_VAULT_RETENTION_DAYS", "2"),
            ("ECR_VAULT_LOCK_SLACK_DAYS", "1"),
            ("ECR_VAULT_REPOSITORIES", "**"),
            ("ECR_VAULT_EXCLUDE_REPOSITORIES", ""),
            ("ECR_VAULT_TAGS", ""),
            ("ECR_VAULT_EXCLUDE_TAGS", ""),
            ("ECR_VAULT_IMAGE_CONCURRENCY", "2"),
            ("ECR_VAULT_PART_SIZE_MIB", "6"),
            ("ECR_VAULT_PARTS_IN_FLIGHT", "2"),
            ("ECR_VAULT_STORAGE_CLASS", "STANDARD"),
        ] {
            env.insert(k.into(), v.into());
        }
        env.insert("ECR_VAULT_REGISTRY_URL".into(), stack.registry.url());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let log = std::fs::File::create(dir.path().join("function.log"))?;
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&env)
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
            .arg(function.id().to_string())
            .arg(emulator.id().to_string())
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
            port,
            dir,
            http: reqwest::Client::builder()
                .timeout(INVOKE_TIMEOUT)
                .no_proxy()
                .build()?,
        })
    }

    /// The function's stdout and stderr (JSON logs and EMF lines).
    pub(crate) fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- function.log\n{}\n--- emulator.log\n{}",
            read("function.log"),
            read("emulator.log")
        )
    }

    /// Invokes the function with `payload` through the Lambda Invoke API.
    pub(crate) async fn invoke(&self, payload: &Value) -> Outcome {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{FUNCTION}/invocations",
            self.port
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

    /// The EMF metric lines the function printed.
    pub(crate) fn metrics(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("function.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
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
pub(crate) async fn wait_listening(
    emulator: &mut Group,
    port: u16,
    dir: &tempfile::TempDir,
) -> Result<()> {
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

/// A fresh Object Lock bucket, and a handle on the vault the function will write.
pub(crate) async fn new_vault(stack: &Stack, prefix: &str) -> Result<(String, Vault)> {
    let bucket = unique_name("fnvault");
    stack.s3.create_locked_bucket(&bucket).await?;
    let uri = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    let vault = Vault::new(
        stack.s3.client(),
        VaultLocation::parse(&uri)?,
        VaultOptions {
            lock: ecr_vault_tests::lock(2),
            ..VaultOptions::default()
        },
    )?;
    Ok((bucket, vault))
}

/// Pushes a small OCI image to the registry and records it in moto's ECR.
pub(crate) async fn push(
    stack: &Stack,
    seed: u64,
    repo: &str,
    tags: &[&str],
) -> Result<PushedImage> {
    let img = ImageBuilder::oci(seed)
        .layers(&[4_000 + seed, 9_000])
        .build()?;
    let pushed = img.push(&stack.registry, repo, tags).await?;
    stack.moto.register_pushed(&pushed).await?;
    Ok(pushed)
}

/// A sample event from `events/` with string substitutions.
pub(crate) fn sample(name: &str, subst: &[(&str, &str)]) -> Value {
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
