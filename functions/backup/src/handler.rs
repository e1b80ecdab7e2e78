//! From a recognised event to engine calls, and back to a JSON response.
//!
//! | Event | Engine call | Response |
//! |---|---|---|
//! | schedule (both shapes) | [`backup`] with the configured filters, trigger `scheduled` | run summary |
//! | ECR PUSH | [`backup_listing`] of that one image, trigger `push` | run summary |
//! | ECR DELETE | [`write_audit`] under `events/` | the audit key |
//! | schedule, plan above `ECR_VAULT_FANOUT_THRESHOLD` | [`fanout::fan_out`]: run manifest + work items | fan-out summary |
//! | SQS work items of a fanned-out run | [`fanout::work`]: done markers, snapshot when complete | `batchItemFailures` |
//! | other SQS work items | one [`backup_listing`] for the batch, trigger `work-item` | `batchItemFailures` |
//!
//! Every scheduled invocation first finalises earlier fanned-out runs that are complete or
//! timed out ([`fanout::finalise_pending`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use ecr_vault_ecr::EcrImage;
use ecr_vault_engine::audit::{AuditInput, AuditRecord, write_audit};
use ecr_vault_engine::fanout::{
    self, FanoutInput, FanoutOptions, Finalised, PendingReport, RunManifest, Unavailable,
    WorkImage, WorkReport, finalise_pending, read_manifest,
};
use ecr_vault_engine::metrics::{backup_emf, finalised_emf, work_emf};
use ecr_vault_engine::{
    BackupOptions, BackupReport, EngineError, Listing, NoProgress, PlanOptions, RegistryConfig,
    Source, SourceImage, backup, backup_listing, backup_plan, open_source, open_vault, plan,
};
use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{Counts, Failure, SnapshotId, Vault, WriteOutcome};
use futures::StreamExt as _;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::config::{Config, MAX_LAMBDA_TIMEOUT};
use crate::event::{
    EcrImageActionDetail, Incoming, SqsRecord, WorkItem, classify, image_action, parse_work_item,
    shown,
};

/// Why an invocation failed. `kind` becomes the Lambda `errorType`.
#[derive(Debug)]
pub struct FnError {
    pub kind: &'static str,
    pub message: String,
}

impl FnError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        FnError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl From<FnError> for Diagnostic {
    fn from(e: FnError) -> Self {
        Diagnostic {
            error_type: e.kind.to_owned(),
            error_message: e.message,
        }
    }
}

impl From<EngineError> for FnError {
    fn from(e: EngineError) -> Self {
        FnError::new("EngineError", e.to_string())
    }
}

/// Everything an invocation needs, built once per cold start.
pub struct App {
    cfg: Config,
    sdk: SdkConfig,
    vault: Vault,
    /// The work queue's client, when `ECR_VAULT_WORK_QUEUE_URL` is set.
    sqs: Option<aws_sdk_sqs::Client>,
    /// Built on first use: without `ECR_VAULT_REGISTRY_URL` it asks ECR for the endpoint.
    source: OnceCell<Source>,
}

impl App {
    /// Builds the clients. No network I/O.
    pub async fn new(cfg: Config) -> Result<Self, EngineError> {
        let sdk = ecr_vault_engine::aws_config().await;
        let vault = open_vault(&sdk, &cfg.vault)?;
        let sqs = cfg
            .work_queue_url
            .as_ref()
            .map(|_| aws_sdk_sqs::Client::new(&sdk));
        Ok(App {
            cfg,
            sdk,
            vault,
            sqs,
            source: OnceCell::new(),
        })
    }

