//! ECR control plane for ecr-vault: authorization tokens, repository and image listings,
//! repository settings, and creating repositories on restore.
//!
//! The data plane (manifests and blobs) goes through the OCI registry client; this crate only
//! talks to the ECR API. Listings return raw strings: the engine validates every name, tag and
//! digest before it becomes a key or a URL, and reports the ones that fail.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType,
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ecr_vault_registry::{CredentialProvider, Credentials, RegistryError};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
#[error("ECR {op}{}: {message}", .target.as_ref().map(|t| format!(" {t}")).unwrap_or_default())]
pub struct EcrError {
    pub op: &'static str,
    pub target: Option<String>,
    pub code: Option<String>,
    pub message: String,
}

impl EcrError {
    fn new<E>(op: &'static str, target: Option<&str>, e: aws_sdk_ecr::error::SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        EcrError {
            op,
            target: target.map(str::to_owned),
            code: e.code().map(str::to_owned),
            message: DisplayErrorContext(&e).to_string(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "RepositoryNotFoundException"
                    | "ImageNotFoundException"
                    | "LifecyclePolicyNotFoundException"
                    | "RepositoryPolicyNotFoundException"
            )
        )
    }

    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("ThrottlingException" | "TooManyRequestsException" | "LimitExceededException")
        )
    }
}

/// One image as DescribeImages reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EcrImage {
    pub digest: String,
    pub tags: Vec<String>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub size: Option<u64>,
    pub manifest_media_type: Option<String>,
    pub artifact_media_type: Option<String>,
    pub subject: Option<String>,
    /// `ACTIVE`, `ARCHIVED` or `ACTIVATING`; archived images answer 404 on pull.
    pub status: Option<String>,
}

impl EcrImage {
    fn from_detail(d: &aws_sdk_ecr::types::ImageDetail) -> Option<Self> {
        Some(EcrImage {
            digest: d.image_digest()?.to_owned(),
            tags: d.image_tags().to_vec(),
            pushed_at: d
                .image_pushed_at()
                .and_then(|t| DateTime::from_timestamp(t.secs(), 0)),
            size: d.image_size_in_bytes().map(|s| s.max(0) as u64),
            manifest_media_type: d.image_manifest_media_type().map(str::to_owned),
            artifact_media_type: d.artifact_media_type().map(str::to_owned),
            subject: d.subject_manifest_digest().map(str::to_owned),
            status: d.image_status().map(|s| s.as_str().to_owned()),
        })
    }

    pub fn is_archived(&self) -> bool {
        matches!(self.status.as_deref(), Some("ARCHIVED" | "ACTIVATING"))
    }
}

/// The settings a restore re-creates a repository with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySettings {
    pub name: String,
    pub tag_mutability: Option<String>,
    #[serde(default)]
    pub tag_mutability_exclusions: Vec<String>,
    pub scan_on_push: Option<bool>,
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub lifecycle_policy: Option<String>,
    pub repository_policy: Option<String>,
}

/// ECR API client for one registry (account) in one region.
#[derive(Clone)]
pub struct Ecr {
    client: aws_sdk_ecr::Client,
    registry_id: Option<String>,
}

impl Ecr {
    pub fn new(client: aws_sdk_ecr::Client, registry_id: Option<String>) -> Self {
        Ecr {
            client,
            registry_id,
        }
    }

    pub fn client(&self) -> &aws_sdk_ecr::Client {
        &self.client
    }

