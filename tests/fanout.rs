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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::Utc;
use ecr_vault_engine::fanout::{
    self, Attempt, FanoutInput, FanoutOptions, IndexedManifest, WorkReport,
};
use ecr_vault_engine::trigger::{self, Batch, Delivery};
use ecr_vault_engine::{BackupOptions, Source, SourceImage};
use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_testkit::faultproxy::{Fault, FaultProxy, Gate, Rule};
use ecr_vault_testkit::fixtures::{ImageBuilder, PushedImage};
use ecr_vault_testkit::s3::s3_client;
use ecr_vault_testkit::{Stack, unique_name};
use ecr_vault_tests::{check_vault, registry_source, snapshot_names, sqs_client};
use ecr_vault_vault::{SnapshotId, Vault, VaultLocation, VaultOptions};
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

// ---------------------------------------------------------------------------------------------
// The worker in this process, as in a warm container: its S3 requests counted on the wire.

/// A vault whose S3 requests go through a counting proxy, and the stack's registry as the
/// source; the engine runs in the test's process.
struct InProcess {
    proxy: FaultProxy,
    bucket: String,
    vault: Vault,
    source: Source,
    opts: BackupOptions,
}

async fn in_process(stack: &Stack) -> Result<InProcess> {
    let proxy = FaultProxy::start(&stack.s3.endpoint()).await?;
    let bucket = unique_name("fanvault");
    stack.s3.create_locked_bucket(&bucket).await?;
    let vault = Vault::new(
        s3_client(&proxy.url(), &stack.s3.access_key, &stack.s3.secret_key),
        VaultLocation::parse(&format!("s3://{bucket}/vault"))?,
        VaultOptions {
            lock: ecr_vault_tests::lock(2),
            ..VaultOptions::default()
        },
    )?;
    Ok(InProcess {
        proxy,
        bucket,
        vault,
        source: registry_source(&stack.registry)?,
        opts: BackupOptions {
            trigger: "scheduled".into(),
            ..BackupOptions::default()
        },
    })
}

fn source_image(i: &PushedImage) -> Result<SourceImage> {
    Ok(SourceImage {
        repo: RepoName::parse(&i.repo)?,
        digest: Digest::parse(&i.digest)?,
        tags: i
            .tags
            .iter()
            .map(|t| Tag::parse(t))
            .collect::<Result<_, _>>()?,
        pushed_at: None,
        media_type: Some(i.media_type.clone()),
    })
}

/// Fans `images` out as the scheduled invocation does: the run manifest, then one work item
/// each on `q` (left there: the tests hand the items to the worker themselves).
async fn fan_out_in_process(
    p: &InProcess,
    sqs: &aws_sdk_sqs::Client,
    q: &Queues,
    images: &[PushedImage],
) -> Result<SnapshotId> {
    let input = FanoutInput {
        work: images.iter().map(source_image).collect::<Result<_>>()?,
        ..FanoutInput::default()
    };
    let fan = FanoutOptions::new(q.work.clone(), 0, Duration::from_secs(600));
    let r = fanout::fan_out(&p.source, &p.vault, sqs, input, &p.opts, &fan).await?;
    ensure!(r.not_queued.is_empty(), "{r:#?}");
    ensure!(r.queued == images.len(), "{r:#?}");
    Ok(r.run)
}

/// A delivery of the work item of `image` in `run`, as the SQS event carries it.
fn delivery(run: &SnapshotId, image: &PushedImage) -> Delivery {
    let body = json!({"action": "backup-image", "repository": image.repo,
                      "digest": image.digest, "tags": image.tags, "run": run.as_str()});
    Delivery {
        message_id: format!("m-{}", image.digest),
        receives: 1,
        body: Some(body.to_string()),
    }
}