    async fn source(&self) -> Result<&Source, EngineError> {
        self.source
            .get_or_try_init(|| async {
                let cfg = RegistryConfig::Ecr {
                    registry_url: self.cfg.registry_url.clone(),
                    registry_id: None,
                };
                open_source(&self.sdk, &cfg).await
            })
            .await
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, FnError> {
        let (payload, ctx) = event.into_parts();
        let deadline = deadline_instant(ctx.deadline(), SystemTime::now());
        match classify(payload).map_err(|e| FnError::new("UnsupportedEvent", e.to_string()))? {
            Incoming::Schedule { shape, time } => {
                tracing::info!(shape, time = time.as_deref(), "scheduled backup");
                self.scheduled(deadline).await
            }
            Incoming::EcrImageAction(e) => self.image_action(&e, deadline).await,
            Incoming::Sqs(records) => Ok(self.work_items(records, deadline).await),
        }
    }

    fn options(&self, trigger: &str, deadline: Instant) -> BackupOptions {
        BackupOptions {
            filters: self.cfg.filters.clone(),
            image_concurrency: self.cfg.image_concurrency,
            trigger: trigger.to_owned(),
            deadline: Some(deadline),
            deadline_margin: self.cfg.deadline_margin,
            ..BackupOptions::default()
        }
    }

    /// Prints the run's metrics as one EMF line on stdout.
    fn emit_metrics(&self, report: &BackupReport, trigger: &str) {
        let now = chrono::Utc::now().timestamp_millis();
        let full = is_full_snapshot(trigger, report.complete, report.snapshot.is_some());
        println!(
            "{}",
            backup_emf(report, &self.cfg.function_name, trigger, full, now)
        );
    }

    /// The metrics of fanned-out runs finalised by this scheduled invocation.
    fn emit_finalised(&self, f: &Finalised) {
        let now = chrono::Utc::now().timestamp_millis();
        // A fanned-out run is a scheduled one; counted once, by whoever wrote its snapshot.
        let full = is_full_snapshot("scheduled", f.complete, f.written);
        println!("{}", finalised_emf(f, &self.cfg.function_name, full, now));
    }

    fn fanout_options(&self) -> Option<FanoutOptions> {
        let queue_url = self.cfg.work_queue_url.clone()?;
        Some(FanoutOptions {
            queue_url,
            threshold_images: self.cfg.fanout_threshold,
            run_timeout: self.cfg.fanout_run_timeout,
            // Long enough that a run is looked at by several nightly runs after its timeout.
            lookback: (self.cfg.fanout_run_timeout * 4).max(Duration::from_secs(7 * 86_400)),
        })
    }

    /// Without a work queue: the whole run inline. With one: finalise earlier fanned-out
    /// runs, list, then back up inline when the work fits the threshold, or fan out.
    async fn scheduled(&self, deadline: Instant) -> Result<Value, FnError> {
        let source = self.source().await?;
        let opts = self.options("scheduled", deadline);
        let (Some(sqs), Some(fan)) = (&self.sqs, self.fanout_options()) else {
            let report = backup(source, &self.vault, &opts, Arc::new(NoProgress)).await?;
            self.emit_metrics(&report, "scheduled");
            log_report(&report, "scheduled");
            return Ok(summary(&report, "scheduled"));
        };
        let earlier = match finalise_pending(&self.vault, &fan, chrono::Utc::now()).await {
            Ok(p) => p,
            Err(e) => {
                // Tonight's run matters more; the next one looks again.
                tracing::error!(error = %e, "could not check earlier fanned-out runs");
                PendingReport::default()
            }
        };
        for f in &earlier.finalised {
            log_finalised(f);
            self.emit_finalised(f);
        }
        // The planner decides the cohort: only new images, and unchanged ones whose locks
        // need a look, are work; the rest are carried without a request.
        let plan_opts = PlanOptions {
            filters: opts.filters.clone(),
            concurrency: opts.image_concurrency.max(4),
            fetch_sizes: false,
            lease: Some(ecr_vault_engine::lease::LeaseRequest {
                holder: opts.trigger.clone(),
                deadline: opts.deadline,
            }),
        };
        let plan = plan(source, &self.vault, &plan_opts).await?;
        let (policy, now) = (self.vault.options().lock, chrono::Utc::now());
        let work = plan.work_count(policy, now);
        let mut out = if fan.should_fan_out(work) {
            let input = FanoutInput::from_plan(plan, policy, now);
            let report = fanout::fan_out(source, &self.vault, sqs, input, &opts, &fan).await?;
            tracing::info!(
                run = report.run.as_str(),
                queued = report.queued,
                not_queued = report.not_queued.len(),
                "scheduled run fanned out"
            );
            let mut v =
                serde_json::to_value(&report).unwrap_or_else(|e| json!({"error": e.to_string()}));
            if let Value::Object(m) = &mut v {
                m.insert("trigger".into(), Value::from("scheduled"));
                m.insert("fanOut".into(), Value::from(true));
            }
            v
        } else {
            let report =
                backup_plan(source, &self.vault, plan, &opts, Arc::new(NoProgress)).await?;
            self.emit_metrics(&report, "scheduled");
            log_report(&report, "scheduled");
            summary(&report, "scheduled")
        };
        if let Value::Object(m) = &mut out {
            m.insert(
                "earlierRuns".into(),
                serde_json::to_value(&earlier).unwrap_or_default(),
            );
        }
        Ok(out)
    }

    async fn image_action(
        &self,
        e: &EventBridgeEvent<EcrImageActionDetail>,
        deadline: Instant,
    ) -> Result<Value, FnError> {
        let d = &e.detail;
        let action = d.action_type.as_deref().unwrap_or_default();
        if !matches!(action, "PUSH" | "DELETE") {
            return Err(FnError::new(
                "UnsupportedEvent",
                format!(
                    "an \"ECR Image Action\" with action-type {}: only PUSH and DELETE are \
                     handled; nothing was written",
                    d.action_type
                        .as_deref()
                        .map_or_else(|| "missing".to_owned(), shown)
                ),
            ));
        }
        if let Some(result) = d.result.as_deref()
            && result != "SUCCESS"
        {
            tracing::info!(
                action,
                result,
                "ignoring an ECR action that did not succeed"
            );
            return Ok(json!({
                "trigger": action.to_ascii_lowercase(),
                "ignored": format!("result is {}, not SUCCESS", shown(result)),
            }));
        }
        let a = image_action(d).map_err(|m| {
            FnError::new(
                "InvalidEvent",
                format!("ECR {action} event refused, nothing was written: {m}"),
            )
        })?;
        if action == "DELETE" {
            return self.audit_delete(e).await;
        }
        self.push(&a.repository, &a.digest, a.tag, deadline).await
    }

    async fn audit_delete(
        &self,
        e: &EventBridgeEvent<EcrImageActionDetail>,
    ) -> Result<Value, FnError> {
        let d = &e.detail;
        let record = AuditRecord::new(&AuditInput {
            time: e.time,
            account: e.account.as_deref(),
            region: e.region.as_deref(),
            repository: d.repository_name.as_deref(),
            digest: d.image_digest.as_deref(),
            tag: d.image_tag.as_deref(),
            event_id: e.id.as_deref(),
            action: Some("DELETE"),
        })
        .map_err(|err| {
            FnError::new(
                "InvalidEvent",
                format!("ECR DELETE event refused, nothing was written: {err}"),
            )
        })?;
        let (key, outcome) = write_audit(&self.vault, &record).await?;
        let image = format!("{}@{}", record.repository, record.digest);
        tracing::info!(%image, key, ?outcome, "recorded an ECR delete; nothing deleted");
        Ok(json!({
            "trigger": "delete",
            "image": image,
            "auditKey": key,
            "written": outcome == WriteOutcome::Written,
        }))
    }

    async fn push(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<Tag>,
        deadline: Instant,
    ) -> Result<Value, FnError> {
        let image = format!("{repo}@{digest}");
        let filters = &self.cfg.filters;
        if !filters.repository(repo.as_str()) {
            return Ok(not_run(
                "push",
                skipped(
                    repo,
                    digest,
                    "repository not selected by ECR_VAULT_REPOSITORIES / \
                     ECR_VAULT_EXCLUDE_REPOSITORIES",
                ),
            ));
        }
        let source = self.source().await?;
        let described = describe(source, repo, digest, tag.iter().cloned().collect())
            .await
            .map_err(|e| FnError::new("EngineError", format!("{image}: {e}")))?;
        let img = match described {
            None => {
                tracing::info!(%image, "pushed image is gone from ECR; nothing to back up");
                return Ok(not_run(
                    "push",
                    skipped(
                        repo,
                        digest,
                        "image no longer in ECR (deleted since the push); nothing to back up",
                    ),
                ));
            }
            Some(i) if i.is_archived() => {
                return Ok(not_run(
                    "push",
                    skipped(
                        repo,
                        digest,
                        "image is archived (archived images cannot be pulled); not backed up",
                    ),
                ));
            }
            Some(i) => i,
        };
        // The image's tags as ECR lists them now, plus the pushed tag, through the tag filters.
        let mut warnings = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        for t in img.tags.iter().map(String::as_str) {
            match Tag::parse(t) {
                Ok(t) => tags.push(t),
                Err(e) => warnings.push(format!("{image}: {e}")),
            }
        }
        tags.extend(tag);
        tags.retain(|t| filters.tag(t.as_str()));
        tags.sort();
        tags.dedup();
        if tags.is_empty() && filters.has_tag_filter() {
            return Ok(not_run(
                "push",
                skipped(
                    repo,
                    digest,
                    "no tag selected by ECR_VAULT_TAGS / ECR_VAULT_EXCLUDE_TAGS",
                ),
            ));
        }
        let listing = Listing {
            images: vec![SourceImage {
                repo: repo.clone(),
                digest: digest.clone(),
                tags,
                pushed_at: img.pushed_at,
                media_type: img.manifest_media_type,
            }],
            warnings,
            ..Listing::default()
        };
        let opts = self.options("push", deadline);
        let report =
            backup_listing(source, &self.vault, listing, &opts, Arc::new(NoProgress)).await?;
        self.emit_metrics(&report, "push");
        log_report(&report, "push");
        if let Some(f) = report.failures.first() {
            return Err(FnError::new(
                "BackupFailed",
                format!("{image}: {}", f.error),
            ));
        }
        if !report.deferred.is_empty() {
            return Err(FnError::new(
                "DeadlineExceeded",
                format!("{image}: not started, the invocation ran out of time; it will be retried"),
            ));
        }
        Ok(summary(&report, "push"))
    }

    /// Backs up the valid work items of a batch; answers which messages failed. Items of a
    /// fanned-out run (its manifest is in the vault) are marked done for that run; others
    /// (no run, or a run that did not fan out) are backed up as one run of their own.
    async fn work_items(&self, records: Vec<SqsRecord>, deadline: Instant) -> Value {
        let mut failed: Vec<String> = Vec::new();
        let mut wanted: BTreeMap<ItemKey, Wanted> = BTreeMap::new();
        for r in records {
            match parse_work_item(r.body.as_deref()) {
                Ok(WorkItem {
                    repository,
                    digest,
                    tags,
                    run,
                }) => {
                    tracing::debug!(message_id = r.message_id, run, "work item");
                    let entry = wanted.entry((run, repository, digest)).or_default();
                    entry.ids.push(r.message_id);
                    entry.tags.extend(tags);
                    entry.receives = entry.receives.max(r.receive_count.unwrap_or(1));
                }
                Err(why) => {
                    tracing::warn!(message_id = r.message_id, why, "refused a work item");
                    failed.push(r.message_id);
                }
            }
        }
        if !wanted.is_empty() {
            failed.extend(self.back_up_items(wanted, deadline).await);
        }
        failed.sort();
        failed.dedup();
        json!({
            "batchItemFailures": failed
                .iter()
                .map(|id| json!({"itemIdentifier": id}))
                .collect::<Vec<_>>(),
        })
    }

    /// Returns the message ids whose image was not backed up.
    async fn back_up_items(
        &self,
        wanted: BTreeMap<ItemKey, Wanted>,
        deadline: Instant,
    ) -> Vec<String> {
        let all_ids = || wanted.values().flat_map(|w| w.ids.clone()).collect();
        let source = match self.source().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the source registry");
                return all_ids();
            }
        };
        // The manifests of the runs named in the batch; a run without one did not fan out.
        let mut manifests: BTreeMap<String, Option<RunManifest>> = BTreeMap::new();
        for (run, _, _) in wanted.keys() {
            let Some(run) = run else { continue };
            if manifests.contains_key(run) {
                continue;
            }
            let id = match SnapshotId::parse(run) {
                Ok(id) => id,
                Err(_) => continue,
            };
            match read_manifest(&self.vault, &id).await {
                Ok(m) => {
                    manifests.insert(run.clone(), m);
                }
                Err(e) => {
                    // Without its manifest the item cannot be accounted for: retry later.
                    tracing::error!(run, error = %e, "cannot read the run manifest");
                    return all_ids();
                }
            }
        }
        let described: Vec<_> = futures::stream::iter(wanted.iter())
            .map(|((run, repo, digest), w)| async move {
                let r = describe(source, repo, digest, w.tags.clone()).await;
                (run, repo, digest, w, r)
            })
            .buffer_unordered(self.cfg.image_concurrency.max(1))
            .collect()
            .await;
        let mut failed = Vec::new();
        let mut images = Vec::new();
        // The message ids behind each image that goes into the standalone run.
        let mut pending: Vec<(String, &Vec<String>)> = Vec::new();
        // Per fanned-out run: images to capture, images that cannot be, message ids.
        let mut fanned: BTreeMap<&str, FannedItems> = BTreeMap::new();
        for (run, repo, digest, w, r) in described {
            let image = format!("{repo}@{digest}");
            let run = run
                .as_deref()
                .filter(|r| matches!(manifests.get(*r), Some(Some(_))));
            let last_attempt = w.receives >= self.cfg.work_max_receives;
            let unavailable = |reason: &str| Unavailable {
                repository: repo.clone(),
                digest: digest.clone(),
                reason: reason.to_owned(),
            };
            let i = match r {
                Err(e) => {
                    tracing::warn!(image, error = %e, "describe failed");
                    failed.extend(w.ids.iter().cloned());
                    if let Some(run) = run
                        && last_attempt
                    {
                        let f = fanned.entry(run).or_default();
                        f.unavailable
                            .push(unavailable(&format!("ECR DescribeImages failed: {e}")));
                    }
                    continue;
                }
                Ok(None) => {
                    tracing::info!(image, "work item's image is gone from ECR; nothing to do");
                    if let Some(run) = run {
                        let f = fanned.entry(run).or_default();
                        f.unavailable.push(unavailable(
                            "image no longer in ECR (deleted after the run was planned)",
                        ));
                    }
                    continue;
                }
                Ok(Some(i)) if i.is_archived() => {
                    tracing::info!(image, "work item's image is archived; not backed up");
                    if let Some(run) = run {
                        let f = fanned.entry(run).or_default();
                        f.unavailable.push(unavailable(
                            "image is archived (archived images cannot be pulled)",
                        ));
                    }
                    continue;
                }
                Ok(Some(i)) => i,
            };
            let mut tags = w.tags.clone();
            tags.sort();
            tags.dedup();
            let img = SourceImage {
                repo: repo.clone(),
                digest: digest.clone(),
                tags,
                pushed_at: i.pushed_at,
                media_type: i.manifest_media_type,
            };
            match run {
                Some(run) => {
                    let f = fanned.entry(run).or_default();
                    f.images.push(WorkImage {
                        image: img,
                        last_attempt,
                    });
                    f.ids.insert((repo.clone(), digest.clone()), &w.ids);
                }
                None => {
                    images.push(img);
                    pending.push((image, &w.ids));
                }
            }
        }
        let opts = self.options("work-item", deadline);
        for (run, f) in fanned {
            let Some(Some(manifest)) = manifests.get(run) else {
                continue;
            };
            match fanout::work(
                source,
                &self.vault,
                manifest,
                f.images,
                f.unavailable,
                &opts,
            )
            .await
            {
                Ok(report) => {
                    for key in &report.retry {
                        if let Some(ids) = f.ids.get(key) {
                            failed.extend(ids.iter().cloned());
                        }
                    }
                    log_work(run, &report);
                    let now = chrono::Utc::now().timestamp_millis();
                    let full = report
                        .finalised
                        .as_ref()
                        .is_some_and(|f| is_full_snapshot("scheduled", f.complete, f.written));
                    println!("{}", work_emf(&report, &self.cfg.function_name, full, now));
                }
                Err(e) => {
                    tracing::error!(run, error = %e, "work items of a fanned-out run failed");
                    failed.extend(f.ids.values().flat_map(|ids| ids.iter().cloned()));
                }
            }
        }
        if images.is_empty() {
            return failed;
        }
        let listing = Listing {
            images,
            ..Listing::default()
        };
        match backup_listing(source, &self.vault, listing, &opts, Arc::new(NoProgress)).await {
            Ok(report) => {
                self.emit_metrics(&report, "work-item");
                log_report(&report, "work-item");
                for (image, ids) in pending {
                    let bad = report
                        .failures
                        .iter()
                        .any(|f| format!("{}@{}", f.repository, f.reference) == image)
                        || report.deferred.contains(&image);
                    if bad {
                        failed.extend(ids.iter().cloned());
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "work-item run failed");
                for (_, ids) in pending {
                    failed.extend(ids.iter().cloned());
                }
            }
        }
        failed
    }
}

