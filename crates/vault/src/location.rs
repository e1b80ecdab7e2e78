//! Where the vault lives and how its keys are named: an OCI image layout under a prefix.
//!
//! ```text
//! <prefix>/oci-layout                         {"imageLayoutVersion":"1.0.0"}
//! <prefix>/blobs/sha256/<hex>                 blobs, manifests and indexes (write-once, locked)
//! <prefix>/snapshots/<id>.json                one OCI index per run (write-once, locked)
//! <prefix>/events/<time>-<digest>.json        audit records of ECR DELETE events
//! <prefix>/staging/…                          bookkeeping outside the layout (see below)
//! ```
//! Downloading `oci-layout`, `blobs/` and one snapshot as `index.json` gives a layout that stock
//! tools read.

use std::fmt;

use ecr_vault_registry::{Digest, RepoName};

use crate::error::VaultError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultLocation {
    pub bucket: String,
    /// Empty, or a validated prefix without leading or trailing `/`.
    pub prefix: String,
}

impl VaultLocation {
    /// Parses `s3://bucket[/prefix]`. The prefix may not contain empty, `.` or `..` segments
    /// or control characters, so no key can escape it.
    pub fn parse(uri: &str) -> Result<Self, VaultError> {
        let bad = || VaultError::Location(uri.to_owned());
        let rest = uri.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        let prefix_ok = prefix.is_empty()
            || prefix.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if !bucket_ok || !prefix_ok {
            return Err(bad());
        }
        Ok(VaultLocation {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The key of `rel` under the prefix.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    pub fn blob_key(&self, digest: &Digest) -> String {
        self.key(&format!("blobs/sha256/{}", digest.hex()))
    }

    pub fn layout_key(&self) -> String {
        self.key("oci-layout")
    }

    pub fn snapshots_prefix(&self) -> String {
        self.key("snapshots/")
    }

    pub fn snapshot_key(&self, id: &crate::snapshot::SnapshotId) -> String {
        self.key(&format!("snapshots/{id}.json"))
    }

    pub fn event_key(&self, name: &str) -> String {
        self.key(&format!("events/{name}.json"))
    }

    // Staging keys: every name under `staging/` is built here, so GC, the fan-out, leases
    // and resumable uploads cannot disagree about where the others keep their records.

    /// Everything outside the OCI layout that runs keep for each other; never vault content.
    pub fn staging_prefix(&self) -> String {
        self.key("staging/")
    }

    /// The state of a blob upload stopped at a deadline.
    pub fn upload_staging_key(&self, digest: &Digest) -> String {
        self.key(&format!("staging/uploads/{}.json", digest.hex()))
    }

    /// Fanned-out runs: their manifests sit directly under it.
    pub fn runs_prefix(&self) -> String {
        self.key("staging/runs/")
    }

    pub fn run_manifest_key(&self, run: &crate::snapshot::SnapshotId) -> String {
        format!("{}{run}.json", self.runs_prefix())
    }

    /// A fanned-out run's markers.
    pub fn run_prefix(&self, run: &crate::snapshot::SnapshotId) -> String {
        format!("{}{run}/", self.runs_prefix())
    }

    /// `<run prefix><kind>/<repository>/<hex>.json`. Repository names are validated OCI names
    /// (no empty, `.` or `..` segments), so they are safe in keys.
    pub fn run_marker_key(
        &self,
        run: &crate::snapshot::SnapshotId,
        kind: RunMarker,
        repo: &RepoName,
        digest: &Digest,
    ) -> String {
        format!(
            "{}{}/{repo}/{}.json",
            self.run_prefix(run),
            kind.as_str(),
            digest.hex()
        )
    }

    /// The markers of one kind and one repository of a run: what a worker LISTs (shallow, so
    /// a nested repository's markers stay out) to judge that repository alone.
    pub fn run_markers_prefix(
        &self,
        run: &crate::snapshot::SnapshotId,
        kind: RunMarker,
        repo: &RepoName,
    ) -> String {
        format!("{}{}/{repo}/", self.run_prefix(run), kind.as_str())
    }

    /// The run's repository-complete markers: one per repository whose expected images all
    /// have a marker, so the run-wide check LISTs one key per repository, not per image.
    pub fn run_complete_prefix(&self, run: &crate::snapshot::SnapshotId) -> String {
        format!("{}{COMPLETE}/", self.run_prefix(run))
    }

    /// `<run prefix>complete/<repository>.json`.
    pub fn run_complete_key(&self, run: &crate::snapshot::SnapshotId, repo: &RepoName) -> String {
        format!("{}{repo}.json", self.run_complete_prefix(run))
    }

    /// Leases of one kind (`run`, `gc`); ids sort by time.
    pub fn leases_prefix(&self, kind: &str) -> String {
        self.key(&format!("staging/leases/{kind}/"))
    }

    pub fn lease_key(&self, kind: &str, id: &crate::snapshot::SnapshotId) -> String {
        format!("{}{id}.json", self.leases_prefix(kind))
    }

    /// Written beside a lease to end it early.
    pub fn lease_released_key(&self, kind: &str, id: &crate::snapshot::SnapshotId) -> String {
        format!("{}{id}.released", self.leases_prefix(kind))
    }
}

/// What a fan-out worker left for one image of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMarker {
    /// Captured: its records.
    Done,
    /// Its last delivery failed: the error.
    Failed,
}

impl RunMarker {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMarker::Done => "done",
            RunMarker::Failed => "failed",
        }
    }
}