/// The ListObjectsV2 requests the proxy saw under the run's staging prefix since its counts
/// were reset: each prefix relative to the run's, and whether it was shallow (delimiter `/`).
fn run_lists(p: &InProcess, run: &SnapshotId) -> Vec<(String, bool)> {
    let run_prefix = p.vault.location().run_prefix(run);
    let mut out: Vec<(String, bool)> = p
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .filter_map(|r| {
            let q = r.query?;
            query_param(&q, "list-type")?;
            let prefix = query_param(&q, "prefix").unwrap_or_default();
            let shallow = query_param(&q, "delimiter").as_deref() == Some("/");
            Some((prefix.strip_prefix(&run_prefix)?.to_owned(), shallow))
        })
        .collect();
    out.sort();
    out
}

/// The percent-decoded value of `key` in a query string.
fn query_param(query: &str, key: &str) -> Option<String> {
    let raw = query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if kv == key => Some(""),
        _ => None,
    })?;
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// GETs of the run's manifest since the proxy's counts were reset.
fn manifest_gets(p: &InProcess, run: &SnapshotId) -> u64 {
    let key = p.vault.location().run_manifest_key(run);
    p.proxy.count("GET", &format!("/{}/{key}", p.bucket))
}

/// Runs one batch through the SQS path in this process; every item must succeed.
async fn batch(p: &InProcess, run: &SnapshotId, images: &[&PushedImage]) -> Result<WorkReport> {
    p.proxy.reset_counts();
    let deliveries = images.iter().map(|i| delivery(run, i)).collect();
    let mut r = trigger::queued(
        &p.source,
        &p.vault,
        Batch::decode(deliveries),
        &p.opts,
        MAX_RECEIVES,
    )
    .await;
    ensure!(r.failed.is_empty(), "redelivered: {:?}", r.failed);
    ensure!(r.standalone.is_none(), "not worked as the run's items");
    let (name, w) = r.runs.pop().context("no fanned-out run in the report")?;
    ensure!(name == run.as_str() && r.runs.is_empty(), "{name}");
    ensure!(w.done.len() == images.len(), "{w:#?}");
    Ok(w)
}