/// A work item's run (if any), repository and digest.
type ItemKey = (Option<String>, RepoName, Digest);

/// The messages asking for one image, merged.
#[derive(Default)]
struct Wanted {
    ids: Vec<String>,
    tags: Vec<Tag>,
    /// The highest delivery count among them.
    receives: u32,
}

/// The items of one fanned-out run in a batch.
#[derive(Default)]
struct FannedItems<'a> {
    images: Vec<WorkImage>,
    unavailable: Vec<Unavailable>,
    ids: BTreeMap<(RepoName, Digest), &'a Vec<String>>,
}

fn log_work(run: &str, r: &WorkReport) {
    tracing::info!(
        run,
        done = r.done.len(),
        retry = r.retry.len(),
        failed_final = r.failed_final.len(),
        "work items processed"
    );
    if let Some(f) = &r.finalised {
        log_finalised(f);
    }
}

fn log_finalised(f: &Finalised) {
    if f.complete {
        tracing::info!(
            run = f.run.as_str(),
            snapshot = f.snapshot_key,
            images = f.images,
            written = f.written,
            "fanned-out run complete: snapshot written"
        );
    } else {
        tracing::warn!(
            run = f.run.as_str(),
            snapshot = f.snapshot_key,
            images = f.images,
            failed = f.failures.len(),
            written = f.written,
            "fanned-out run INCOMPLETE: snapshot written without the failed images"
        );
    }
}

