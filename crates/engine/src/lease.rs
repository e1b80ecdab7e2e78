//! Leases: how a garbage collection that bypasses GOVERNANCE locks and the backups that may
//! reuse what it deletes stay out of each other's way.
//!
//! A backup decides to reuse a blob from a HEAD, or, for an unchanged image, from the lock its
//! last snapshot recorded, with no request at all. Without bypass, that lock is what keeps GC
//! away from the blob, and S3 enforces it. With bypass nothing would, so (restic's exclusive
//! prune lock, made safe without a lock server):
//! - every backup run writes a **run lease** before it reads the vault, and a release marker
//!   when its snapshot is written; a fanned-out run holds one until it is finalised;
//! - a GC that bypasses writes a **gc lease** first, then looks for live run leases and bypasses
//!   nothing if it finds one; it stops bypassing [`CLOCK_SKEW`] before its own lease expires;
//! - a backup, after writing its lease, waits while a live gc lease exists.
//!
//! Both sides write before they read, and S3 lists strongly consistently, so at least one sees
//! the other: a bypassing GC and a backup never both proceed. Without bypass no lease is
//! needed, and the scheduled GC function never bypasses.
//!
//! Leases are small put-once JSON documents under `<prefix>/staging/leases/{run,gc}/<id>.json`
//! (ids sort by time), released by `<id>.released` beside them, locked for a day in the vault's
//! mode like other staging records. An expired lease counts for nothing, nor does a released
//! one; nothing has to delete them for correctness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_vault::{SnapshotId, Vault, VaultError};
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// How long a run without a deadline (the CLI) may hold its lease; the run stops starting new
/// images when it runs out, so its lease never lapses while it works.
pub const RUN_WITHOUT_DEADLINE: Duration = Duration::from_secs(12 * 3600);

/// How long a GC with bypass holds the vault; backups wait at most this long for it.
pub const GC_BYPASS_WINDOW: Duration = Duration::from_secs(3600);

/// Clock difference tolerated between the hosts that write and read leases.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// No lease lasts longer; older ones are not even listed.
const MAX_LEASE: Duration = Duration::from_secs(48 * 3600);

/// How long staging objects of leases stay locked.
const LEASE_OBJECT_LOCK: chrono::Duration = chrono::Duration::days(1);

/// How often a waiting backup looks again.
const POLL: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    Run,
    Gc,
}

impl LeaseKind {
    fn dir(self) -> &'static str {
        match self {
            LeaseKind::Run => "run",
            LeaseKind::Gc => "gc",
        }
    }
}

/// What a lease document says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseDoc {
    pub id: SnapshotId,
    pub kind: LeaseKind,
    /// Who holds it: the trigger of a run, `gc`.
    pub holder: String,
    pub started: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

/// A lease this process holds. Release it when done; dropping it leaves it to expire.
pub struct Lease {
    vault: Vault,
    doc: LeaseDoc,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("doc", &self.doc).finish()
    }
}

/// Who asks for a run lease, and until when the run may work.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub holder: String,
    /// The invocation's deadline; `None` means [`RUN_WITHOUT_DEADLINE`].
    pub deadline: Option<Instant>,
}

fn lease_prefix(vault: &Vault, kind: LeaseKind) -> String {
    vault.location().leases_prefix(kind.dir())
}

fn lease_key(vault: &Vault, kind: LeaseKind, id: &SnapshotId) -> String {
    vault.location().lease_key(kind.dir(), id)
}

fn released_key(vault: &Vault, kind: LeaseKind, id: &SnapshotId) -> String {
    vault.location().lease_released_key(kind.dir(), id)
}

fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(MAX_LEASE)).unwrap_or(chrono::Duration::zero())
}

/// A put-once document in the staging area, locked briefly in the vault's mode.
async fn put_staging(vault: &Vault, key: &str, bytes: Bytes) -> Result<(), VaultError> {
    let now = Utc::now();
    vault
        .put_document_until(key, bytes, "application/json", now + LEASE_OBJECT_LOCK)
        .await
        .map(|_| ())
}

