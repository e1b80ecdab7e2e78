//! SeaweedFS (`weed mini`) as the S3 vault: versioning, Object Lock, conditional writes,
//! checksums.
//!
//! # What SeaweedFS 4.48 does (verified by `tests/seaweed_probe.rs`)
//!
//! Works like AWS S3:
//! - `CreateBucket` with `object_lock_enabled_for_bucket(true)` turns versioning on by itself
//!   (`GetBucketVersioning` → `Enabled`); `GetObjectLockConfiguration` → `Enabled`. A plain
//!   bucket is unversioned (empty status).
//! - `PutObject` with `object_lock_mode(COMPLIANCE)`, `object_lock_retain_until_date` and
//!   `checksum_sha256` stores the object; the checksum is checked (a wrong one gives
//!   `BadDigest`) and `HeadObject` with `checksum_mode(Enabled)` returns it.
//! - `HeadObject` returns `object_lock_mode` and `object_lock_retain_until_date`;
//!   `GetObjectRetention` returns the same mode and date.
//! - `PutObjectRetention` with a later date extends the lock; a shorter date is refused
//!   (`AccessDenied`) in COMPLIANCE mode.
//! - `If-None-Match: *` on `PutObject`: the first PUT succeeds, a second PUT of the same key
//!   fails with **412 PreconditionFailed** (no new version is created).
//! - `CompleteMultipartUpload` with `If-None-Match: *`: succeeds for a new key, 412 when the
//!   key exists.
//! - Multipart with `ChecksumAlgorithm::Sha256`: each `UploadPart` with `checksum_sha256` is
//!   verified (wrong value → `BadDigest`) and echoed; `CompletedPart.checksum_sha256` is
//!   accepted; the object then has a COMPOSITE checksum `<base64>-<parts>`.
//! - CRC64NVME (what the vault's multipart uploads use, decision 0011) is verified everywhere
//!   the vault relies on it, under a COMPLIANCE lock: a locked `PutObject` with
//!   `checksum_crc64_nvme`, each `UploadPart` of an upload created with
//!   `ChecksumAlgorithm::Crc64Nvme` + `ChecksumType::FullObject`, and the FULL_OBJECT value on
//!   `CompleteMultipartUpload`. A wrong value → `BadDigest`; a refused Complete leaves the
//!   object invisible and the upload completable. The full-object value combined from the
//!   parts' CRCs is accepted, and `HeadObject` with `checksum_mode(Enabled)` returns it with
//!   `ChecksumType::FullObject`. CRC32C on `UploadPart` is verified too (wrong → `BadDigest`).
//! - `ListObjectVersions` lists versions and delete markers; a plain `DeleteObject` on a locked
//!   key adds a delete marker; `DeleteObject` with the locked `version_id` is refused
//!   (`AccessDenied`).
//!
//! Differs from AWS S3 (do not rely on SeaweedFS to catch these; moto does):
//! - A PutObject with Object Lock headers and **no** checksum or Content-MD5 is accepted.
//!   AWS (and moto) refuse it. Tests of the "integrity header required" rule must use
//!   [`crate::Moto::s3_client`]. (`.checksum_sha256(v)` alone is enough here; moto also
//!   wants `.checksum_algorithm(Sha256)`, so set both.)
//! - A bucket with Object Lock but no default retention: objects are locked only when the
//!   request says so.
//!
//! # Volumes
//! Each bucket is a collection with its own volumes. `weed mini` caps the volume count at
//! free disk / volume size unless told otherwise, so the harness passes `-volume.max` and
//! `-master.volumeSizeLimitMB` explicitly (a machine with little free disk otherwise runs out
//! after a handful of buckets: `PutObject` → 500 `InternalError`).
//!
//! # Ports
//! `weed mini` runs master, volume, filer, S3 and admin servers in one process. Every HTTP and
//! gRPC port is passed explicitly, from the kernel's free ports. The admin's gRPC port is always
//! admin HTTP port + 10000 (a worker inside `weed mini` dials that, whatever the flag says), so
//! the harness picks a pair. Iceberg, Lance and WebDAV are off. `TMPDIR` points into the
//! server's directory, so the unix sockets weed makes (`seaweedfs-*-<port>.sock`) don't
//! litter `/tmp`.

use std::ffi::OsString;

use anyhow::{Context as _, Result};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use crate::paths::find_tool;
use crate::process::{
    READY_TIMEOUT, ServerProcess, free_port_pair, free_ports, http_status_probe, probe_client,
    retry_on_port_conflict, server_dir,
};
use crate::registry::random_token;

/// The region every local service uses.
pub const REGION: &str = "us-east-1";

/// A running SeaweedFS with the S3 gateway on loopback and one admin identity.
#[derive(Debug)]
pub struct S3 {
    process: ServerProcess,
    port: u16,
    /// Access key of the S3 admin identity (random per server).
    pub access_key: String,
    /// Secret key of the S3 admin identity.
    pub secret_key: String,
    /// Always [`REGION`].
    pub region: String,
}

impl S3 {
    /// Starts `weed mini` and waits until S3 answers an authenticated `ListBuckets`.
    pub async fn start() -> Result<Self> {
        retry_on_port_conflict(Self::try_start).await
    }