/// Looks one image up by digest: ECR's record of it, or None when it is gone.
async fn describe(
    source: &Source,
    repo: &RepoName,
    digest: &Digest,
    tags: Vec<Tag>,
) -> Result<Option<EcrImage>, String> {
    match source {
        Source::Ecr { ecr, .. } => ecr
            .describe_image(repo.as_str(), &digest.to_string())
            .await
            .map_err(|e| e.to_string()),
        // Not used by the function (its source is always ECR), kept total.
        Source::Registry { .. } => Ok(Some(EcrImage {
            digest: digest.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: None,
            size: None,
            manifest_media_type: None,
            artifact_media_type: None,
            subject: None,
            status: None,
        })),
    }
}

/// The invocation deadline as an `Instant`. A deadline that is not in the future cannot come
/// from Lambda (local emulators send a constant); Lambda's 900 s maximum is assumed then.
pub fn deadline_instant(deadline: SystemTime, now: SystemTime) -> Instant {
    match deadline.duration_since(now) {
        Ok(left) if !left.is_zero() => Instant::now() + left,
        _ => {
            let ms = deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            tracing::warn!(
                deadline_ms = ms as u64,
                "the invocation deadline is not in the future; assuming Lambda's 900 s maximum"
            );
            Instant::now() + MAX_LAMBDA_TIMEOUT
        }
    }
}

