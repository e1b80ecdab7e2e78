//! Every default a user can override, in one place: the CLI's flags and the functions'
//! environment readers both take theirs from here. Where the CLI and a function differ, the
//! constant says why.

use std::time::Duration;

pub use ecr_vault_vault::lock::{
    DEFAULT_RETENTION_DAYS as RETENTION_DAYS, DEFAULT_SLACK_DAYS as LOCK_SLACK_DAYS,
};

/// Multipart part size. S3's minimum is 5 MiB; 16 MiB keeps a 10 GiB layer under S3's
/// 10,000-part limit.
pub const PART_SIZE_MIB: usize = 16;
/// Parts in flight per upload pool on a workstation or CI runner.
pub const PARTS_IN_FLIGHT: usize = 6;
/// Parts in flight in the backup function: its memory is what it pays for, and the default
/// 2,048 MB must hold the buffers of every image in flight beside the runtime.
pub const FUNCTION_PARTS_IN_FLIGHT: usize = 4;
/// Images copied at once.
pub const IMAGE_CONCURRENCY: usize = 4;
/// Blobs of one image copied at once.
pub const BLOB_CONCURRENCY: usize = 8;
/// No new image starts when less than this remains before a deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// Garbage collection's keep policy.
pub const GC_KEEP_LAST: usize = 30;
pub const GC_KEEP_DAILY_DAYS: u32 = 35;
pub const GC_KEEP_MONTHLY_MONTHS: u32 = 12;
/// An unfinished multipart upload older than this is abandoned.
pub const GC_UPLOAD_DAYS: u32 = 7;

/// A scheduled run fans out when more images than this need copying.
pub const FANOUT_THRESHOLD: usize = 50;
/// The work queue's maxReceiveCount (the template's); a failure on that delivery is final.
pub const WORK_MAX_RECEIVES: u32 = 5;
/// A fanned-out run still missing images this long after it started is finalised incomplete.
pub const FANOUT_RUN_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
