//! Shared helpers for the integration tests: building the product's clients against the local
//! stack, and an invariant checker that inspects the vault with plain S3 calls and its own
//! hashing, independently of the vault crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use ecr_vault_engine::Source;
use ecr_vault_registry::{ClientOptions, Credentials, RegistryClient, StaticCredentials};
use ecr_vault_testkit::{Registry, S3};
use ecr_vault_vault::{LockMode, LockPolicy, Vault, VaultLocation, VaultOptions};
use sha2::{Digest as _, Sha256};

/// A vault on `bucket` (created with Object Lock) with test-friendly lock settings.
pub async fn new_vault(s3: &S3, prefix: &str, opts: VaultOptions) -> Result<Vault> {
    let bucket = ecr_vault_testkit::unique_name("vault");
    s3.create_locked_bucket(&bucket).await?;
    let uri = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    Ok(Vault::new(s3.client(), VaultLocation::parse(&uri)?, opts)?)
}

pub fn lock(days: u32) -> LockPolicy {
    LockPolicy {
        mode: LockMode::Compliance,
        retention_days: days,
        slack_days: 2,
        ..LockPolicy::default()
    }
}

/// The registry client the product would build for this registry.
pub fn registry_client(r: &Registry) -> Result<RegistryClient> {
    let creds = r.credentials().map(|(u, p)| Credentials::new(u, p));
    Ok(RegistryClient::new(
        &r.url(),
        Arc::new(StaticCredentials(creds)),
        ClientOptions::default(),
    )?)
}

pub fn registry_source(r: &Registry) -> Result<Source> {
    Ok(Source::Registry {
        registry: registry_client(r)?,
    })
}

/// An ECR source the way the product builds one: the ECR API `ecr` (moto, or a proxy in front
/// of it) for listing, and `data_plane` authenticated with the tokens that API hands out.
pub fn ecr_source(ecr: aws_sdk_ecr::Client, data_plane: &Registry) -> Result<Source> {
    let ecr = ecr_vault_ecr::Ecr::new(ecr, None);
    let registry = RegistryClient::new(
        &data_plane.url(),
        ecr.credential_provider(),
        ClientOptions::default(),
    )?;
    Ok(Source::Ecr { ecr, registry })
}

/// Filters that select the repositories matching one glob.
pub fn only(glob: &str) -> ecr_vault_engine::Filters {
    match ecr_vault_engine::Filters::new(ecr_vault_engine::FilterSpec {
        repositories: vec![glob.to_owned()],
        ..Default::default()
    }) {
        Ok(f) => f,
        Err(e) => panic!("filter {glob:?}: {e}"),
    }
}

/// Filters that select every repository under the namespace `ns`.
pub fn only_ns(ns: &str) -> ecr_vault_engine::Filters {
    only(&format!("{ns}/**"))
}

/// Vault options for tests: `lock`, 5 MiB parts, 4 in flight.
pub fn small_parts(lock: LockPolicy) -> VaultOptions {
    VaultOptions {
        lock,
        part_size: 5 * 1024 * 1024,
        parts_in_flight: 4,
        blob_storage_class: None,
    }
}

/// Restores `sel` (everything it selects) into a fresh registry; fails on any failed image.
pub async fn restore_into_fresh(
    vault: &Vault,
    sel: ecr_vault_engine::SnapshotSel,
) -> Result<Registry> {
    let fresh = Registry::start().await?;
    let target = Source::Registry {
        registry: registry_client(&fresh)?,
    };
    let r = ecr_vault_engine::restore(
        vault,
        &target,
        &ecr_vault_engine::RestoreRequest {
            snapshot: sel,
            filters: ecr_vault_engine::Filters::all(),
            digests: vec![],
            mapping: ecr_vault_engine::Mapping::default(),
            dry_run: false,
            concurrency: 2,
        },
        Arc::new(ecr_vault_engine::NoProgress),
    )
    .await?;
    ensure!(r.failures.is_empty(), "restore failed: {:#?}", r.failures);
    Ok(fresh)
}

