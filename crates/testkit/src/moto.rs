//! moto (`moto_server`) as the ECR control plane, and an S3 that enforces Object Lock's
//! integrity-header rule (which SeaweedFS does not).
//!
//! # What moto 5.2.5 does (verified by `tests/stack.rs` and `tests/seaweed_probe.rs`)
//! - `GetAuthorizationToken` returns one `AuthorizationData`: token
//!   `QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu` = base64 of `AWS:123456789012-auth-token`,
//!   `proxyEndpoint` `https://123456789012.dkr.ecr.us-east-1.amazonaws.com` (not a server that
//!   exists: point the data plane at the harness [`crate::Registry`], which accepts that user),
//!   and `expiresAt` **2015-01-01**, i.e. already expired. Code that refreshes "expired" tokens
//!   before use must not loop on that.
//! - ECR is control plane only: no `/v2/` data plane, no blobs. `PutImage` records a manifest
//!   with its tags; `DescribeImages`, `ListImages` and `BatchGetImage` return it, the manifest
//!   bytes unchanged. Always pass `imageDigest`: the harness never relies on moto hashing.
//!   Pushing the same digest with a second tag adds the tag.
//! - S3 as a vault (`Moto::s3_client`), stricter than SeaweedFS in one place, weaker in others:
//!   - it enforces the Object Lock integrity rule: a locked `PutObject` needs `Content-MD5` or
//!     `x-amz-sdk-checksum-algorithm`. With aws-sdk-s3, the default (CRC32) passes, and so does
//!     `.checksum_algorithm(Sha256).checksum_sha256(v)`, but `.checksum_sha256(v)` *alone* is
//!     refused (MissingUploadObjectWithObjectLockHeaders), although AWS documents any
//!     `x-amz-checksum-*` header as enough. Set the algorithm along with the value.
//!   - `If-None-Match: *` gives 412 on PutObject and CompleteMultipartUpload, like AWS.
//!   - `GetBucketVersioning` answers with a `GetBucketVersioningResponse` XML root that the
//!     Rust SDK cannot parse (an "unhandled" error); versioning is in fact Enabled.
//!   - seen with boto3: `GetObjectRetention` returns 500; `PutObjectRetention` accepts a
//!     *shorter* COMPLIANCE date; a multipart upload created with lock headers has no lock
//!     on HEAD. Lock semantics must be tested against SeaweedFS, not moto.
//!   - bucket names must be 3+ characters.

use std::ffi::OsString;

use anyhow::{Context as _, Result};
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecr::error::ProvideErrorMetadata as _;

use crate::paths::find_tool;
use crate::process::{
    READY_TIMEOUT, ServerProcess, free_port, http_status_probe, probe_client,
    retry_on_port_conflict, server_dir,
};
use crate::s3::{REGION, s3_client};

/// moto's default account id.
pub const ACCOUNT: &str = "123456789012";
/// moto accepts any credentials; these are conventional.
pub const ACCESS_KEY: &str = "testing";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "testing";

/// A running `moto_server` on loopback. State lives in the process: every instance is empty.
#[derive(Debug)]
pub struct Moto {
    /// None for a server the harness did not start ([`Moto::external`]).
    process: Option<ServerProcess>,
    endpoint: String,
    /// Always [`ACCOUNT`].
    pub account: String,
    /// Always `us-east-1`.
    pub region: String,
}

impl Moto {
    /// Starts moto_server and waits until it answers HTTP.
    pub async fn start() -> Result<Self> {
        retry_on_port_conflict(Self::try_start).await
    }

    async fn try_start() -> Result<Self> {
        let program = find_tool(&["moto_server"])?;
        let dir = server_dir("moto")?;
        let port = free_port()?;
        let args: Vec<OsString> = vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string().into(),
        ];
        let mut process = ServerProcess::spawn("moto_server", &program, &args, &[], dir)?;
        let url = format!("http://127.0.0.1:{port}/moto-api/");
        let probe = probe_client();
        process
            .wait_ready(READY_TIMEOUT, || http_status_probe(&probe, &url, &[]))
            .await?;
        Ok(Moto {
            process: Some(process),
            endpoint: format!("http://127.0.0.1:{port}"),
            account: ACCOUNT.to_string(),
            region: REGION.to_string(),
        })
    }

    /// A handle on a moto server that is already running, e.g. to register images in it.
    pub fn external(endpoint: &str) -> Self {
        Moto {
            process: None,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            account: ACCOUNT.to_string(),
            region: REGION.to_string(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The server process (log path); None for [`Moto::external`].
    pub fn process(&self) -> Option<&ServerProcess> {
        self.process.as_ref()
    }

    /// An ECR client talking to moto.
    pub fn ecr_client(&self) -> aws_sdk_ecr::Client {
        let config = aws_sdk_ecr::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "ecr-vault-testkit",
            ))
            .build();
        aws_sdk_ecr::Client::from_conf(config)
    }

    /// An S3 client talking to moto's S3, which enforces Object Lock's integrity-header rule
    /// (SeaweedFS does not).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint(), ACCESS_KEY, SECRET_KEY)
    }

    /// Environment for child processes: ECR endpoint, credentials, region.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL_ECR".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), self.region.clone()),
        ]
    }

    /// Creates an ECR repository; an existing one is fine.
    pub async fn create_repository(&self, repo: &str) -> Result<()> {
        match self
            .ecr_client()
            .create_repository()
            .repository_name(repo)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("RepositoryAlreadyExistsException") => Ok(()),
            Err(e) => Err(e).with_context(|| format!("CreateRepository {repo}")),
        }
    }

    /// Records an image in moto's ECR (the bytes must also be pushed to the harness registry
    /// for a data plane): creates the repository if missing, then one `PutImage` per tag, or
    /// one untagged `PutImage` if `tags` is empty. `digest` is always passed explicitly.
    pub async fn register_image(
        &self,
        repo: &str,
        manifest: &[u8],
        media_type: &str,
        digest: &str,
        tags: &[&str],
    ) -> Result<()> {
        self.create_repository(repo).await?;
        let manifest = std::str::from_utf8(manifest).context("manifest is not UTF-8")?;
        let client = self.ecr_client();
        let tag_list: Vec<Option<&str>> = if tags.is_empty() {
            vec![None]
        } else {
            tags.iter().map(|t| Some(*t)).collect()
        };
        for tag in tag_list {
            let result = client
                .put_image()
                .repository_name(repo)
                .image_manifest(manifest)
                .image_manifest_media_type(media_type)
                .image_digest(digest)
                .set_image_tag(tag.map(String::from))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e) if e.code() == Some("ImageAlreadyExistsException") => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("PutImage {repo}:{tag:?}@{digest}"));
                }
            }
        }
        Ok(())
    }

    /// Records a pushed image (see [`crate::fixtures::PushedImage`]) in moto under the same
    /// repository and tags.
    pub async fn register_pushed(&self, image: &crate::fixtures::PushedImage) -> Result<()> {
        let tags: Vec<&str> = image.tags.iter().map(String::as_str).collect();
        self.register_image(
            &image.repo,
            &image.manifest,
            &image.media_type,
            &image.digest,
            &tags,
        )
        .await
    }
}
