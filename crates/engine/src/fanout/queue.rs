//! The scheduled side of a fan-out: the run manifest first, then one work item per image on
//! the SQS work queue, in batches, with the entries SQS refused retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ecr_vault_vault::{Failure, SnapshotId, Vault};
use serde::Serialize;

use super::state::{ExpectedImage, RunManifest, manifest_key, put_once_json};
use super::{FanoutInput, FanoutOptions, item};
use crate::EngineError;
use crate::backup::{BackupOptions, store_repository_settings};
use crate::copy::Copier;
use crate::progress::NoProgress;
use crate::source::Source;

/// SQS takes at most 10 entries per SendMessageBatch.
const SEND_BATCH: usize = 10;

/// Attempts per SendMessageBatch entry before the item is reported as not queued.
const SEND_ATTEMPTS: u32 = 3;

/// What the scheduled invocation did when it fanned out.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutReport {
    pub run: SnapshotId,
    pub manifest_key: String,
    pub queued: usize,
    pub carried: usize,
    /// Images whose work item could not be sent; the run finalises without them.
    pub not_queued: Vec<Failure>,
    pub failures: Vec<Failure>,
    pub skipped: Vec<ecr_vault_vault::Skip>,
    pub warnings: Vec<String>,
}

/// Plans nothing itself: writes the run manifest for `input`, then queues one work item per
/// image. The manifest is durable before the first item is sent, so a worker always finds it.
pub async fn fan_out(
    source: &Source,
    vault: &Vault,
    sqs: &aws_sdk_sqs::Client,
    input: FanoutInput,
    opts: &BackupOptions,
    fan: &FanoutOptions,
) -> Result<FanoutReport, EngineError> {
    let now = input.decided_at.unwrap_or_else(Utc::now);
    let run = SnapshotId::new(now);
    // The run holds the vault until it is finalised (or times out): its carried records were
    // decided on recorded locks, which a bypassing GC must not pull away meanwhile.
    let run_lease =
        crate::lease::Lease::acquire_fanout(vault, &run, &opts.trigger, fan.run_timeout).await;
    if let Some(plan_lease) = &input.lease {
        plan_lease.release().await;
    }
    run_lease?;
    vault.ensure_layout(now).await?;
    let mut warnings = input.warnings;
    let copier = Copier::new(
        vault.clone(),
        source.registry().clone(),
        now,
        1,
        Arc::new(NoProgress),
    );
    let repositories = store_repository_settings(&copier, &input.repositories, &mut warnings).await;
    let mut expected: Vec<ExpectedImage> = input.work.iter().map(ExpectedImage::from).collect();
    expected.sort_by_key(|e| e.key());
    expected.dedup_by_key(|e| e.key());
    let manifest = RunManifest {
        version: 1,
        run: run.clone(),
        created: now,
        trigger: opts.trigger.clone(),
        source: source.describe(),
        filters: serde_json::to_value(opts.filters.spec()).unwrap_or_default(),
        expected,
        carried: input.carried,
        failures: input.failures,
        skipped: input.skipped,
        warnings,
        repositories,
    };
    let key = manifest_key(vault, &run);
    put_once_json(vault, &key, &manifest, now).await?;
    tracing::info!(
        run = run.as_str(),
        key,
        images = manifest.expected.len(),
        carried = manifest.carried.len(),
        "run manifest written; queueing work items"
    );
    let not_queued = send_items(sqs, &fan.queue_url, &run, &manifest.expected).await;
    Ok(FanoutReport {
        run,
        manifest_key: key,
        queued: manifest.expected.len() - not_queued.len(),
        carried: manifest.carried.len(),
        not_queued,
        failures: manifest.failures,
        skipped: manifest.skipped,
        warnings: manifest.warnings,
    })
}

/// Sends the work items in batches of 10, retrying entries SQS refused. Returns the images
/// that could not be queued.
async fn send_items(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    run: &SnapshotId,
    images: &[ExpectedImage],
) -> Vec<Failure> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let mut not_queued = Vec::new();
    for chunk in images.chunks(SEND_BATCH) {
        let mut pending: BTreeMap<String, &ExpectedImage> = chunk
            .iter()
            .enumerate()
            .map(|(i, img)| (i.to_string(), img))
            .collect();
        let mut last_error = String::new();
        for attempt in 0..SEND_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = sqs.send_message_batch().queue_url(queue_url);
            for (id, img) in &pending {
                let body = match item::encode(run, img) {
                    Ok(b) => b,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                match SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
                {
                    Ok(entry) => req = req.entries(entry),
                    Err(e) => last_error = e.to_string(),
                }
            }
            match req.send().await {
                Ok(out) => {
                    for ok in out.successful() {
                        pending.remove(ok.id());
                    }
                    for f in out.failed() {
                        last_error = format!("{}: {}", f.code(), f.message().unwrap_or_default());
                        if f.sender_fault() {
                            // The entry itself is refused; resending will not help.
                            if let Some(img) = pending.remove(f.id()) {
                                not_queued.push(failure(img, &last_error));
                            }
                        }
                    }
                }
                Err(e) => {
                    last_error = format!(
                        "SendMessageBatch: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    );
                }
            }
        }
        for img in pending.into_values() {
            not_queued.push(failure(img, &last_error));
        }
    }
    for f in &not_queued {
        tracing::error!(
            repository = f.repository,
            digest = f.reference,
            error = f.error,
            "work item not queued"
        );
    }
    not_queued
}

fn failure(img: &ExpectedImage, error: &str) -> Failure {
    Failure {
        repository: img.repository.to_string(),
        reference: img.digest.to_string(),
        error: error.to_owned(),
    }
}
