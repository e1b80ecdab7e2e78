//! Fan-out on SQS, end to end: the backup function's real binary behind cargo-lambda's
//! emulator, the work queue and its dead-letter queue on moto's SQS, the vault on SeaweedFS.
//!
//! The scheduled invocation writes a run manifest and queues one work item per image; the test
//! then drains the queue the way Lambda's SQS event-source mapping does: ReceiveMessage, invoke
//! the function with an SQS event built from the messages, DeleteMessage for the successes and
//! leave the `batchItemFailures` on the queue, until the queue is empty. Where Lambda waits for
//! the visibility timeout before a failed message is delivered again, the test sets the
//! message's visibility to 0 (the same redelivery, without waiting for a clock); moto's
//! redrive policy counts the deliveries and moves the message to the DLQ after
//! `maxReceiveCount`, as SQS does.

mod lambda_emulator;
mod lambda_harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::Utc;
use ecr_vault_testkit::fixtures::{ImageBuilder, PushedImage};
use ecr_vault_testkit::{Stack, unique_name};
use ecr_vault_tests::sqs_client;
use ecr_vault_tests::{check_vault, snapshot_names};
use ecr_vault_vault::Vault;
use serde_json::{Value, json};

use lambda_harness::{Function, new_vault, push, sample, start_backup};

/// Deliveries before moto moves a work item to the DLQ.
const MAX_RECEIVES: u32 = 2;
/// Work items per worker invocation (the template's WorkerBatchSize).
const BATCH: i32 = 2;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

type Queues = ecr_vault_tests::WorkQueues;

async fn queues(sqs: &aws_sdk_sqs::Client, ns: &str) -> Result<Queues> {
    let name = ns.replace(['/', '.'], "-");
    ecr_vault_tests::work_queues(sqs, &name, MAX_RECEIVES, 300).await
}

/// The function, configured to fan out anything above one image onto `q`, plus `extra`.
async fn start(
    stack: &Stack,
    bucket: &str,
    ns: &str,
    q: &Queues,
    extra: &[(&str, &str)],
) -> Result<Function> {
    let repos = format!("{ns}/**");
    let moto = stack.moto.endpoint();
    let receives = MAX_RECEIVES.to_string();
    let mut env = vec![
        ("ECR_VAULT_REPOSITORIES", repos.as_str()),
        ("ECR_VAULT_WORK_QUEUE_URL", q.work.as_str()),
        ("AWS_ENDPOINT_URL_SQS", moto.as_str()),
        ("ECR_VAULT_FANOUT_THRESHOLD", "1"),
        ("ECR_VAULT_WORK_MAX_RECEIVES", receives.as_str()),
    ];
    env.extend_from_slice(extra);
    start_backup(stack, bucket, "", &env).await
}

/// Registers an image in moto's ECR that the registry does not have: every capture fails.
async fn ghost(stack: &Stack, repo: &str, seed: u64) -> Result<String> {
    let ghost = ImageBuilder::oci(seed).layers(&[1_500]).build()?;
    stack
        .moto
        .register_image(
            repo,
            &ghost.manifest,
            &ghost.media_type,
            &ghost.digest,
            &["v1"],
        )
        .await?;
    Ok(ghost.digest)
}

/// What draining the queue took.
#[derive(Debug, Default)]
struct Drained {
    invocations: usize,
    deliveries: usize,
    failures: usize,
}