/// The snapshot of `run`: the only one in the vault, complete, every image under every tag.
async fn one_complete_snapshot(
    vault: &Vault,
    run: &SnapshotId,
    images: &[PushedImage],
) -> Result<()> {
    ensure!(vault.list_snapshots().await? == std::slice::from_ref(run));
    let snap = vault.get_snapshot(run).await?.context("snapshot")?;
    ensure!(snap.run.complete, "{:#?}", snap.run);
    ensure!(snap.run.failures.is_empty(), "{:#?}", snap.run.failures);
    ensure!(snapshot_names(&snap) == names(images));
    let digests: BTreeSet<String> = snap.images.iter().map(|r| r.digest.to_string()).collect();
    let pushed: BTreeSet<String> = images.iter().map(|i| i.digest.clone()).collect();
    ensure!(digests == pushed, "{digests:?}");
    ensure!(snap.run.counts.images_copied == images.len() as u64);
    check_vault(vault, "COMPLIANCE", Utc::now()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lists_only_its_repositories_and_reads_the_manifest_once_per_process() -> Result<()>
{
    let stack = Stack::shared().await?;
    let sqs = sqs_client(stack);
    let ns = unique_name("fanshard");
    let (api, nested, tools) = (
        format!("{ns}/api"),
        format!("{ns}/api/nested"),
        format!("{ns}/tools"),
    );
    // `api/nested` sits inside `api`'s marker prefix: its markers must stay out of `api`'s LIST.
    let images = vec![
        push(stack, 801, &api, &["v1"]).await?,
        push(stack, 802, &api, &["v2"]).await?,
        push(stack, 803, &nested, &["v1"]).await?,
        push(stack, 804, &tools, &["v1", "latest"]).await?,
    ];
    let q = queues(&sqs, &ns).await?;
    let p = in_process(stack).await?;
    let run = fan_out_in_process(&p, &sqs, &q, &images).await?;
    let shallow = |kind: &str, repo: &str| (format!("{kind}/{repo}/"), true);

    // The first image of `api`: only `api`'s markers are listed, and `api` is not complete, so
    // nothing else is. The manifest is read, once.
    let w = batch(&p, &run, &[&images[0]]).await?;
    ensure!(w.finalised.is_none(), "{w:#?}");
    assert_eq!(
        run_lists(&p, &run),
        [shallow("done", &api), shallow("failed", &api)]
    );
    assert_eq!(manifest_gets(&p, &run), 1);

    // The rest of `api`, and `tools`: both complete, so the complete markers are listed (one
    // per repository); `api/nested` is not, so the run is not finalised. The manifest is not
    // read again in this process.
    let w = batch(&p, &run, &[&images[1], &images[3]]).await?;
    ensure!(w.finalised.is_none(), "{w:#?}");
    assert_eq!(
        run_lists(&p, &run),
        [
            ("complete/".to_owned(), false),
            shallow("done", &api),
            shallow("done", &tools),
            shallow("failed", &api),
            shallow("failed", &tools),
        ]
    );
    assert_eq!(manifest_gets(&p, &run), 0, "read again");

    // The last image completes `api/nested` and the run: the finaliser alone lists every
    // marker of the run (once), and writes the snapshot.
    let w = batch(&p, &run, &[&images[2]]).await?;
    let f = w
        .finalised
        .context("the last batch did not finalise the run")?;
    ensure!(f.complete && f.written, "{f:#?}");
    assert_eq!(
        run_lists(&p, &run),
        [
            (String::new(), false),
            ("complete/".to_owned(), false),
            shallow("done", &nested),
            shallow("failed", &nested),
        ]
    );
    assert_eq!(manifest_gets(&p, &run), 0, "read again");

    // Every repository with expected images has its complete marker; the snapshot is the
    // run's images, as before complete markers existed.
    let loc = p.vault.location();
    for repo in [&api, &nested, &tools] {
        let key = loc.run_complete_key(&run, &RepoName::parse(repo)?);
        ensure!(p.vault.head(&key).await?.is_some(), "no {key}");
    }
    one_complete_snapshot(&p.vault, &run, &images).await
}

/// A run fanned out in process: the workers' side, the run, its manifest (cached, as a worker
/// reads it), its images and its queues.
struct FannedOut {
    p: InProcess,
    run: SnapshotId,
    manifest: Arc<IndexedManifest>,
    images: Vec<PushedImage>,
    q: Queues,
}

/// Pushes `(seed, repository, tag)` images under a fresh namespace and fans them out.
async fn fanned_out(ns: &str, pushes: &[(u64, &str, &str)]) -> Result<FannedOut> {
    let stack = Stack::shared().await?;
    let sqs = sqs_client(stack);
    let ns = unique_name(ns);
    let mut images = Vec::new();
    for (seed, repo, tag) in pushes {
        images.push(push(stack, *seed, &format!("{ns}/{repo}"), &[tag]).await?);
    }
    let q = queues(&sqs, &ns).await?;
    let p = in_process(stack).await?;
    let run = fan_out_in_process(&p, &sqs, &q, &images).await?;
    let manifest = fanout::read_manifest_cached(&p.vault, &run)
        .await?
        .context("no manifest")?;
    Ok(FannedOut {
        p,
        run,
        manifest,
        images,
        q,
    })
}

/// One image as a single-attempt batch, not its last delivery.
fn attempt(i: &PushedImage) -> Result<Vec<Attempt>> {
    Ok(vec![Attempt {
        image: source_image(i)?,
        last_attempt: false,
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_finishing_one_repository_at_once_write_one_snapshot() -> Result<()> {
    let FannedOut {
        p,
        run,
        manifest,
        images,
        ..
    } = fanned_out(
        "fanrace",
        &[(811, "api", "v1"), (812, "api", "v2"), (813, "tools", "v1")],
    )
    .await?;
    let w = fanout::work(
        &p.source,
        &p.vault,
        &manifest,
        attempt(&images[2])?,
        vec![],
        &p.opts,
    )
    .await?;
    ensure!(w.finalised.is_none(), "{w:#?}");

    // The worst interleaving, forced: each worker's LIST of `api`'s markers (the first shallow
    // LIST it makes, after its own marker PUT) is held until both have sent theirs, so each
    // sees both markers and both go on to complete the repository and the run.
    let gate = Gate::new();
    let held = p.proxy.add_rule(
        Rule::new(&format!("/{}*", p.bucket), Fault::Hold(gate.clone()))
            .method("GET")
            .query("delimiter"),
    );
    let spawn = |image: &PushedImage| -> Result<_> {
        let (source, vault, manifest, opts) = (
            p.source.clone(),
            p.vault.clone(),
            manifest.clone(),
            p.opts.clone(),
        );
        let images = attempt(image)?;
        Ok(tokio::spawn(async move {
            fanout::work(&source, &vault, &manifest, images, vec![], &opts).await
        }))
    };
    let (a, b) = (spawn(&images[0])?, spawn(&images[1])?);
    p.proxy
        .wait_for("both workers' LISTs", Duration::from_secs(60), |px| {
            px.rule_stats(held).matches >= 2
        })
        .await?;
    gate.open();
    let (a, b) = (a.await??, b.await??);

    let finalised: Vec<_> = [&a, &b]
        .iter()
        .filter_map(|w| w.finalised.clone())
        .collect();
    assert_eq!(
        finalised.len(),
        2,
        "both saw the run complete: {a:#?} {b:#?}"
    );
    assert!(finalised.iter().all(|f| f.complete));
    assert_eq!(
        finalised.iter().filter(|f| f.written).count(),
        1,
        "one wrote the snapshot, the other found it: {finalised:#?}"
    );
    one_complete_snapshot(&p.vault, &run, &images).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_marked_without_complete_markers_is_finalised_by_the_next_schedule() -> Result<()> {
    let FannedOut {
        p,
        run,
        manifest,
        images,
        q,
    } = fanned_out("fancompat", &[(821, "api", "v1"), (822, "tools", "v1")]).await?;

    // `api` is marked as the previous version marked it: its done marker, no complete marker
    // (its PUT is refused here, so the worker stops there).
    let refused = p.proxy.add_rule(
        Rule::new(
            &format!("/{}/vault/staging/runs/*/complete/*", p.bucket),
            Fault::s3_error(403, "AccessDenied", "refused by the test"),
        )
        .method("PUT"),
    );
    let old = fanout::work(
        &p.source,
        &p.vault,
        &manifest,
        attempt(&images[0])?,
        vec![],
        &p.opts,
    )
    .await;
    ensure!(old.is_err(), "the complete marker was written: {old:#?}");
    p.proxy.remove_rule(refused);

    // A worker of this version completes `tools`, but no complete marker says `api` is done,
    // so it does not finalise: the run waits for the sweep.
    let w = fanout::work(
        &p.source,
        &p.vault,
        &manifest,
        attempt(&images[1])?,
        vec![],
        &p.opts,
    )
    .await?;
    ensure!(w.finalised.is_none(), "{w:#?}");
    ensure!(p.vault.list_snapshots().await?.is_empty());

    // The next scheduled run judges from the markers alone, and finalises it complete.
    let fan = FanoutOptions::new(q.work.clone(), 0, Duration::from_secs(600));
    let swept = fanout::finalise_pending(&p.vault, &fan, Utc::now()).await?;
    assert_eq!(swept.finalised.len(), 1, "{swept:#?}");
    assert!(swept.finalised[0].complete && swept.finalised[0].written);
    one_complete_snapshot(&p.vault, &run, &images).await
}
