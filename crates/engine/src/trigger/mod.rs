//! What each trigger runs, for the backup function (and anything else driven by events):
//! classify happens in the adapter, the decisions happen here, the adapter only responds.
//!
//! - [`scheduled`]: finalise earlier fanned-out runs, plan, then back up inline or fan out;
//! - [`push`]: one pushed image, selected by the same rules as the nightly listing;
//! - [`queued`]: a batch of queued work items, for fanned-out runs or on their own.

pub mod push;
pub mod queued;
pub mod scheduled;

pub use push::{NotRun, PushOutcome, push};
pub use queued::{QueuedItem, QueuedReport, queued};
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

#[cfg(test)]
mod tests {
    use super::*;

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
