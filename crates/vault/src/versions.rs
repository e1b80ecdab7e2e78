//! Below the layout: object versions, their locks, deletes by version id, and multipart
//! uploads. What garbage collection and `verify --deep` need, so the engine never talks to S3
//! itself and ListObjectVersions is paged in one place.

use chrono::{DateTime, Utc};

use crate::error::VaultError;
use crate::lock::{LockMode, from_s3_time};
use crate::store::Vault;

/// One version of a key (not a delete marker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    /// As S3 names it (`STANDARD`, `GLACIER_IR`, …); `None` when it did not say.
    pub storage_class: Option<String>,
}

/// Every version and delete marker under a prefix.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    pub versions: Vec<ObjectVersion>,
    /// Keys whose current state is (or once was) a delete marker.
    pub delete_markers: Vec<String>,
}

/// A multipart upload not yet completed or aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// A version's lock: its mode (if S3 reported one) and retain-until.
pub type VersionLock = (Option<LockMode>, DateTime<Utc>);

impl Vault {
    /// Every version and delete marker under `prefix`, all pages. Versions S3 lists without a
    /// key or id are left out: nothing could be done with them by id.
    pub async fn list_versions(&self, prefix: &str) -> Result<Versions, VaultError> {
        let mut out = Versions::default();
        let (mut km, mut vm) = (None::<String>, None::<String>);
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.loc.bucket)
                .prefix(prefix)
                .set_key_marker(km.take())
                .set_version_id_marker(vm.take())
                .send()
                .await
                .map_err(|e| VaultError::s3("ListObjectVersions", &self.loc.bucket, prefix, e))?;
            for v in page.versions() {
                let (Some(key), Some(id)) = (v.key(), v.version_id()) else {
                    continue;
                };
                out.versions.push(ObjectVersion {
                    key: key.to_owned(),
                    version_id: id.to_owned(),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    storage_class: v.storage_class().map(|c| c.as_str().to_owned()),
                });
            }
            out.delete_markers.extend(
                page.delete_markers()
                    .iter()
                    .filter_map(|d| d.key().map(str::to_owned)),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            km = page.next_key_marker().map(str::to_owned);
            vm = page.next_version_id_marker().map(str::to_owned);
            if km.is_none() && vm.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The lock on a key (its current version when `version_id` is `None`): `None` when it has
    /// none. A missing key is an error here; [`Vault::retention`] reads it as unlocked.
    pub async fn version_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<VersionLock>, VaultError> {
        match self
            .s3
            .get_object_retention()
            .bucket(&self.loc.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => Ok(out.retention().and_then(|r| {
                let until = r.retain_until_date().and_then(from_s3_time)?;
                Some((r.mode().and_then(|m| m.as_str().parse().ok()), until))
            })),
            Err(e) => {
                let err = VaultError::s3("GetObjectRetention", &self.loc.bucket, key, e);
                if err.code() == Some("NoSuchObjectLockConfiguration") {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Deletes one version for good. S3 refuses while it is locked, unless `bypass_governance`
    /// and the lock is GOVERNANCE (COMPLIANCE is never bypassed).
    pub async fn delete_version(
        &self,
        key: &str,
        version_id: &str,
        bypass_governance: bool,
    ) -> Result<(), VaultError> {
        let mut req = self
            .s3
            .delete_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .version_id(version_id);
        if bypass_governance {
            req = req.bypass_governance_retention(true);
        }
        req.send()
            .await
            .map_err(|e| VaultError::s3("DeleteObject", &self.loc.bucket, key, e))?;
        Ok(())
    }

    /// Multipart uploads under `prefix` not yet completed or aborted, all pages.
    pub async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, VaultError> {
        let mut out = Vec::new();
        let (mut km, mut um) = (None::<String>, None::<String>);
        loop {
            let page = self
                .s3
                .list_multipart_uploads()
                .bucket(&self.loc.bucket)
                .prefix(prefix)
                .set_key_marker(km.take())
                .set_upload_id_marker(um.take())
                .send()
                .await
                .map_err(|e| VaultError::s3("ListMultipartUploads", &self.loc.bucket, prefix, e))?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: key.to_owned(),
                    upload_id: id.to_owned(),
                    initiated: u.initiated().and_then(from_s3_time),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            km = page.next_key_marker().map(str::to_owned);
            um = page.next_upload_id_marker().map(str::to_owned);
            if km.is_none() && um.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Aborts an upload. `Ok(false)` when it is gone already (completed or aborted meanwhile).
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<bool, VaultError> {
        match self
            .s3
            .abort_multipart_upload()
            .bucket(&self.loc.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let err = VaultError::s3("AbortMultipartUpload", &self.loc.bucket, key, e);
                if err.code() == Some("NoSuchUpload") {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }
}
