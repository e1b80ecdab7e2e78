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
//!   - it verifies no CRC64NVME value: a wrong part checksum and a wrong FULL_OBJECT value
//!     on `CompleteMultipartUpload` both pass (`moto_accepts_but_does_not_verify_crc64nvme`;
//!     facts.md saw the same with boto3). Checksum behaviour is proven against SeaweedFS.
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

    /// Turns on moto's IAM enforcement (`/moto-api/reset-auth`, what
    /// `INITIAL_NO_AUTH_ACTION_COUNT` sets at start) from now on: every request must then be
    /// SigV4-signed by an identity created in this server, and is checked against its
    /// identity policies. For a server of one test's own only: the inert credentials every
    /// other client here uses are refused afterwards.
    ///
    /// What moto 5.2.5 checks for S3 (`moto/s3/responses.py` `ACTION_MAP`, seen in
    /// `tests/template_policy.rs`): Action and Resource of identity policies, Allow/Deny, for
    /// `GetObject`, `PutObject` (also for uploads and `?retention`), `DeleteObject`,
    /// `DeleteObjectVersion`, `ListBucket`, `PutBucketPolicy` and a few more. It never asks for
    /// `s3:BypassGovernanceRetention`, judges `PUT ?object-lock` as `s3:CreateBucket`,
    /// evaluates no S3 condition keys, and ignores bucket policies.
    pub async fn enforce_iam(&self) -> Result<()> {
        let url = format!("{}/moto-api/reset-auth", self.endpoint);
        let resp = api_client()
            .post(&url)
            .body("0")
            .send()
            .await
            .context("POST /moto-api/reset-auth")?;
        anyhow::ensure!(
            resp.status().is_success(),
            "moto refused reset-auth: {}",
            resp.status()
        );
        Ok(())
    }

    /// Creates IAM role `name` (path `/ecr-vault/`, assumable by this account) with the given
    /// inline policies (`(name, JSON document)`), assumes it, and returns the session's
    /// credentials. Call before [`Moto::enforce_iam`]: the setup calls themselves are unsigned.
    pub async fn assume_role_with_policies(
        &self,
        name: &str,
        policies: &[(&str, &str)],
    ) -> Result<Credentials> {
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"sts:AssumeRole"}}]}}"#,
            self.account
        );
        self.query(
            "iam",
            &[
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", name),
                ("Path", "/ecr-vault/"),
                ("AssumeRolePolicyDocument", &trust),
            ],
        )
        .await?;
        for (policy_name, document) in policies {
            self.query(
                "iam",
                &[
                    ("Action", "PutRolePolicy"),
                    ("Version", "2010-05-08"),
                    ("RoleName", name),
                    ("PolicyName", policy_name),
                    ("PolicyDocument", document),
                ],
            )
            .await?;
        }
        let arn = format!("arn:aws:iam::{}:role/ecr-vault/{name}", self.account);
        let xml = self
            .query(
                "sts",
                &[
                    ("Action", "AssumeRole"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", &arn),
                    ("RoleSessionName", "ecr-vault-test"),
                ],
            )
            .await?;
        let field = |tag: &str| -> Result<String> {
            let open = format!("<{tag}>");
            let start = xml
                .find(&open)
                .with_context(|| format!("AssumeRole answer lacks {tag}: {xml}"))?
                + open.len();
            let end = xml[start..]
                .find(&format!("</{tag}>"))
                .with_context(|| format!("AssumeRole answer: unclosed {tag}"))?;
            Ok(xml[start..start + end].to_string())
        };
        Ok(Credentials::new(
            field("AccessKeyId")?,
            field("SecretAccessKey")?,
            Some(field("SessionToken")?),
            None,
            "ecr-vault-testkit-assumed-role",
        ))
    }

    /// An S3 client on this moto signing with `credentials` (e.g. an assumed role's).
    pub fn s3_client_as(&self, credentials: Credentials) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(credentials)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// One unsigned query-protocol call (IAM, STS). moto routes it by the service named in
    /// the Authorization header's credential scope and, before [`Moto::enforce_iam`], does not
    /// check the signature.
    async fn query(&self, service: &str, params: &[(&str, &str)]) -> Result<String> {
        let body = reqwest::Url::parse_with_params("http://form.invalid/", params)?
            .query()
            .unwrap_or_default()
            .to_string();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/{REGION}/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let resp = api_client()
            .post(format!("{}/", self.endpoint))
            .header("Authorization", auth)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .with_context(|| format!("{service} {params:?}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "{service} {params:?}: {status}: {text}"
        );
        Ok(text)
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

/// For moto API calls: moto loads a service's backend on first use, which can take seconds on
/// a busy machine, longer than [`probe_client`] waits.
fn api_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .no_proxy()
        .build()
        .unwrap_or_default()
}
