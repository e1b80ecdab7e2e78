//! Fan-out of a large scheduled run over SQS, and its completion with no coordinator to lose.
//!
//! When a run has more images to copy than one invocation should carry, the scheduled
//! invocation does not copy them. It writes a **run manifest** into the vault's staging area
//! and sends one work item per image to the work queue:
//!
//! ```text
//! <prefix>/staging/runs/<run>.json                          the run manifest (expected images)
//! <prefix>/staging/runs/<run>/done/<repository>/<hex>.json   one per captured image: its records
//! <prefix>/staging/runs/<run>/failed/<repository>/<hex>.json one per image that exhausted retries
//! <prefix>/staging/runs/<run>/complete/<repository>.json     one per repository fully marked
//! <prefix>/snapshots/<run>.json                             the snapshot, written once
//! ```
//!
//! Completion is judged in two levels, so that no worker's requests grow with the run. A
//! worker that writes markers LISTs the done and failed markers of those repositories only,
//! and writes a repository's `complete` marker when each of its expected images has one. If
//! it found a repository complete, it LISTs `complete/` (one key per repository); whoever
//! sees every repository with expected images complete reads every marker once and writes the
//! snapshot. Its content is a function of the manifest and the image markers alone (the
//! `complete` markers only say when to look), and the write is put-once, so workers that race
//! write one snapshot. At each level every writer PUTs before it LISTs, so of two workers
//! writing the last two markers, the one whose LIST comes last sees both (S3 lists are
//! strongly consistent): a repository or a run cannot be left complete with nobody noticing.
//! A run whose items never all report (lost messages, a DLQ redrive that never happened), or
//! whose repositories were partly marked by a version without `complete` markers, is judged
//! by a later scheduled run from all its markers: finalised when complete, or once older than the run timeout as an
//! incomplete snapshot whose failures name every missing image. See
//! docs/decisions/0004-fan-out-completion.md.
//!
//! A warm container reads each run's manifest once ([`read_manifest_cached`]): it is
//! write-once, and re-reading it per batch was the other cost that grew with the run.
//!
//! Every staging object is write-once and locked like the rest of the vault; garbage
//! collection may remove them after their lock expires.
//!
//! One file per job: [`item`] (the work-item body, encoded and decoded), `state` (manifest,
//! markers, the per-repository and run-wide LISTs), `cache` (manifests per container),
//! `queue` (the scheduled side: manifest, then SQS), `worker`, `finalise`; this module holds
//! the options and the input.

mod cache;
mod finalise;
pub mod item;
mod queue;
mod state;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ecr_vault_vault::{Failure, ImageRecord, LockPolicy};

use crate::source::{Listing, SourceImage};

pub use cache::read_manifest_cached;
pub use finalise::{Finalised, PendingReport, PendingRun, finalise_pending};
pub use item::{WORK_ACTION, WorkItem};
pub use queue::{FanoutReport, fan_out};
pub use state::{
    DoneMarker, ExpectedImage, FailedMarker, IndexedManifest, RunManifest, read_manifest,
};
pub use worker::{Attempt, Unavailable, WorkReport, work};

/// When a scheduled run fans out, and how completion is judged.
#[derive(Clone, Debug)]
pub struct FanoutOptions {
    /// The work queue's URL.
    pub queue_url: String,
    /// Fan out when more than this many images need copying; at or below it, the scheduled
    /// invocation backs up inline.
    pub threshold_images: usize,
    /// A run still missing images this long after it was planned is finalised as incomplete
    /// by the next scheduled run. Longer than maxReceiveCount × the queue's visibility timeout.
    pub run_timeout: Duration,
    /// How far back a scheduled run looks for run manifests without a snapshot.
    pub lookback: Duration,
}

impl FanoutOptions {
    /// The options of a deployment's queue. The lookback is long enough that a run is looked
    /// at by several nightly runs after its timeout: four timeouts, and at least a week.
    pub fn new(queue_url: String, threshold_images: usize, run_timeout: Duration) -> Self {
        FanoutOptions {
            queue_url,
            threshold_images,
            run_timeout,
            lookback: (run_timeout * 4).max(Duration::from_secs(7 * 86_400)),
        }
    }

    /// Whether `work` images are more than one invocation should carry.
    pub fn should_fan_out(&self, work: usize) -> bool {
        work > self.threshold_images
    }
}

/// The input of a fan-out: a listing or a plan, reduced to what is copied and what is carried.
#[derive(Debug, Default)]
pub struct FanoutInput {
    /// Images that need a worker (new, or whose locks need checking).
    pub work: Vec<SourceImage>,
    /// Records of unchanged images whose locks already cover the new snapshot.
    pub carried: Vec<ImageRecord>,
    pub failures: Vec<Failure>,
    pub skipped: Vec<ecr_vault_vault::Skip>,
    pub warnings: Vec<String>,
    pub repositories: Vec<ecr_vault_ecr::RepositorySettings>,
    /// The lease the plan was made under: held until the run's own lease is written.
    pub lease: Option<Arc<crate::lease::Lease>>,
    /// The clock the carry decisions used: the run's time, so that what it carried covers
    /// exactly what its snapshot requires.
    pub decided_at: Option<DateTime<Utc>>,
}

impl FanoutInput {
    /// From the planner: only new images, and unchanged ones whose locks need a look, become
    /// work; unchanged images whose recorded lock covers the new snapshot are carried with
    /// today's tags and cost no request at all.
    pub fn from_plan(plan: crate::plan::Plan, policy: LockPolicy, now: DateTime<Utc>) -> Self {
        let mut work: Vec<SourceImage> = plan.new.into_iter().map(|n| n.image).collect();
        let mut carried = Vec::new();
        let leased = plan.lease.is_some();
        for u in plan.unchanged {
            if u.carried_on_record(policy, now, leased) {
                carried.extend(crate::backup::carry(&u.image, &u.records));
            } else {
                work.push(u.image);
            }
        }
        FanoutInput {
            work,
            carried,
            failures: plan.failures,
            skipped: plan.skipped,
            warnings: plan.warnings,
            repositories: plan.repositories,
            lease: plan.lease,
            decided_at: Some(now),
        }
    }
}

impl From<Listing> for FanoutInput {
    /// Without a plan every listed image is work: a worker finds an unchanged image with one
    /// HEAD and writes nothing.
    fn from(l: Listing) -> Self {
        FanoutInput {
            work: l.images,
            carried: Vec::new(),
            failures: l.failures,
            skipped: l.skipped,
            warnings: l.warnings,
            repositories: l.repositories,
            lease: None,
            decided_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fans_out_only_above_the_threshold() {
        let f = FanoutOptions {
            queue_url: "http://127.0.0.1/q".into(),
            threshold_images: 2,
            run_timeout: Duration::from_secs(60),
            lookback: Duration::from_secs(60),
        };
        assert!(!f.should_fan_out(2));
        assert!(f.should_fan_out(3));
        let day = Duration::from_secs(86_400);
        assert_eq!(FanoutOptions::new("q".into(), 1, day).lookback, 7 * day);
        assert_eq!(
            FanoutOptions::new("q".into(), 1, 3 * day).lookback,
            12 * day
        );
    }
}
