//! Registry credentials found the way skopeo and crane find them. The real CLI backs up from
//! the stack's registry, which requires Basic auth: from an auth file's `auths` entry, from a
//! `credHelpers` helper (a real program on PATH speaking the docker-credential protocol), from
//! `--password-stdin`; without credentials it is refused, and a username without a password is
//! a configuration error (exit 3) before anything is read.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::{Stack, unique_name};

/// The CLI with the stack's S3, no ambient registry credentials, HOME in `home`.
fn cli(stack: &Stack, home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-vault"));
    cmd.envs(stack.s3.env())
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("ECR_VAULT_REGISTRY_USERNAME")
        .env_remove("ECR_VAULT_REGISTRY_PASSWORD")
        .env_remove("ECR_VAULT_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn plan_args(stack: &Stack, vault: &str, repo: &str) -> Vec<String> {
    let url = stack.registry.url();
    [
        "plan",
        "--registry",
        &url,
        "--vault",
        vault,
        "--repository",
        repo,
        "--output",
        "json",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Asserts the plan saw the one image as new: the registry let it list.
fn saw_the_image(out: &Output, how: &str) {
    assert!(
        out.status.success(),
        "{how}: plan failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["new"].as_array().map(Vec::len), Some(1), "{how}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_auth_files_helpers_and_stdin_never_silently_anonymous() {
    let stack = Stack::shared().await.unwrap();
    let (user, password) = stack.registry.credentials().unwrap();
    let repo = unique_name("creds");
    ImageBuilder::oci(31)
        .layers(&[10_000])
        .build()
        .unwrap()
        .push(&stack.registry, &repo, &["v1"])
        .await
        .unwrap();
    let bucket = unique_name("vault");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
    let vault = format!("s3://{bucket}");
    let home = tempfile::tempdir().unwrap();
    let host = stack
        .registry
        .url()
        .trim_start_matches("http://")
        .to_owned();

    // Anonymous: the registry refuses the listing, and the plan says so.
    let out = cli(stack, home.path())
        .args(plan_args(stack, &vault, &repo))
        .output()
        .unwrap();
    assert!(!out.status.success(), "anonymous listing was accepted");

    // A username without a password: exit 3, before anything is read.
    let out = cli(stack, home.path())
        .args(plan_args(stack, &vault, &repo))
        .args(["--username", user])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a password"));

    // --password-stdin.
    let mut child = cli(stack, home.path())
        .args(plan_args(stack, &vault, &repo))
        .args(["--username", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    saw_the_image(&child.wait_with_output().unwrap(), "--password-stdin");

    // ~/.docker/config.json with an `auths` entry keyed as docker login writes it.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(
        home.path().join(".docker/config.json"),
        format!(r#"{{"auths":{{"http://{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let out = cli(stack, home.path())
        .args(plan_args(stack, &vault, &repo))
        .output()
        .unwrap();
    saw_the_image(&out, "~/.docker/config.json auths");

    // --authfile naming a config whose credHelpers entry calls a helper on PATH; it wins over
    // the (now wrong) ~/.docker/config.json.
    std::fs::write(
        home.path().join(".docker/config.json"),
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("x:y")
        ),
    )
    .unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-evtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let authfile = home.path().join("auth.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"credHelpers":{{"{host}":"evtest"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = cli(stack, home.path())
        .env("PATH", &path)
        .args(plan_args(stack, &vault, &repo))
        .arg("--authfile")
        .arg(&authfile)
        .output()
        .unwrap();
    saw_the_image(&out, "--authfile credHelpers");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(password), "the password reached the log");

    // $REGISTRY_AUTH_FILE that does not exist is an error, not a silent fallback.
    let out = cli(stack, home.path())
        .env("REGISTRY_AUTH_FILE", home.path().join("missing.json"))
        .args(plan_args(stack, &vault, &repo))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