    async fn try_start() -> Result<Self> {
        let program = find_tool(&["weed"])?;
        let dir = server_dir("seaweedfs")?;
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&tmp)?;
        let access_key = format!("AK{}", random_token(18).to_uppercase());
        let secret_key = random_token(40);
        let identities = serde_json::json!({
            "identities": [{
                "name": "ecr-vault-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]
            }]
        });
        let config = dir.path().join("s3.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&identities)?)?;

        let (p, admin) = weed_ports()?;
        let s3_port = p[6];
        let d = |p: &std::path::Path| p.display().to_string();
        let args: Vec<OsString> = [
            "mini".to_string(),
            format!("-dir={}", d(&data)),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-volume.port={}", p[2]),
            format!("-volume.port.grpc={}", p[3]),
            format!("-filer.port={}", p[4]),
            format!("-filer.port.grpc={}", p[5]),
            format!("-s3.port={s3_port}"),
            format!("-s3.port.grpc={}", p[7]),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", d(&config)),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            format!("-admin.port={admin}"),
            "-master.telemetry=false".into(),
            // Every bucket is a SeaweedFS collection with volumes of its own, and `weed mini`
            // sizes its volume count from the machine's free disk (free / 1 GiB). On a machine
            // with little free disk (CI), the first PutObject into a later bucket failed with
            // 500 "No writable volumes and no free volumes left" (reproduced with
            // `-volume.max=4`: the fifth bucket fails). Fix both numbers so the stack behaves
            // the same on every machine; volumes are sparse, so an unused slot costs no disk.
            "-volume.max=1000".into(),
            "-master.volumeSizeLimitMB=256".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let env = [("TMPDIR", tmp.into_os_string())];
        let mut process = ServerProcess::spawn("weed mini", &program, &args, &env, dir)?;
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let probe = probe_client();
        process
            .wait_ready(READY_TIMEOUT, || http_status_probe(&probe, &endpoint, &[]))
            .await?;
        // The HTTP port answers before the filer behind it is usable: wait for a signed call.
        let client = s3_client(&endpoint, &access_key, &secret_key);
        process
            .wait_ready(READY_TIMEOUT, || async {
                client.list_buckets().send().await?;
                Ok(())
            })
            .await?;
        let s3 = S3 {
            process,
            port: s3_port,
            access_key,
            secret_key,
            region: REGION.to_string(),
        };
        Ok(s3)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server process (log path, data dir).
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// What to print when the server refused a request: the free disk under its data (below
    /// 1 % free SeaweedFS marks every volume read-only and answers writes with 500
    /// `InternalError`) and the tail of its log.
    pub fn diagnostics(&self) -> String {
        let df = std::process::Command::new("df")
            .args(["-h", "--output=size,avail,pcent"])
            .arg(self.process.dir())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("df failed: {e}"));
        format!(
            "--- disk under {} (read-only below 1 % free) ---\n{df}--- SeaweedFS log tail ---\n{}",
            self.process.dir().display(),
            self.process.log_tail(16 * 1024)
        )
    }

    /// An S3 client for this server: path-style, static credentials, latest behavior version
    /// (so the SDK's default CRC32 checksums are on, as in production).
    pub fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint(), &self.access_key, &self.secret_key)
    }

    /// Creates a plain (unversioned) bucket.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .with_context(|| format!("CreateBucket {name}"))?;
        Ok(())
    }

    /// Creates a bucket with Object Lock enabled and makes sure versioning is `Enabled` (S3
    /// requires both for locked objects).
    pub async fn create_locked_bucket(&self, name: &str) -> Result<()> {
        create_locked_bucket(&self.client(), name).await
    }

    /// Environment for child processes (the CLI): endpoint, credentials, region.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), self.region.clone()),
        ]
    }
}

/// A path-style S3 client with static credentials for a local endpoint.
pub fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "ecr-vault-testkit",
        ))
        .force_path_style(true)
        // The product's retry policy (engine::context::aws_config), so the fault tests judge
        // the retries users get rather than a stricter default.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::adaptive().with_max_attempts(5))
        // The SDK's retry quota is process-wide per partition name; a partition per endpoint
        // (each fault proxy has its own) keeps one test's injected faults from spending the
        // retries of the tests running beside it.
        .retry_partition(aws_sdk_s3::config::retry::RetryPartition::new(format!(
            "testkit-{endpoint}"
        )))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// CreateBucket with Object Lock, then versioning checked (and enabled if the server did not).
pub async fn create_locked_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<()> {
    client
        .create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .with_context(|| format!("CreateBucket {name} with Object Lock"))?;
    // moto answers GetBucketVersioning with a `GetBucketVersioningResponse` root the Rust SDK
    // cannot parse; treat "can't tell" like "not enabled" and enable it (idempotent).
    let enabled = match client.get_bucket_versioning().bucket(name).send().await {
        Ok(v) => v.status() == Some(&BucketVersioningStatus::Enabled),
        Err(_) => false,
    };
    if !enabled {
        client
            .put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("enabling versioning on {name}"))?;
    }
    Ok(())
}

/// Eight free ports (HTTP and gRPC of master, volume, filer, S3) and an admin port whose
/// +10000 is free too. `weed mini` refuses to start when one port equals another's + 10000
/// ("reserved for gRPC calculation"), whatever the flags say, so such draws are drawn again.
fn weed_ports() -> Result<(Vec<u16>, u16)> {
    for _ in 0..20 {
        let p = free_ports(8)?;
        let admin = free_port_pair(10000)?;
        let mut all: Vec<u32> = p.iter().map(|&x| u32::from(x)).collect();
        all.push(u32::from(admin));
        // The admin port is drawn after the other listeners closed, so it may repeat one.
        let clash = p.contains(&admin) || all.iter().any(|a| all.iter().any(|b| *a == b + 10_000));
        if !clash {
            return Ok((p, admin));
        }
    }
    anyhow::bail!("no set of free ports without a +10000 clash for weed mini")
}
