//! From a recognised event to one engine call, and back to a JSON response.
//!
//! | Event | Engine call | Response |
//! |---|---|---|
//! | schedule (both shapes) | [`trigger::scheduled`]: inline, or fanned out above `ECR_VAULT_FANOUT_THRESHOLD` | run summary |
//! | ECR PUSH | [`trigger::push`] of that one image | run summary |
//! | ECR DELETE | [`write_audit`] under `events/` | the audit key |
//! | SQS work items | [`trigger::queued`] | `batchItemFailures` |

use std::time::{Instant, SystemTime};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ecr_vault_engine::audit::{AuditInput, AuditRecord, write_audit};
use ecr_vault_engine::fanout::{FanoutOptions, Finalised};
use ecr_vault_engine::metrics::{backup_emf, finalised_emf, work_emf};
use ecr_vault_engine::trigger::{self, PushOutcome, Queue, QueuedItem, ScheduledRun};
use ecr_vault_engine::{
    BackupOptions, BackupReport, EngineError, RegistryConfig, Source, open_source, open_vault,
};
use ecr_vault_fn_common::FnError;
use ecr_vault_vault::{Skip, Vault, WriteOutcome};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::config::{Config, MAX_LAMBDA_TIMEOUT};
use crate::event::{
    EcrImageActionDetail, Incoming, classify, image_action, parse_work_item, shown,
};

/// The settings that select images, as a skip record names them.
const FILTER_SETTINGS: [&str; 2] = [
    "ECR_VAULT_REPOSITORIES / ECR_VAULT_EXCLUDE_REPOSITORIES",
    "ECR_VAULT_TAGS / ECR_VAULT_EXCLUDE_TAGS",
];

/// Everything an invocation needs, built once per cold start.
pub struct App {
    cfg: Config,
    sdk: aws_config::SdkConfig,
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
            Incoming::Sqs(records) => {
                let mut failed = Vec::new();
                let mut items = Vec::new();
                for r in records {
                    match parse_work_item(r.body.as_deref()) {
                        Ok(item) => items.push(QueuedItem {
                            receives: r.receive_count.unwrap_or(1),
                            message_id: r.message_id,
                            item,
                        }),
                        Err(why) => {
                            tracing::warn!(message_id = r.message_id, why, "refused a work item");
                            failed.push(r.message_id);
                        }
                    }
                }
                failed.extend(self.queued(items, deadline).await);
                failed.sort();
                failed.dedup();
                Ok(json!({
                    "batchItemFailures": failed
                        .iter()
                        .map(|id| json!({"itemIdentifier": id}))
                        .collect::<Vec<_>>(),
                }))
            }
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

    /// Logs a finished run and prints its metrics as one EMF line on stdout.
    fn report_run(&self, report: &BackupReport, trigger: &str) {
        report.log(trigger);
        let full = trigger::is_full_snapshot(trigger, report.complete, report.snapshot.is_some());
        let now = chrono::Utc::now().timestamp_millis();
        let line = backup_emf(report, &self.cfg.function_name, trigger, full, now);
        println!("{line}");
    }

    /// Logs a fanned-out run that was finalised, and prints its metrics.
    fn report_finalised(&self, f: &Finalised) {
        f.log();
        // A fanned-out run is a scheduled one; counted once, by whoever wrote its snapshot.
        let full = trigger::is_full_snapshot(trigger::SCHEDULED, f.complete, f.written);
        let now = chrono::Utc::now().timestamp_millis();
        println!("{}", finalised_emf(f, &self.cfg.function_name, full, now));
    }