    /// Fetches an authorization token: `(proxy endpoint, credentials, expiry)`.
    pub async fn authorization(
        &self,
    ) -> Result<(String, Credentials, Option<DateTime<Utc>>), EcrError> {
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| EcrError::new("GetAuthorizationToken", None, e))?;
        let bad = |m: &str| EcrError {
            op: "GetAuthorizationToken",
            target: None,
            code: None,
            message: m.to_owned(),
        };
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| bad("no authorization data"))?;
        let token = data.authorization_token().ok_or_else(|| bad("no token"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| bad("token is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("token is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("token is not user:password"))?;
        let expires = data
            .expires_at()
            .and_then(|t| DateTime::from_timestamp(t.secs(), 0));
        let endpoint = data.proxy_endpoint().unwrap_or_default().to_owned();
        Ok((endpoint, Credentials::new(user, pass), expires))
    }

    /// A credential provider for the registry client that caches the token and renews it
    /// ahead of its 12-hour expiry, or at once after the registry refuses it.
    pub fn credential_provider(&self) -> Arc<EcrCredentials> {
        Arc::new(EcrCredentials {
            ecr: self.clone(),
            cached: Mutex::new(None),
            invalidated: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// All repository names, across pages.
    pub async fn list_repositories(&self) -> Result<Vec<aws_sdk_ecr::types::Repository>, EcrError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_repositories()
            .set_registry_id(self.registry_id.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| EcrError::new("DescribeRepositories", None, e))?;
            out.extend(page.repositories().iter().cloned());
        }
        Ok(out)
    }

    /// All images of a repository, across pages.
    pub async fn list_images(&self, repository: &str) -> Result<Vec<EcrImage>, EcrError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_images()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| EcrError::new("DescribeImages", Some(repository), e))?;
            out.extend(
                page.image_details()
                    .iter()
                    .filter_map(EcrImage::from_detail),
            );
        }
        Ok(out)
    }

    /// One image by digest (push events), or `None` if it is gone.
    pub async fn describe_image(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<EcrImage>, EcrError> {
        let res = self
            .client
            .describe_images()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .image_ids(
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_digest(digest)
                    .build(),
            )
            .send()
            .await;
        match res {
            Ok(out) => Ok(out.image_details().first().and_then(EcrImage::from_detail)),
            Err(e) => {
                let err = EcrError::new("DescribeImages", Some(repository), e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Settings worth re-creating a repository with: mutability, scanning, encryption and its
    /// lifecycle and access policies.
    pub async fn repository_settings(
        &self,
        repo: &aws_sdk_ecr::types::Repository,
    ) -> Result<RepositorySettings, EcrError> {
        let name = repo.repository_name().unwrap_or_default().to_owned();
        let lifecycle = match self
            .client
            .get_lifecycle_policy()
            .set_registry_id(self.registry_id.clone())
            .repository_name(&name)
            .send()
            .await
        {
            Ok(o) => o.lifecycle_policy_text().map(str::to_owned),
            Err(e) => {
                let err = EcrError::new("GetLifecyclePolicy", Some(&name), e);
                if err.is_not_found() {
                    None
                } else {
                    return Err(err);
                }
            }
        };
        let policy = match self
            .client
            .get_repository_policy()
            .set_registry_id(self.registry_id.clone())
            .repository_name(&name)
            .send()
            .await
        {
            Ok(o) => o.policy_text().map(str::to_owned),
            Err(e) => {
                let err = EcrError::new("GetRepositoryPolicy", Some(&name), e);
                if err.is_not_found() {
                    None
                } else {
                    return Err(err);
                }
            }
        };
        Ok(RepositorySettings {
            name,
            tag_mutability: repo.image_tag_mutability().map(|m| m.as_str().to_owned()),
            tag_mutability_exclusions: repo
                .image_tag_mutability_exclusion_filters()
                .iter()
                .map(|f| f.filter().to_owned())
                .collect(),
            scan_on_push: repo
                .image_scanning_configuration()
                .map(|c| c.scan_on_push()),
            encryption_type: repo
                .encryption_configuration()
                .map(|c| c.encryption_type().as_str().to_owned()),
            kms_key: repo
                .encryption_configuration()
                .and_then(|c| c.kms_key().map(str::to_owned)),
            lifecycle_policy: lifecycle,
            repository_policy: policy,
        })
    }

    /// Creates `name` with the recorded settings (or defaults). Returns false if it existed;
    /// an existing repository's settings are left alone.
    pub async fn create_repository(
        &self,
        name: &str,
        settings: Option<&RepositorySettings>,
    ) -> Result<bool, EcrError> {
        let mut req = self
            .client
            .create_repository()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name);
        if let Some(s) = settings {
            if let Some(m) = &s.tag_mutability {
                req = req.image_tag_mutability(ImageTagMutability::from(m.as_str()));
            }
            for f in &s.tag_mutability_exclusions {
                if let Ok(filter) = ImageTagMutabilityExclusionFilter::builder()
                    .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                    .filter(f)
                    .build()
                {
                    req = req.image_tag_mutability_exclusion_filters(filter);
                }
            }
            if let Some(scan) = s.scan_on_push {
                req = req.image_scanning_configuration(
                    ImageScanningConfiguration::builder()
                        .scan_on_push(scan)
                        .build(),
                );
            }
            if let Some(t) = &s.encryption_type
                && let Ok(cfg) = EncryptionConfiguration::builder()
                    .encryption_type(EncryptionType::from(t.as_str()))
                    .set_kms_key(s.kms_key.clone())
                    .build()
            {
                req = req.encryption_configuration(cfg);
            }
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) => {
                let err = EcrError::new("CreateRepository", Some(name), e);
                if err.code.as_deref() == Some("RepositoryAlreadyExistsException") {
                    return Ok(false);
                }
                return Err(err);
            }
        }
        if let Some(s) = settings {
            if let Some(p) = &s.lifecycle_policy {
                self.client
                    .put_lifecycle_policy()
                    .set_registry_id(self.registry_id.clone())
                    .repository_name(name)
                    .lifecycle_policy_text(p)
                    .send()
                    .await
                    .map_err(|e| EcrError::new("PutLifecyclePolicy", Some(name), e))?;
            }
            if let Some(p) = &s.repository_policy {
                self.client
                    .set_repository_policy()
                    .set_registry_id(self.registry_id.clone())
                    .repository_name(name)
                    .policy_text(p)
                    .send()
                    .await
                    .map_err(|e| EcrError::new("SetRepositoryPolicy", Some(name), e))?;
            }
        }
        Ok(true)
    }

    /// Deletes repository `name` and every image in it (`force`). Only for scratch
    /// repositories: the restore drill's, under its reserved prefix; the drill's role has no
    /// delete right anywhere else. Returns false if it did not exist.
    pub async fn delete_repository(&self, name: &str) -> Result<bool, EcrError> {
        match self
            .client
            .delete_repository()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .force(true)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let err = EcrError::new("DeleteRepository", Some(name), e);
                if err.is_not_found() {
                    return Ok(false);
                }
                Err(err)
            }
        }
    }
}

