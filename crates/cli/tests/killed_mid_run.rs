//! `kill -9` of the `ecr-vault` process in the middle of a multipart blob upload: nothing
//! half-written is visible, the rerun completes, and `gc` clears the upload the dead process
//! left behind. The real CLI binary runs against the real local stack; a fault proxy in front
//! of SeaweedFS holds the second UploadPart so the kill lands at a known point.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::Utc;
use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::{Fault, FaultProxy, Rule, Stack, unique_name};
use ecr_vault_tests::check_vault;
use ecr_vault_vault::{Vault, VaultLocation, VaultOptions};

const MIB: u64 = 1024 * 1024;

/// The CLI with the stack's S3 credentials and S3 at `s3_endpoint` (the proxy or the server).
fn cli(stack: &Stack, s3_endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecr-vault"));
    cmd.envs(stack.s3.env())
        .env("AWS_ENDPOINT_URL_S3", s3_endpoint)
        .env_remove("ECR_VAULT_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn backup_args(stack: &Stack, vault: &str, repo: &str) -> Vec<String> {
    let (user, password) = stack.registry.credentials().unwrap();
    [
        "backup",
        "--registry",
        &stack.registry.url(),
        "--username",
        user,
        "--password",
        password,
        "--vault",
        vault,
        "--repository",
        repo,
        "--retention-days",
        "1",
        "--lock-slack-days",
        "0",
        "--part-size-mib",
        "5",
        "--parts-in-flight",
        "2",
        "--output",
        "json",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn ok(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON report ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_mid_upload_leaves_nothing_visible_and_the_rerun_completes() {
    let stack = Stack::shared().await.unwrap();
    let repo = unique_name("killed");
    // A 16 MiB layer (four 5 MiB parts) and a small one.
    let pushed = ImageBuilder::oci(77)
        .layers(&[16 * MIB, 30_000])
        .build()
        .unwrap()
        .push(&stack.registry, &repo, &["v1"])
        .await
        .unwrap();
    let bucket = unique_name("vault");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
    let uri = format!("s3://{bucket}/prod");
    let direct = Vault::new(
        stack.s3.client(),
        VaultLocation::parse(&uri).unwrap(),
        VaultOptions::default(),
    )
    .unwrap();
    let uploads = || async {
        stack
            .s3
            .client()
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    };

    // The first part goes through; the second is held until the process is dead.
    let proxy = FaultProxy::start(&stack.s3.endpoint()).await.unwrap();
    let hold = proxy.add_rule(
        Rule::new("/*", Fault::Delay(Duration::from_secs(600)))
            .method("PUT")
            .query("partNumber")
            .after(1),
    );
    let mut child = cli(stack, &proxy.url())
        .args(backup_args(stack, &uri, &repo))
        .spawn()
        .unwrap();
    proxy
        .wait_triggered(hold, 1, Duration::from_secs(120))
        .await
        .unwrap();
    child.kill().unwrap(); // SIGKILL: no destructor, no abort, no staging record.
    let status = child.wait().unwrap();
    assert!(!status.success(), "the backup was not killed: {status}");

    // Nothing half-written is visible: whatever landed is whole, verified and locked, and the
    // image's manifest is absent because its closure is not complete.
    let min_until = Utc::now() + chrono::Duration::hours(23);
    let after_kill = check_vault(&direct, "COMPLIANCE", min_until).await.unwrap();
    let manifest_hex = pushed.digest.trim_start_matches("sha256:");
    assert!(
        !after_kill.blobs.contains_key(manifest_hex),
        "the manifest is visible without its closure"
    );
    assert!(after_kill.snapshots.is_empty(), "a snapshot was written");
    assert_eq!(uploads().await, 1, "the killed upload should still be open");

    // The rerun completes, straight to S3.
    let report = ok(
        &cli(stack, &stack.s3.endpoint())
            .args(backup_args(stack, &uri, &repo))
            .output()
            .unwrap(),
        "the rerun",
    );
    assert_eq!(report["complete"], true, "{report:#}");
    let contents = check_vault(&direct, "COMPLIANCE", min_until).await.unwrap();
    for (digest, size) in pushed.blobs.iter().chain(&pushed.child_manifests) {
        let hex = digest.trim_start_matches("sha256:");
        assert_eq!(contents.blobs.get(hex), Some(size), "vault lacks {digest}");
    }
    assert!(contents.blobs.contains_key(manifest_hex));
    assert_eq!(contents.snapshots.len(), 1);

    // gc clears the dead process's upload and deletes nothing the snapshot needs.
    ok(
        &cli(stack, &stack.s3.endpoint())
            .args([
                "gc",
                "--vault",
                &uri,
                "--abandoned-upload-days",
                "0",
                "--apply",
                "--output",
                "json",
            ])
            .output()
            .unwrap(),
        "gc",
    );
    assert_eq!(uploads().await, 0, "gc left the abandoned upload");
    let after_gc = check_vault(&direct, "COMPLIANCE", min_until).await.unwrap();
    assert_eq!(after_gc.blobs, contents.blobs);
    let verified = cli(stack, &stack.s3.endpoint())
        .args(["verify", "--vault", &uri, "--deep"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "verify --deep: {}",
        String::from_utf8_lossy(&verified.stdout)
    );
}
