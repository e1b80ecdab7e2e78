//! A scheduled run: without a work queue, the whole run inline. With one, finalise earlier
//! fanned-out runs, plan, then back up inline when the work fits the threshold, or fan out.

use std::sync::Arc;

use ecr_vault_vault::Vault;
use serde::Serialize;

use crate::fanout::{self, FanoutInput, FanoutOptions, FanoutReport, PendingReport};
use crate::lease::LeaseRequest;
use crate::{
    BackupOptions, BackupReport, EngineError, NoProgress, PlanOptions, Source, backup, backup_plan,
    plan,
};

/// The work queue a scheduled run may fan out to.
pub struct Queue<'a> {
    pub sqs: &'a aws_sdk_sqs::Client,
    pub options: FanoutOptions,
}

/// How tonight's run went.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ScheduledRun {
    Inline(BackupReport),
    FannedOut(FanoutReport),
}

#[derive(Debug)]
pub struct ScheduledReport {
    pub run: ScheduledRun,
    /// Earlier fanned-out runs looked at first; None without a queue.
    pub earlier: Option<PendingReport>,
}

impl ScheduledReport {
    /// Logs the runs this invocation finished and returns their metrics, one EMF line each:
    /// earlier fanned-out runs it finalised, then tonight's run if it ran inline (a fanned-out
    /// run is counted by the worker that finalises it).
    pub fn metrics(&self, function_name: &str, now_ms: i64) -> Vec<String> {
        let earlier = self.earlier.iter().flat_map(|e| &e.finalised);
        let mut lines: Vec<String> = earlier
            .map(|f| super::finalised_metrics(f, function_name, now_ms))
            .collect();
        if let ScheduledRun::Inline(r) = &self.run {
            lines.push(super::run_metrics(
                r,
                super::SCHEDULED,
                function_name,
                now_ms,
            ));
        }
        lines
    }
}

pub async fn scheduled(
    source: &Source,
    vault: &Vault,
    opts: &BackupOptions,
    queue: Option<&Queue<'_>>,
) -> Result<ScheduledReport, EngineError> {
    let Some(queue) = queue else {
        let report = backup(source, vault, opts, Arc::new(NoProgress)).await?;
        return Ok(ScheduledReport {
            run: ScheduledRun::Inline(report),
            earlier: None,
        });
    };
    let fan = &queue.options;
    let earlier = match fanout::finalise_pending(vault, fan, chrono::Utc::now()).await {
        Ok(p) => p,
        Err(e) => {
            // Tonight's run matters more; the next one looks again.
            tracing::error!(error = %e, "could not check earlier fanned-out runs");
            PendingReport::default()
        }
    };
    // The planner decides the cohort: only new images, and unchanged ones whose locks need a
    // look, are work; the rest are carried without a request.
    let plan_opts = PlanOptions {
        filters: opts.filters.clone(),
        concurrency: opts.image_concurrency.max(4),
        fetch_sizes: false,
        lease: Some(LeaseRequest {
            holder: opts.trigger.clone(),
            deadline: opts.deadline,
        }),
    };
    let plan = plan(source, vault, &plan_opts).await?;
    let (policy, now) = (vault.options().lock, chrono::Utc::now());
    let work = plan.work_count(policy, now);
    let run = if fan.should_fan_out(work) {
        let input = FanoutInput::from_plan(plan, policy, now);
        let report = fanout::fan_out(source, vault, queue.sqs, input, opts, fan).await?;
        tracing::info!(
            run = report.run.as_str(),
            queued = report.queued,
            not_queued = report.not_queued.len(),
            "scheduled run fanned out"
        );
        ScheduledRun::FannedOut(report)
    } else {
        ScheduledRun::Inline(backup_plan(source, vault, plan, opts, Arc::new(NoProgress)).await?)
    };
    Ok(ScheduledReport {
        run,
        earlier: Some(earlier),
    })
}