/// Registry credentials backed by GetAuthorizationToken, renewed 15 minutes before expiry.
pub struct EcrCredentials {
    ecr: Ecr,
    cached: Mutex<Option<(Credentials, Option<DateTime<Utc>>)>>,
    invalidated: std::sync::atomic::AtomicBool,
}

impl EcrCredentials {
    const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);
}

impl CredentialProvider for EcrCredentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Option<Credentials>, RegistryError>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            let stale = self
                .invalidated
                .swap(false, std::sync::atomic::Ordering::SeqCst);
            if let Some((c, exp)) = cached.as_ref() {
                let fresh = exp.is_none_or(|e| {
                    Utc::now() + chrono::Duration::from_std(Self::RENEW_BEFORE).unwrap_or_default()
                        < e
                });
                if fresh && !stale {
                    return Ok(Some(c.clone()));
                }
            }
            let (_, creds, expires) =
                self.ecr
                    .authorization()
                    .await
                    .map_err(|e| RegistryError::Auth {
                        url: "ecr:GetAuthorizationToken".into(),
                        reason: e.to_string(),
                    })?;
            // A token that is already expired on arrival (clock skew, or emulators such as
            // moto) is used for an hour rather than re-fetched on every request.
            let now = Utc::now();
            let expires = match expires {
                Some(e) if e <= now => {
                    tracing::warn!(%e, "ECR authorization token arrived already expired; using it for an hour");
                    Some(now + chrono::Duration::hours(1))
                }
                other => other,
            };
            *cached = Some((creds.clone(), expires));
            Ok(Some(creds))
        })
    }

    fn invalidate(&self) {
        self.invalidated
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