/// Drains the work queue through the function the way Lambda's event-source mapping does.
async fn drain(f: &Function, sqs: &aws_sdk_sqs::Client, q: &Queues) -> Result<Drained> {
    let start = Instant::now();
    let mut d = Drained::default();
    loop {
        ensure!(
            start.elapsed() < DRAIN_TIMEOUT,
            "queue not drained after {DRAIN_TIMEOUT:?}: {d:?}\n{}",
            f.log()
        );
        let out = sqs
            .receive_message()
            .queue_url(&q.work)
            .max_number_of_messages(BATCH)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = out.messages();
        if messages.is_empty() {
            return Ok(d);
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.as_str())))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": q.work_arn,
                    "awsRegion": ecr_vault_testkit::s3::REGION,
                })
            })
            .collect();
        let resp = f.invoke(&json!({"Records": records})).await.ok();
        d.invocations += 1;
        d.deliveries += messages.len();
        let failed: BTreeSet<&str> = resp["batchItemFailures"]
            .as_array()
            .context("no batchItemFailures")?
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        for m in messages {
            let handle = m.receipt_handle().context("no receipt handle")?;
            if failed.contains(m.message_id().unwrap_or_default()) {
                d.failures += 1;
                sqs.change_message_visibility()
                    .queue_url(&q.work)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await?;
            } else {
                sqs.delete_message()
                    .queue_url(&q.work)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
}

/// The bodies of the messages in the DLQ.
async fn dlq_bodies(sqs: &aws_sdk_sqs::Client, q: &Queues) -> Result<Vec<Value>> {
    let out = sqs
        .receive_message()
        .queue_url(&q.dlq)
        .max_number_of_messages(10)
        .send()
        .await?;
    out.messages()
        .iter()
        .map(|m| Ok(serde_json::from_str(m.body().unwrap_or_default())?))
        .collect()
}

async fn push_images(stack: &Stack, ns: &str, seed: u64) -> Result<Vec<PushedImage>> {
    Ok(vec![
        push(stack, seed, &format!("{ns}/api"), &["v1", "latest"]).await?,
        push(stack, seed + 1, &format!("{ns}/api"), &["v2"]).await?,
        push(stack, seed + 2, &format!("{ns}/tools/worker"), &["v1"]).await?,
    ])
}

fn names(images: &[PushedImage]) -> BTreeSet<String> {
    images
        .iter()
        .flat_map(|i| i.tags.iter().map(move |t| format!("{}:{t}", i.repo)))
        .collect()
}

/// Runs the scheduled invocation and checks it fanned out `n` images without copying them.
async fn schedule(f: &Function, vault: &Vault, n: u64) -> Result<String> {
    let resp = f.invoke(&sample("schedule-scheduler.json", &[])).await.ok();
    ensure!(resp["fanOut"] == true, "did not fan out: {resp:#}");
    ensure!(resp["queued"] == n, "{resp:#}");
    ensure!(
        resp["notQueued"].as_array().is_some_and(Vec::is_empty),
        "{resp:#}"
    );
    // Nothing is in the snapshot list until the workers are done.
    ensure!(
        vault.list_snapshots().await?.is_empty(),
        "a snapshot before any work item ran"
    );
    resp["run"].as_str().map(str::to_owned).context("no run id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanned_out_run_ends_with_one_complete_snapshot_of_every_image() -> Result<()> {
    let stack = Stack::shared().await?;
    let sqs = sqs_client(stack);
    let ns = unique_name("fanok");
    let images = push_images(stack, &ns, 701).await?;
    let q = queues(&sqs, &ns).await?;
    let (bucket, vault) = new_vault(stack, "").await?;
    let f = start(stack, &bucket, &ns, &q, &[]).await?;

    let run = schedule(&f, &vault, images.len() as u64).await?;
    let drained = drain(&f, &sqs, &q).await?;
    assert_eq!(drained.failures, 0, "{drained:?}\n{}", f.log());
    assert_eq!(drained.deliveries, images.len(), "{drained:?}");

    // Exactly one snapshot, the run's, complete, with every image under every tag.
    let ids = vault.list_snapshots().await?;
    assert_eq!(
        ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        [run.as_str()]
    );
    let snap = vault.get_snapshot(&ids[0]).await?.context("snapshot")?;
    assert!(snap.run.complete, "{:#?}", snap.run);
    assert_eq!(snap.run.trigger, "scheduled");
    assert!(snap.run.failures.is_empty(), "{:#?}", snap.run.failures);
    assert_eq!(snapshot_names(&snap), names(&images));
    assert_eq!(snap.run.counts.images_copied, images.len() as u64);
    // The vault's invariants: one version per key, verified blobs, locks, closures.
    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await?;
    for img in &images {
        let hex = img.digest.trim_start_matches("sha256:");
        assert!(
            contents.manifests.contains_key(hex),
            "{} missing",
            img.digest
        );
    }
    assert!(dlq_bodies(&sqs, &q).await?.is_empty());
    // The batch that completed the run counts one full snapshot (the no-full-snapshot alarm's
    // metric); the other batches and the scheduled invocation count none.
    let full_snapshots = |f: &Function| -> u64 {
        f.metrics()
            .iter()
            .filter_map(|m| m["FullSnapshots"].as_u64())
            .sum()
    };
    assert_eq!(full_snapshots(&f), 1, "{:#?}", f.metrics());

    // A redelivered item (SQS is at-least-once) is a cheap no-op: no new snapshot.
    let item = json!({"action": "backup-image", "repository": images[0].repo,
                      "digest": images[0].digest, "tags": ["v1"], "run": run});
    sqs.send_message()
        .queue_url(&q.work)
        .message_body(item.to_string())
        .send()
        .await?;
    let again = drain(&f, &sqs, &q).await?;
    assert_eq!((again.deliveries, again.failures), (1, 0), "{again:?}");
    assert_eq!(vault.list_snapshots().await?, ids);
    let after = check_vault(&vault, "COMPLIANCE", Utc::now()).await?;
    assert_eq!(
        after.versions, contents.versions,
        "the redelivery wrote nothing"
    );
    assert_eq!(full_snapshots(&f), 1, "counted once: {:#?}", f.metrics());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_item_that_keeps_failing_ends_in_the_dlq_and_the_run_is_reported_incomplete()
-> Result<()> {
    let stack = Stack::shared().await?;
    let sqs = sqs_client(stack);
    let ns = unique_name("fanbad");
    let images = push_images(stack, &ns, 731).await?;
    // Known to ECR but not in the registry: every delivery of its work item fails.
    let ghost_repo = format!("{ns}/ghost");
    let ghost_digest = ghost(stack, &ghost_repo, 735).await?;
    let q = queues(&sqs, &ns).await?;
    let (bucket, vault) = new_vault(stack, "").await?;
    let f = start(stack, &bucket, &ns, &q, &[]).await?;

    let run = schedule(&f, &vault, images.len() as u64 + 1).await?;
    let drained = drain(&f, &sqs, &q).await?;
    assert_eq!(
        drained.failures, MAX_RECEIVES as usize,
        "the ghost failed on each delivery: {drained:?}"
    );

    // After its last delivery the item is in the DLQ (the alarm's metric), unchanged.
    let dlq = dlq_bodies(&sqs, &q).await?;
    assert_eq!(dlq.len(), 1, "{dlq:#?}");
    assert_eq!(dlq[0]["repository"], ghost_repo.as_str());
    assert_eq!(dlq[0]["digest"], ghost_digest.as_str());
    assert_eq!(dlq[0]["run"], run.as_str());

    // The run is finalised as incomplete: the other images are in its snapshot, the failure
    // names the missing one.
    let ids = vault.list_snapshots().await?;
    assert_eq!(
        ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        [run.as_str()]
    );
    let snap = vault.get_snapshot(&ids[0]).await?.context("snapshot")?;
    assert!(!snap.run.complete, "{:#?}", snap.run);
    assert_eq!(snapshot_names(&snap), names(&images));
    assert_eq!(snap.run.failures.len(), 1, "{:#?}", snap.run.failures);
    let failure = &snap.run.failures[0];
    assert_eq!(failure.repository, ghost_repo);
    assert_eq!(failure.reference, ghost_digest);
    assert_eq!(snap.run.counts.images_failed, 1);
    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await?;
    assert!(
        !contents
            .blobs
            .contains_key(ghost_digest.trim_start_matches("sha256:"))
    );

    // The next scheduled run has nothing left to finalise (the worker did), and fans out again.
    let resp = f
        .invoke(&sample("schedule-eventbridge.json", &[]))
        .await
        .ok();
    let earlier = &resp["earlierRuns"];
    if !earlier["finalised"].as_array().is_some_and(Vec::is_empty)
        || !earlier["pending"].as_array().is_some_and(Vec::is_empty)
    {
        bail!("the first run should be finished: {resp:#}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_items_never_all_report_is_finalised_incomplete_by_the_next_schedule()
-> Result<()> {
    let stack = Stack::shared().await?;
    let sqs = sqs_client(stack);
    let ns = unique_name("fanlost");
    let images = push_images(stack, &ns, 761).await?;
    let ghost_repo = format!("{ns}/ghost");
    let ghost_digest = ghost(stack, &ghost_repo, 765).await?;
    let q = queues(&sqs, &ns).await?;
    let (bucket, vault) = new_vault(stack, "").await?;
    // The function believes items get 5 deliveries while the queue gives 2: no worker ever
    // sees the ghost's last delivery, as when a message is lost. A run times out after 1 s.
    let f = start(
        stack,
        &bucket,
        &ns,
        &q,
        &[
            ("ECR_VAULT_WORK_MAX_RECEIVES", "5"),
            ("ECR_VAULT_FANOUT_RUN_TIMEOUT_SECS", "1"),
        ],
    )
    .await?;

    let run = schedule(&f, &vault, images.len() as u64 + 1).await?;
    drain(&f, &sqs, &q).await?;
    assert_eq!(dlq_bodies(&sqs, &q).await?.len(), 1);
    // The other images are done, but no snapshot: the run waits for the ghost.
    assert!(vault.list_snapshots().await?.is_empty());

    let run_time = ecr_vault_vault::SnapshotId::parse(&run)?
        .time()
        .context("run time")?;
    let timed_out = run_time + chrono::Duration::seconds(1);
    if let Ok(left) = (timed_out - Utc::now()).to_std() {
        // Waiting for the run's own timeout to pass, a wall-clock condition.
        tokio::time::sleep(left).await;
    }
    let resp = f.invoke(&sample("schedule-scheduler.json", &[])).await.ok();
    let finalised = resp["earlierRuns"]["finalised"]
        .as_array()
        .context("no earlierRuns")?;
    assert_eq!(finalised.len(), 1, "{resp:#}");
    assert_eq!(finalised[0]["run"], run.as_str());
    assert_eq!(finalised[0]["complete"], false);

    let snap = vault
        .get_snapshot(&ecr_vault_vault::SnapshotId::parse(&run)?)
        .await?
        .context("the first run's snapshot")?;
    assert!(!snap.run.complete);
    assert_eq!(snapshot_names(&snap), names(&images));
    assert_eq!(snap.run.failures.len(), 1, "{:#?}", snap.run.failures);
    assert_eq!(snap.run.failures[0].reference, ghost_digest);
    assert!(
        snap.run.failures[0].error.contains("no worker reported"),
        "{:#?}",
        snap.run.failures
    );
    check_vault(&vault, "COMPLIANCE", Utc::now()).await?;
    Ok(())
}
