//! What the CLI does when the reader of its output goes away (`ecr-vault … | head`): the
//! output ends, the command does not panic, and its exit code is still its own.

use std::process::{Command, Output, Stdio};

/// Runs the CLI with stdout a pipe whose reader is already closed, so every write fails with
/// EPIPE, whatever the timing.
fn with_closed_stdout(args: &[&str], env: &[(&str, &str)]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-vault"));
    cmd.args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ecr-vault")
}

#[test]
fn a_closed_stdout_ends_the_output_without_a_panic() {
    let out = with_closed_stdout(&["config", "keys"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        stderr.is_empty(),
        "a closed pipe is not an error to report: {stderr}"
    );
}

#[test]
fn a_closed_stdout_keeps_the_commands_exit_code() {
    let out = with_closed_stdout(
        &["config", "check"],
        &[
            ("ECR_VAULT_URI", "s3://vault/prefix"),
            ("ECR_VAULT_RETENTION_DAYS", "0"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}
