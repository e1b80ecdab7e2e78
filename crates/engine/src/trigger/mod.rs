//! What each trigger runs, for the backup function (and anything else driven by events):
//! classify happens in the adapter, the decisions happen here, the adapter only responds.
//!
//! - [`config`]: the settings they run with;
//! - [`mod@scheduled`]: finalise earlier fanned-out runs, plan, then back up inline or fan out;
//! - [`mod@push`]: an ECR image action's `detail`, validated (push, delete or ignore), and the run
//!   for one pushed image, selected by the same rules as the nightly listing;
//! - [`mod@queued`]: a batch of queued work items, for fanned-out runs or on their own.

pub mod config;
pub mod push;
pub mod queued;
pub mod scheduled;

use std::time::{Duration, Instant, SystemTime};

use crate::BackupReport;
use crate::fanout::Finalised;
use crate::metrics::{backup_emf, finalised_emf};

pub use config::{MAX_LAMBDA_TIMEOUT, TriggerConfig};
pub use push::{Action, ActionImage, EcrImageActionDetail, NotRun, PushOutcome, Refused, push};
pub use queued::{Batch, Delivery, QueuedReport, decode_body, queued};
pub use scheduled::{Queue, ScheduledReport, ScheduledRun, scheduled};

/// The `trigger` of a nightly (or manual scheduled) run.
pub const SCHEDULED: &str = "scheduled";
/// The `trigger` of a run for one pushed image.
pub const PUSH: &str = "push";
/// The `trigger` of a run for queued work items that belong to no fanned-out run.
pub const WORK_ITEM: &str = "work-item";

/// Whether a run wrote a full snapshot, for the `FullSnapshots` metric and the alarm that
/// fires when none is written for 26 hours: a complete scheduled run (fanned-out runs are
/// scheduled ones) whose snapshot this invocation wrote. Push and work-item runs capture a
/// few images; an incomplete run misses some.
pub fn is_full_snapshot(trigger: &str, complete: bool, snapshot_written: bool) -> bool {
    trigger == SCHEDULED && complete && snapshot_written
}

/// Logs a finished run and returns its metrics, one EMF line.
pub fn run_metrics(
    report: &BackupReport,
    trigger: &str,
    function_name: &str,
    now_ms: i64,
) -> String {
    report.log(trigger);
    let full = is_full_snapshot(trigger, report.complete, report.snapshot.is_some());
    backup_emf(report, function_name, trigger, full, now_ms)
}

/// Logs a fanned-out run this invocation finalised and returns its metrics. A fanned-out run
/// is a scheduled one, counted once, by whoever wrote its snapshot.
fn finalised_metrics(f: &Finalised, function_name: &str, now_ms: i64) -> String {
    f.log();
    let full = is_full_snapshot(SCHEDULED, f.complete, f.written);
    finalised_emf(f, function_name, full, now_ms)
}

/// An invocation's deadline as an `Instant`. A deadline that is not in the future cannot come
/// from Lambda (local emulators send a constant); `longest` (Lambda's maximum timeout) is
/// assumed then.
pub fn deadline_instant(deadline: SystemTime, now: SystemTime, longest: Duration) -> Instant {
    match deadline.duration_since(now) {
        Ok(left) if !left.is_zero() => Instant::now() + left,
        _ => {
            let ms = deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            tracing::warn!(
                deadline_ms = ms as u64,
                "the invocation deadline is not in the future; assuming Lambda's {} s maximum",
                longest.as_secs()
            );
            Instant::now() + longest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_deadline_is_kept_and_a_past_one_means_the_longest() {
        let longest = Duration::from_secs(900);
        let now = SystemTime::now();
        let d = deadline_instant(now + Duration::from_secs(30), now, longest);
        let left = d.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25));
        // cargo-lambda's emulator sends 600000 ms since the epoch.
        let bogus = SystemTime::UNIX_EPOCH + Duration::from_millis(600_000);
        let d = deadline_instant(bogus, now, longest);
        let left = d.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(890) && left <= longest);
    }

    #[test]
    fn only_a_complete_scheduled_run_that_wrote_its_snapshot_is_full() {
        assert!(is_full_snapshot(SCHEDULED, true, true));
        assert!(!is_full_snapshot(PUSH, true, true));
        assert!(!is_full_snapshot(WORK_ITEM, true, true));
        assert!(!is_full_snapshot(SCHEDULED, false, true), "incomplete");
        assert!(
            !is_full_snapshot(SCHEDULED, true, false),
            "written by another worker"
        );
    }
}