fn skipped(repo: &RepoName, digest: &Digest, why: &str) -> Failure {
    Failure {
        repository: repo.to_string(),
        reference: digest.to_string(),
        error: why.to_owned(),
    }
}

/// The response of a push that needed no run: nothing was written.
fn not_run(trigger: &str, skip: Failure) -> Value {
    tracing::info!(
        image = %format!("{}@{}", skip.repository, skip.reference),
        reason = skip.error,
        "not backed up"
    );
    let report = BackupReport {
        snapshot: None,
        snapshot_key: None,
        complete: true,
        counts: Counts {
            images_skipped: 1,
            ..Counts::default()
        },
        failures: Vec::new(),
        skipped: vec![skip],
        deferred: Vec::new(),
        warnings: Vec::new(),
        duration_ms: 0,
        phases: Default::default(),
        scope: ecr_vault_vault::ScopeKind::Partial,
        cost: None,
    };
    summary(&report, trigger)
}

/// Whether a run wrote a full snapshot, for the `FullSnapshots` metric and the alarm that
/// fires when none is written for 26 hours: a complete scheduled run (fanned-out runs are
/// scheduled ones) whose snapshot this invocation wrote. Push and work-item runs capture a few
/// images; an incomplete run misses some. The one place that decides it, for inline and
/// fanned-out runs alike, so it can follow the snapshot's own scope once the engine records one.
fn is_full_snapshot(trigger: &str, complete: bool, snapshot_written: bool) -> bool {
    trigger == "scheduled" && complete && snapshot_written
}