/// Runs `scripts/break-glass.sh <vault> <snapshot> <dir>` the documented way: the AWS CLI of
/// the venv, credentials and endpoint of the stack's S3, no ecr-vault code.
pub fn break_glass(
    stack: &ecr_vault_testkit::Stack,
    vault: &Vault,
    snapshot: &str,
    dir: &std::path::Path,
) -> Result<std::process::Output> {
    let root = ecr_vault_testkit::paths::repo_root()?;
    Ok(std::process::Command::new("bash")
        .arg(root.join("scripts/break-glass.sh"))
        .arg(vault.location().to_string())
        .arg(snapshot)
        .arg(dir)
        .envs(stack.s3.env())
        .env(
            "PATH",
            format!(
                "{}:{}",
                root.join(".venv/bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()?)
}

/// An SQS client for moto (the work queue of fan-out runs).
pub fn sqs_client(stack: &ecr_vault_testkit::Stack) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(
            ecr_vault_testkit::s3::REGION,
        ))
        .endpoint_url(stack.moto.endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            ecr_vault_testkit::moto::ACCESS_KEY,
            ecr_vault_testkit::moto::SECRET_KEY,
            None,
            None,
            "ecr-vault-tests",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct VaultContents {
    /// digest hex → size, for every object under blobs/sha256/.
    pub blobs: BTreeMap<String, u64>,
    /// digest hex → raw bytes, for the objects that are manifests or indexes.
    pub manifests: BTreeMap<String, Vec<u8>>,
    pub snapshots: Vec<String>,
    pub versions: usize,
}

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Walks the whole vault and asserts the invariants:
/// - every key has exactly one version and no delete marker (write-once);
/// - every blob re-hashes to the digest in its key;
/// - every object carries `mode` with a retain-until of at least `min_until`;
/// - every manifest's and snapshot's references are present (closure before manifest).
pub async fn check_vault(
    vault: &Vault,
    mode: &str,
    min_until: DateTime<Utc>,
) -> Result<VaultContents> {
    let s3 = vault.client();
    let loc = vault.location();
    let prefix = if loc.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", loc.prefix)
    };
    let mut out = VaultContents::default();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(&loc.bucket)
            .prefix(&prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await?;
        // Upload staging records and leases are bookkeeping, not vault content: records are
        // rewritten while an upload is deferred and deleted when it completes
        // (tests/resume.rs checks them itself); leases are locked for a day only
        // (tests/retention.rs checks them).
        let staged = |k: Option<&str>| {
            k.unwrap_or_default()
                .strip_prefix(&prefix)
                .is_some_and(|r| {
                    r.starts_with("staging/uploads/") || r.starts_with("staging/leases/")
                })
        };
        let markers: Vec<_> = page
            .delete_markers()
            .iter()
            .filter(|m| !staged(m.key()))
            .collect();
        ensure!(markers.is_empty(), "vault has delete markers: {markers:?}");
        for v in page.versions().iter().filter(|v| !staged(v.key())) {
            *keys
                .entry(v.key().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    for (k, n) in &keys {
        ensure!(*n == 1, "{k} has {n} versions (write-once violated)");
        out.versions += n;
    }
    for key in keys.keys() {
        let rel = key.strip_prefix(&prefix).unwrap_or(key);
        let obj = s3.get_object().bucket(&loc.bucket).key(key).send().await?;
        let content_type = obj.content_type().unwrap_or_default().to_owned();
        let bytes = obj.body.collect().await?.into_bytes();
        let retention = s3
            .get_object_retention()
            .bucket(&loc.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("GetObjectRetention {key}"))?;
        let r = retention.retention().context("no retention")?;
        ensure!(
            r.mode().map(|m| m.as_str()) == Some(mode),
            "{key}: lock mode {:?}, expected {mode}",
            r.mode()
        );
        let until = r
            .retain_until_date()
            .and_then(|t| DateTime::from_timestamp(t.secs(), 0))
            .context("no retain-until")?;
        ensure!(
            until >= min_until,
            "{key}: locked until {until}, needs {min_until}"
        );
        if let Some(hex) = rel.strip_prefix("blobs/sha256/") {
            let actual = hex::encode(Sha256::digest(&bytes));
            ensure!(actual == hex, "{key}: content hashes to {actual}");
            out.blobs.insert(hex.to_owned(), bytes.len() as u64);
            if MANIFEST_TYPES.contains(&content_type.as_str()) {
                out.manifests.insert(hex.to_owned(), bytes.to_vec());
            }
        } else if let Some(name) = rel.strip_prefix("snapshots/") {
            out.snapshots.push(name.to_owned());
            out.manifests
                .insert(format!("snapshot:{name}"), bytes.to_vec());
        } else if rel != "oci-layout"
            && !rel.starts_with("events/")
            // Fan-out run manifests and markers (write-once, locked: checked above).
            && !rel.starts_with("staging/runs/")
        {
            bail!("unexpected key in the vault: {key}");
        }
    }
    for (name, bytes) in &out.manifests {
        for (digest, size) in references(bytes)? {
            let hex = digest
                .strip_prefix("sha256:")
                .with_context(|| format!("{name}: bad digest {digest}"))?;
            match out.blobs.get(hex) {
                Some(s) => ensure!(
                    *s == size,
                    "{name}: {digest} is {s} bytes, descriptor says {size}"
                ),
                None => bail!(
                    "{name} is in the vault without {digest} (closure before manifest violated)"
                ),
            }
        }
    }
    Ok(out)
}

/// Digests and sizes a manifest, index or snapshot references.
pub fn references(bytes: &[u8]) -> Result<Vec<(String, u64)>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    let mut out = Vec::new();
    let mut push = |d: &serde_json::Value| {
        if let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) {
            out.push((digest.to_owned(), size));
        }
    };
    if v["config"].is_object() {
        push(&v["config"]);
    }
    for key in ["layers", "manifests"] {
        if let Some(a) = v[key].as_array() {
            a.iter().for_each(&mut push);
        }
    }
    Ok(out)
}

/// Path of a blob's data file in the registry's filesystem storage, for tests that corrupt the
/// registry's copy to show that the vault refuses bad bytes.
pub fn registry_blob_file(r: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    r.process()
        .expect("registry process")
        .dir()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// The set of `repo:tag` names a snapshot records.
pub fn snapshot_names(s: &ecr_vault_vault::Snapshot) -> BTreeSet<String> {
    s.images
        .iter()
        .filter_map(|i| i.tag.as_ref().map(|t| format!("{}:{t}", i.repository)))
        .collect()
}

/// The work queue and its DLQ, as the template declares them: redrive after `max_receives`.
pub struct WorkQueues {
    pub work: String,
    pub work_arn: String,
    pub dlq: String,
}

/// Creates `<name>-dlq` and `<name>-work` on the SQS endpoint `sqs` talks to (moto).
pub async fn work_queues(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receives: u32,
    visibility_secs: u32,
) -> Result<WorkQueues> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let arn = |url: String| async move {
        sqs.get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .with_context(|| format!("no ARN for {url}"))
    };
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await?
        .queue_url
        .context("no DLQ url")?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": arn(dlq.clone()).await?,
        "maxReceiveCount": max_receives,
    });
    let work = sqs
        .create_queue()
        .queue_name(format!("{name}-work"))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await?
        .queue_url
        .context("no queue url")?;
    Ok(WorkQueues {
        work_arn: arn(work.clone()).await?,
        work,
        dlq,
    })
}