impl Lease {
    async fn write(
        vault: &Vault,
        kind: LeaseKind,
        id: SnapshotId,
        holder: &str,
        length: Duration,
    ) -> Result<Lease, EngineError> {
        let started = Utc::now();
        let doc = LeaseDoc {
            id,
            kind,
            holder: holder.to_owned(),
            started,
            expires: started + span(length),
        };
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| EngineError::Config(format!("lease not serialized: {e}")))?;
        put_staging(vault, &lease_key(vault, kind, &doc.id), Bytes::from(bytes)).await?;
        Ok(Lease {
            vault: vault.clone(),
            doc,
        })
    }

    /// Takes a run lease, then waits while a GC with bypass holds the vault (at most until
    /// the run's deadline, then the run fails with the GC named).
    pub async fn acquire_run(vault: &Vault, req: &LeaseRequest) -> Result<Arc<Lease>, EngineError> {
        let length = req
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(RUN_WITHOUT_DEADLINE);
        let lease = Lease::write(
            vault,
            LeaseKind::Run,
            SnapshotId::new(Utc::now()),
            &req.holder,
            length,
        )
        .await?;
        let give_up = req
            .deadline
            .unwrap_or_else(|| Instant::now() + GC_BYPASS_WINDOW + CLOCK_SKEW * 2);
        loop {
            let gcs = live(vault, LeaseKind::Gc, Utc::now(), span(CLOCK_SKEW)).await?;
            let Some(gc) = gcs.first() else {
                return Ok(Arc::new(lease));
            };
            if Instant::now() + POLL >= give_up {
                lease.release().await;
                return Err(EngineError::Config(format!(
                    "a garbage collection with governance bypass ({}, started {}) holds the \
                     vault until {}; this run did not start. Run it again afterwards.",
                    gc.id, gc.started, gc.expires
                )));
            }
            tracing::info!(gc = %gc.id, until = %gc.expires, "waiting for a bypassing gc");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes a run lease for a fanned-out run, named after the run so that whoever finalises
    /// it can release it ([`release_run`]).
    pub async fn acquire_fanout(
        vault: &Vault,
        run: &SnapshotId,
        holder: &str,
        length: Duration,
    ) -> Result<Lease, EngineError> {
        Lease::write(vault, LeaseKind::Run, run.clone(), holder, length).await
    }

    /// Takes the lease of a GC that bypasses GOVERNANCE locks.
    pub async fn acquire_gc(vault: &Vault, window: Duration) -> Result<Lease, EngineError> {
        Lease::write(
            vault,
            LeaseKind::Gc,
            SnapshotId::new(Utc::now()),
            "gc",
            window,
        )
        .await
    }

    pub fn expires(&self) -> DateTime<Utc> {
        self.doc.expires
    }

    /// When the holder must stop working under this lease: its expiry (readers add the clock
    /// skew on their side, so the holder needs no margin of its own).
    pub fn work_until(&self) -> Instant {
        let left = (self.doc.expires - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        Instant::now() + left
    }

    /// Marks the lease released. Best effort: an unreleased lease still ends at its expiry.
    pub async fn release(&self) {
        release(&self.vault, self.doc.kind, &self.doc.id).await
    }
}

/// Releases the lease of a fanned-out run (any worker that finalises it may).
pub async fn release_run(vault: &Vault, run: &SnapshotId) {
    release(vault, LeaseKind::Run, run).await
}

async fn release(vault: &Vault, kind: LeaseKind, id: &SnapshotId) {
    let key = released_key(vault, kind, id);
    if let Err(e) = put_staging(vault, &key, Bytes::from_static(b"{}")).await {
        tracing::warn!(key, error = %e, "lease not released; it ends at its expiry");
    }
}

/// Leases of `kind` that are neither released nor expired (with `skew` of grace) at `now`.
pub async fn live(
    vault: &Vault,
    kind: LeaseKind,
    now: DateTime<Utc>,
    skew: chrono::Duration,
) -> Result<Vec<LeaseDoc>, EngineError> {
    let prefix = lease_prefix(vault, kind);
    // Ids sort by their start time, and no lease outlives MAX_LEASE: older ones are skipped.
    let oldest = SnapshotId::new(now - span(MAX_LEASE) - skew);
    let after = format!("{prefix}{}", oldest.as_str());
    let keys = vault.list_keys_after(&prefix, &after).await?;
    let released: std::collections::HashSet<&str> = keys
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".released"))
        .collect();
    let mut out = Vec::new();
    for (key, _) in &keys {
        let Some(stem) = key.strip_suffix(".json") else {
            continue;
        };
        if released.contains(stem) {
            continue;
        }
        let Some(bytes) = vault.get_document(key, 64 * 1024).await? else {
            continue;
        };
        match serde_json::from_slice::<LeaseDoc>(&bytes) {
            Ok(doc) if doc.expires + skew > now => out.push(doc),
            Ok(_) => {}
            // An unreadable lease is treated as live until it is old enough to be skipped: a
            // GC should not bypass on a guess.
            Err(e) => out.push(LeaseDoc {
                id: SnapshotId::new(now),
                kind,
                holder: format!("unreadable lease {key}: {e}"),
                started: now,
                expires: now,
            }),
        }
    }
    Ok(out)
}