/// The run report as the response: `trigger` plus every field of the report.
fn summary(report: &BackupReport, trigger: &str) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or_else(|e| json!({"error": e.to_string()}));
    if let Value::Object(m) = &mut v {
        m.insert("trigger".into(), Value::from(trigger));
    }
    v
}

fn log_report(r: &BackupReport, trigger: &str) {
    tracing::info!(
        trigger,
        snapshot = r.snapshot.as_ref().map(|s| s.as_str()),
        complete = r.complete,
        copied = r.counts.images_copied,
        unchanged = r.counts.images_unchanged,
        failed = r.counts.images_failed,
        deferred = r.deferred.len(),
        bytes = r.counts.bytes_written,
        duration_ms = r.duration_ms,
        list_ms = r.phases.list_ms,
        plan_ms = r.phases.plan_ms,
        copy_ms = r.phases.copy_ms,
        snapshot_ms = r.phases.snapshot_ms,
        scope = %r.scope,
        "backup run finished"
    );
    for f in &r.failures {
        tracing::warn!(
            repository = f.repository,
            reference = f.reference,
            error = f.error,
            "image failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_complete_scheduled_run_that_wrote_its_snapshot_is_full() {
        assert!(is_full_snapshot("scheduled", true, true));
        assert!(!is_full_snapshot("push", true, true));
        assert!(!is_full_snapshot("work-item", true, true));
        assert!(!is_full_snapshot("scheduled", false, true), "incomplete");
        assert!(
            !is_full_snapshot("scheduled", true, false),
            "written by another worker"
        );
    }

    #[test]
    fn a_real_deadline_is_kept_and_a_past_one_means_the_maximum() {
        let now = SystemTime::now();
        let d = deadline_instant(now + Duration::from_secs(30), now);
        let left = d.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25));
        // cargo-lambda's emulator sends 600000 ms since the epoch.
        let bogus = SystemTime::UNIX_EPOCH + Duration::from_millis(600_000);
        let d = deadline_instant(bogus, now);
        let left = d.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(890) && left <= MAX_LAMBDA_TIMEOUT);
    }
}
