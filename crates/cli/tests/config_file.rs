//! A config file drives the real CLI as flags do: one file names the source, its credentials
//! (by reference), the repositories, the vault, retention and keep rules. The environment
//! overrides the file and flags override both; a misspelt key, a secret in the file or a bad
//! value stops the command with exit 3 before anything is written.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::{Stack, unique_name};

const PASSWORD_VAR: &str = "EV_TEST_REGISTRY_PASSWORD";

/// The CLI with the stack's S3 and nothing ambient: no auth files, no ECR_VAULT_* settings.
fn cli(stack: &Stack, home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-vault"));
    cmd.envs(stack.s3.env())
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ECR_VAULT_")) {
        cmd.env_remove(k);
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_drives_backup_and_gc_with_the_environment_and_flags_above_it() {
    let stack = Stack::shared().await.unwrap();
    let (user, password) = stack.registry.credentials().unwrap();
    let (repo, other) = (unique_name("cfg"), unique_name("cfg-other"));
    for (seed, r) in [(41, &repo), (42, &other)] {
        ImageBuilder::oci(seed)
            .layers(&[20_000])
            .build()
            .unwrap()
            .push(&stack.registry, r, &["v1"])
            .await
            .unwrap();
    }
    let bucket = unique_name("vault");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("ecr-vault.yaml");
    let write = |extra: &str| {
        std::fs::write(
            &file,
            format!(
                "source:\n  registry: {url}\n  credentials:\n    username: {user}\n    \
                 password_env: {PASSWORD_VAR}\n  repositories: [{repo}]\nvault:\n  uri: \
                 s3://{bucket}\n  lock_mode: GOVERNANCE\n  retention_days: 2\nkeep:\n  last: \
                 1\n{extra}",
                url = stack.registry.url()
            ),
        )
        .unwrap();
    };
    let run = |args: &[&str]| {
        cli(stack, home.path())
            .env(PASSWORD_VAR, password)
            .arg("--config")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };

    // `config check` shows each setting and where it came from, never the password.
    write("");
    let out = run(&["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("vault.retention_days") && shown.contains("2  [vault.retention_days in")
    );
    assert!(!shown.contains(password) && !stderr(&out).contains(password));

    // A misspelt key, a secret in the file, or an invalid value: exit 3, nothing written.
    for (extra, says) in [
        (
            "backups:\n  image_concurrency: 2\n",
            "backups.image_concurrency: not a setting",
        ),
        ("gc:\n  keep_last: 2\n", "gc.keep_last: not a setting"),
    ] {
        write(extra);
        let out = run(&["backup", "--output", "json"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    std::fs::write(
        &file,
        format!(
            "source:\n  credentials:\n    password: {password}\nvault:\n  uri: s3://{bucket}\n"
        ),
    )
    .unwrap();
    let out = run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("a secret does not belong"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(password), "the secret was echoed");
    write("");
    let out = cli(stack, home.path())
        .env(PASSWORD_VAR, password)
        .env("ECR_VAULT_RETENTION_DAYS", "0")
        .arg("--config")
        .arg(&file)
        .args(["backup"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ECR_VAULT_RETENTION_DAYS=\"0\""),
        "the environment is above the file"
    );
    let out = run(&["backup", "--retention-days", "0"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("--retention-days=\"0\""),
        "{}",
        stderr(&out)
    );
    assert!(
        json(&run(&["snapshots", "--output", "json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The file alone: its repositories, credentials by reference and vault.
    let b = json(&run(&["backup", "--output", "json"]));
    assert_eq!(b["counts"]["imagesCopied"], 1, "{b}");
    assert_eq!(b["complete"], true);
    // A flag adds to nothing and replaces the file's list: --repository names the other one.
    let b = json(&run(&[
        "backup",
        "--repository",
        &other,
        "--output",
        "json",
    ]));
    assert_eq!(b["counts"]["imagesCopied"], 1, "{b}");
    let snaps = json(&run(&["snapshots", "--output", "json"]));
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");

    // GC reads keep.last from the file and the vault from it too; a dry run plans, no error.
    let out = run(&["gc", "--output", "json"]);
    let g = json(&out);
    assert!(g.is_object(), "{g}");
    assert!(run(&["verify"]).status.success());
}