/// The directory of repository-complete markers under a run's prefix.
const COMPLETE: &str = "complete";

/// A key under a fanned-out run's prefix, parsed: the inverse of
/// [`VaultLocation::run_marker_key`] and [`VaultLocation::run_complete_key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunKey {
    /// `<kind>/<repository>/<hex>.json`: one image's marker.
    Marker(RunMarker, RepoName, Digest),
    /// `complete/<repository>.json`: every expected image of the repository has a marker.
    Complete(RepoName),
}

impl RunKey {
    /// Parses a key relative to a run's prefix. `None` for anything the location would not
    /// have built.
    pub fn parse(rel: &str) -> Option<RunKey> {
        let (kind, rest) = rel.split_once('/')?;
        let kind = match kind {
            "done" => RunMarker::Done,
            "failed" => RunMarker::Failed,
            COMPLETE => {
                let repo = rest.strip_suffix(".json")?;
                return RepoName::parse(repo).ok().map(RunKey::Complete);
            }
            _ => return None,
        };
        let (repo, file) = rest.rsplit_once('/')?;
        let hex = file.strip_suffix(".json")?;
        let repo = RepoName::parse(repo).ok()?;
        let digest = Digest::parse(&format!("sha256:{hex}")).ok()?;
        Some(RunKey::Marker(kind, repo, digest))
    }
}

impl fmt::Display for VaultLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations_and_builds_keys() {
        let v = VaultLocation::parse("s3://my-vault/ecr/prod/").unwrap();
        assert_eq!(v.bucket, "my-vault");
        assert_eq!(v.layout_key(), "ecr/prod/oci-layout");
        let d = Digest::of(b"x");
        assert_eq!(v.blob_key(&d), format!("ecr/prod/blobs/sha256/{}", d.hex()));
        assert_eq!(
            VaultLocation::parse("s3://abc").unwrap().layout_key(),
            "oci-layout"
        );
    }

    #[test]
    fn run_marker_keys_round_trip_and_stay_under_the_run() {
        let v = VaultLocation::parse("s3://my-vault/ecr").unwrap();
        let run = crate::snapshot::SnapshotId::parse("20261124T020000000Z-a1b2c3").unwrap();
        let d = Digest::of(b"x");
        let repo = RepoName::parse("team/app/api").unwrap();
        let key = v.run_marker_key(&run, RunMarker::Done, &repo, &d);
        let rel = key.strip_prefix(&v.run_prefix(&run)).unwrap();
        assert_eq!(
            RunKey::parse(rel),
            Some(RunKey::Marker(RunMarker::Done, repo.clone(), d.clone()))
        );
        // The repository's marker prefix holds its markers, and is the run's.
        assert!(key.starts_with(&v.run_markers_prefix(&run, RunMarker::Done, &repo)));
        assert_eq!(
            v.run_markers_prefix(&run, RunMarker::Failed, &repo),
            "ecr/staging/runs/20261124T020000000Z-a1b2c3/failed/team/app/api/"
        );
        assert_eq!(RunKey::parse("done/team/app/api/zz.json"), None);
        assert_eq!(RunKey::parse("done/../x/abc.json"), None);
        assert_eq!(RunKey::parse("other/team/abc.json"), None);
        assert_eq!(RunKey::parse("done"), None);
        assert_eq!(
            v.run_manifest_key(&run),
            "ecr/staging/runs/20261124T020000000Z-a1b2c3.json"
        );
    }

    #[test]
    fn repository_complete_keys_round_trip_and_stay_apart_from_markers() {
        let v = VaultLocation::parse("s3://my-vault/ecr").unwrap();
        let run = crate::snapshot::SnapshotId::parse("20261124T020000000Z-a1b2c3").unwrap();
        let prefix = v.run_prefix(&run);
        for name in ["api", "team/app/api", "team/app.json"] {
            let repo = RepoName::parse(name).unwrap();
            let key = v.run_complete_key(&run, &repo);
            assert!(key.starts_with(&v.run_complete_prefix(&run)), "{key}");
            let rel = key.strip_prefix(&prefix).unwrap();
            assert_eq!(RunKey::parse(rel), Some(RunKey::Complete(repo)), "{rel}");
        }
        assert_eq!(
            v.run_complete_key(&run, &RepoName::parse("team/app").unwrap()),
            "ecr/staging/runs/20261124T020000000Z-a1b2c3/complete/team/app.json"
        );
        // Nothing else under complete/ parses: no suffix, a bad name, a marker's shape.
        assert_eq!(RunKey::parse("complete/team/app"), None);
        assert_eq!(RunKey::parse("complete/../x.json"), None);
        assert_eq!(RunKey::parse("complete/Team.json"), None);
        assert_eq!(RunKey::parse("complete/.json"), None);
        // A repository named like a marker kind stays a repository.
        let done = RepoName::parse("done").unwrap();
        let rel = v.run_complete_key(&run, &done);
        assert_eq!(
            RunKey::parse(rel.strip_prefix(&prefix).unwrap()),
            Some(RunKey::Complete(done))
        );
    }

    #[test]
    fn refuses_escaping_prefixes() {
        for bad in [
            "s3://b",
            "http://bucket/x",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/./a",
            "s3://bucket/a\nb",
            "s3://Bucket/x",
        ] {
            assert!(VaultLocation::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
