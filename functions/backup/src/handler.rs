//! From a recognised event to one engine call, and back to a JSON response.
//!
//! | Event | Engine call | Response |
//! |---|---|---|
//! | schedule (both shapes) | [`trigger::scheduled()`]: inline, or fanned out above `ECR_VAULT_FANOUT_THRESHOLD` | run summary |
//! | ECR PUSH | [`trigger::push()`]: the detail validated, then that one image | run summary |
//! | ECR DELETE | [`write_audit`] under `events/` | the audit key |
//! | SQS work items | [`trigger::queued()`] | `batchItemFailures` |

use std::time::{Instant, SystemTime};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ecr_vault_engine::audit::{AuditInput, AuditRecord, write_audit};
use ecr_vault_engine::fanout::FanoutOptions;
use ecr_vault_engine::trigger::{
    self, Action, ActionImage, Batch, EcrImageActionDetail, MAX_LAMBDA_TIMEOUT, PushOutcome, Queue,
    Refused, ScheduledRun, TriggerConfig,
};
use ecr_vault_engine::{
    BackupOptions, BackupReport, EngineError, RegistryConfig, Source, open_source, open_vault,
};
use ecr_vault_fn_common::FnError;
use ecr_vault_vault::{Skip, Vault, WriteOutcome};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::event::{Incoming, classify};

/// The settings that select images, as a skip record names them.
const FILTER_SETTINGS: [&str; 2] = [
    "ECR_VAULT_REPOSITORIES / ECR_VAULT_EXCLUDE_REPOSITORIES",
    "ECR_VAULT_TAGS / ECR_VAULT_EXCLUDE_TAGS",
];

/// Everything an invocation needs, built once per cold start.
pub struct App {
    cfg: TriggerConfig,
    sdk: aws_config::SdkConfig,
    vault: Vault,
    /// The work queue's client, when `ECR_VAULT_WORK_QUEUE_URL` is set.
    sqs: Option<aws_sdk_sqs::Client>,
    /// Built on first use: without `ECR_VAULT_REGISTRY_URL` it asks ECR for the endpoint.
    source: OnceCell<Source>,
}

impl App {
    /// Builds the clients. No network I/O.
    pub async fn new(cfg: TriggerConfig) -> Result<Self, EngineError> {
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
        let deadline =
            trigger::deadline_instant(ctx.deadline(), SystemTime::now(), MAX_LAMBDA_TIMEOUT);
        match classify(payload).map_err(|e| FnError::new("UnsupportedEvent", e.to_string()))? {
            Incoming::Schedule { shape, time } => {
                tracing::info!(shape, time = time.as_deref(), "scheduled backup");
                self.scheduled(deadline).await
            }
            Incoming::EcrImageAction(e) => self.image_action(&e, deadline).await,
            Incoming::Sqs(deliveries) => {
                let failed = self.queued(Batch::decode(deliveries), deadline).await;
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

    async fn scheduled(&self, deadline: Instant) -> Result<Value, FnError> {
        let source = self.source().await?;
        let opts = self.options(trigger::SCHEDULED, deadline);
        let queue = match (&self.sqs, &self.cfg.work_queue_url) {
            (Some(sqs), Some(url)) => Some(Queue {
                sqs,
                options: FanoutOptions::new(
                    url.clone(),
                    self.cfg.fanout_threshold,
                    self.cfg.fanout_run_timeout,
                ),
            }),
            _ => None,
        };
        let report = trigger::scheduled(source, &self.vault, &opts, queue.as_ref()).await?;
        emit(report.metrics(&self.cfg.function_name, now_ms()));
        let mut out = match &report.run {
            ScheduledRun::Inline(r) => summary(r, trigger::SCHEDULED),
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
        let a = match e.detail.action() {
            Ok(Action::Push(a)) => a,
            Ok(Action::Delete(_)) => return self.audit_delete(e).await,
            Ok(Action::Ignored { action, reason }) => {
                tracing::info!(
                    action,
                    reason,
                    "ignoring an ECR action that did not succeed"
                );
                let trigger = action.to_ascii_lowercase();
                return Ok(json!({"trigger": trigger, "ignored": reason}));
            }
            Err(Refused::Unsupported(m)) => return Err(FnError::new("UnsupportedEvent", m)),
            Err(Refused::Invalid(m)) => return Err(FnError::new("InvalidEvent", m)),
        };
        self.push(&a, deadline).await
    }

    async fn push(&self, a: &ActionImage, deadline: Instant) -> Result<Value, FnError> {
        let image = format!("{}@{}", a.repository, a.digest);
        // Asked before connecting: a push the filters leave out costs no ECR call.
        let outcome = match trigger::push::unselected(&self.cfg.filters, a) {
            Some(why) => PushOutcome::NotRun(why),
            None => {
                let opts = self.options(trigger::PUSH, deadline);
                trigger::push(self.source().await?, &self.vault, a, &opts)
                    .await
                    .map_err(|e| FnError::new("EngineError", format!("{image}: {e}")))?
            }
        };
        let report = match outcome {
            PushOutcome::NotRun(why) => {
                return Ok(not_run(trigger::PUSH, why.skipped(a, FILTER_SETTINGS)));
            }
            PushOutcome::Ran(r) => r,
        };
        let fn_name = &self.cfg.function_name;
        emit([trigger::run_metrics(
            &report,
            trigger::PUSH,
            fn_name,
            now_ms(),
        )]);
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
    async fn queued(&self, batch: Batch, deadline: Instant) -> Vec<String> {
        if !batch.has_work() {
            return batch.message_ids();
        }
        let source = match self.source().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the source registry");
                return batch.message_ids();
            }
        };
        let opts = self.options(trigger::WORK_ITEM, deadline);
        let report = trigger::queued(
            source,
            &self.vault,
            batch,
            &opts,
            self.cfg.work_max_receives,
        )
        .await;
        emit(report.metrics(&self.cfg.function_name, now_ms()));
        report.failed
    }
}

/// Prints metrics on stdout, one EMF line each: CloudWatch reads them from the log.
fn emit(lines: impl IntoIterator<Item = String>) {
    for line in lines {
        println!("{line}");
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
