//! The ecr-vault vault: an OCI image layout in an S3 bucket with Object Lock.
//!
//! - [`location`]: bucket, prefix and key names;
//! - [`store`]: conditional, locked, checksummed writes and reads;
//! - [`upload`]: verified streaming blob writes with bounded memory;
//! - [`lock`]: retention policy and extension with slack;
//! - [`snapshot`]: one immutable OCI index per run;
//! - [`staging`]: state of uploads stopped at a deadline, continued by the next run;
//! - [`versions`]: object versions, their locks and deletes, multipart uploads (GC, verify);
//! - [`client`]: the S3 client and storage class from configuration.

pub mod client;
pub mod error;
pub mod location;
pub mod lock;
mod pool;
pub mod snapshot;
pub mod staging;
pub mod store;
pub mod upload;
pub mod versions;

pub use client::{blob_storage_class, s3_client};
pub use error::VaultError;
pub use location::{RunKey, RunMarker, VaultLocation};
pub use lock::{LockMode, LockPolicy, RetentionUnit};
pub use snapshot::{
    Counts, Failure, ImageRecord, Role, RunInfo, ScopeGroup, ScopeKind, Skip, Snapshot, SnapshotId,
    TRIGGER_SCHEDULED,
};
pub use staging::{ResumableSha256, StagingRecord};
pub use store::{ListedObject, ObjectState, Vault, VaultOptions, WriteOutcome};
pub use upload::{BlobWrite, Expected};
pub use versions::{ObjectVersion, PendingUpload, VersionLock, Versions};