    async fn scheduled(&self, deadline: Instant) -> Result<Value, FnError> {
        let source = self.source().await?;
        let opts = self.options(trigger::SCHEDULED, deadline);
        let queue = match (&self.sqs, &self.cfg.work_queue_url) {
            (Some(sqs), Some(url)) => Some(Queue {
                sqs,
                options: FanoutOptions {
                    queue_url: url.clone(),
                    threshold_images: self.cfg.fanout_threshold,
                    run_timeout: self.cfg.fanout_run_timeout,
                    // Long enough that a run is looked at by several nightly runs after its
                    // timeout.
                    lookback: (self.cfg.fanout_run_timeout * 4)
                        .max(std::time::Duration::from_secs(7 * 86_400)),
                },
            }),
            _ => None,
        };
        let report = trigger::scheduled(source, &self.vault, &opts, queue.as_ref()).await?;
        for f in report.earlier.iter().flat_map(|e| &e.finalised) {
            self.report_finalised(f);
        }
        let mut out = match &report.run {
            ScheduledRun::Inline(r) => {
                self.report_run(r, trigger::SCHEDULED);
                summary(r, trigger::SCHEDULED)
            }
            ScheduledRun::FannedOut(r) => {
                let mut v = to_json(r);
                if let Value::Object(m) = &mut v {
                    m.insert("trigger".into(), Value::from(trigger::SCHEDULED));
                    m.insert("fanOut".into(), Value::from(true));
                }
                v
            }
        };
        if let (Value::Object(m), Some(earlier)) = (&mut out, &report.earlier) {
            m.insert("earlierRuns".into(), to_json(earlier));
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
        if let Some(why) = trigger::push::unselected(&self.cfg.filters, &a.repository) {
            let skip = why.skipped(&a.repository, &a.digest, FILTER_SETTINGS);
            return Ok(not_run(trigger::PUSH, skip));
        }
        let image = format!("{}@{}", a.repository, a.digest);
        let source = self.source().await?;
        let opts = self.options(trigger::PUSH, deadline);
        let outcome = trigger::push(
            source,
            &self.vault,
            &a.repository,
            &a.digest,
            a.tag.as_ref(),
            &opts,
        )
        .await
        .map_err(|e| FnError::new("EngineError", format!("{image}: {e}")))?;
        let report = match outcome {
            PushOutcome::NotRun(why) => {
                let skip = why.skipped(&a.repository, &a.digest, FILTER_SETTINGS);
                return Ok(not_run(trigger::PUSH, skip));
            }
            PushOutcome::Ran(r) => r,
        };
        self.report_run(&report, trigger::PUSH);
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
        Ok(summary(&report, trigger::PUSH))
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

    /// Backs up a batch of work items; returns the message ids to redeliver.
    async fn queued(&self, items: Vec<QueuedItem>, deadline: Instant) -> Vec<String> {
        if items.is_empty() {
            return Vec::new();
        }
        let source = match self.source().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the source registry");
                return items.into_iter().map(|i| i.message_id).collect();
            }
        };
        let opts = self.options(trigger::WORK_ITEM, deadline);
        let report = trigger::queued(
            source,
            &self.vault,
            items,
            &opts,
            self.cfg.work_max_receives,
        )
        .await;
        for (run, w) in &report.runs {
            tracing::info!(
                run,
                done = w.done.len(),
                retry = w.retry.len(),
                failed_final = w.failed_final.len(),
                "work items processed"
            );
            let full = w.finalised.as_ref().is_some_and(|f| {
                f.log();
                trigger::is_full_snapshot(trigger::SCHEDULED, f.complete, f.written)
            });
            let now = chrono::Utc::now().timestamp_millis();
            println!("{}", work_emf(w, &self.cfg.function_name, full, now));
        }
        if let Some(r) = &report.standalone {
            self.report_run(r, trigger::WORK_ITEM);
        }
        report.failed
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

/// The response of a push that needed no run: nothing was written.
fn not_run(trigger: &str, skip: Skip) -> Value {
    tracing::info!(
        image = %format!("{}@{}", skip.repository, skip.reference),
        reason = skip.error,
        "not backed up"
    );
    summary(&BackupReport::skipped_only(skip), trigger)
}

fn to_json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| json!({"error": e.to_string()}))
}

/// The run report as the response: `trigger` plus every field of the report.
fn summary(report: &BackupReport, trigger: &str) -> Value {
    let mut v = to_json(report);
    if let Value::Object(m) = &mut v {
        m.insert("trigger".into(), Value::from(trigger));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
