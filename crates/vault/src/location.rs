//! Where the vault lives and how its keys are named: an OCI image layout under a prefix.
//!
//! ```text
//! <prefix>/oci-layout                         {"imageLayoutVersion":"1.0.0"}
//! <prefix>/blobs/sha256/<hex>                 blobs, manifests and indexes (write-once, locked)
//! <prefix>/snapshots/<id>.json                one OCI index per run (write-once, locked)
//! <prefix>/events/<time>-<digest>.json        audit records of ECR DELETE events
//! ```
//! Downloading `oci-layout`, `blobs/` and one snapshot as `index.json` gives a layout that stock
//! tools read.

use std::fmt;

use ecr_vault_registry::Digest;

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
