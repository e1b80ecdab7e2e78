//! A real OCI registry (CNCF distribution 2.8, the Debian `docker-registry` package) on loopback,
//! plus a small raw HTTP client for pushing exact bytes and checking results independently of
//! the product's registry crate.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use rand::Rng as _;
use reqwest::{Method, RequestBuilder, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::paths::find_tool;
use crate::process::{
    READY_TIMEOUT, ServerProcess, free_port, http_status_probe, probe_client,
    retry_on_port_conflict, server_dir,
};
use crate::token::TokenServer;

/// The user moto's ECR `GetAuthorizationToken` names: its token is base64 of
/// `AWS:<account>-auth-token`.
pub const ECR_USER: &str = "AWS";

/// The password moto's ECR token decodes to for `account`.
pub fn ecr_password(account: &str) -> String {
    format!("{account}-auth-token")
}

/// Every manifest media type, for `Accept` headers (no conversion by the registry).
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.v1+prettyjws";

/// How to start a [`Registry`].
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Basic auth with htpasswd (bcrypt). When on, the test user and the moto ECR user
    /// ([`ECR_USER`] / [`ecr_password`] of `ecr_account`) can log in.
    pub auth: bool,
    /// The account whose moto ECR token must be accepted.
    pub ecr_account: String,
    /// Docker token auth instead of htpasswd: a [`TokenServer`] (owned by the registry) issues
    /// tokens of this lifetime for the same users. Needs `auth`.
    pub token: Option<Duration>,
    /// Blobs in an S3 bucket instead of the local disk, with redirects on: blob GETs answer
    /// 307 to a presigned URL of the S3 server, the way ECR's do.
    pub s3: Option<S3Storage>,
}

/// Where an S3-backed registry keeps its data (see [`S3Storage::create`]).
#[derive(Clone, Debug)]
pub struct S3Storage {
    /// `http://127.0.0.1:PORT` of the S3 server (or of a proxy in front of it).
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub bucket: String,
}

impl S3Storage {
    /// A new plain bucket `bucket` on `s3` for a registry's data.
    pub async fn create(s3: &crate::S3, bucket: &str) -> Result<S3Storage> {
        s3.create_bucket(bucket).await?;
        Ok(S3Storage {
            endpoint: s3.endpoint(),
            access_key: s3.access_key.clone(),
            secret_key: s3.secret_key.clone(),
            region: s3.region.clone(),
            bucket: bucket.to_string(),
        })
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            auth: true,
            ecr_account: crate::moto::ACCOUNT.to_string(),
            token: None,
            s3: None,
        }
    }
}

/// A running `docker-registry` with filesystem storage in its own temp dir and deletes enabled.
/// Start as many as a test needs (restore tests use a second, empty one).
#[derive(Debug)]
pub struct Registry {
    /// None for a registry the harness did not start ([`Registry::external`]).
    process: Option<ServerProcess>,
    /// `http://host:port`, no trailing slash.
    base_url: String,
    /// Whether the registry asks for Basic auth.
    pub auth: bool,
    /// Test user name (`tester`); meaningless when `auth` is false.
    pub user: String,
    /// Random password of the test user; meaningless when `auth` is false.
    pub password: String,
    http: reqwest::Client,
    /// The realm of a token-auth registry ([`RegistryOptions::token`]).
    token: Option<TokenServer>,
}

impl Registry {
    /// A registry with htpasswd auth (test user + moto ECR user).
    pub async fn start() -> Result<Self> {
        Self::start_with(RegistryOptions::default()).await
    }

    /// A registry that allows anonymous push and pull.
    pub async fn start_without_auth() -> Result<Self> {
        Self::start_with(RegistryOptions {
            auth: false,
            ..RegistryOptions::default()
        })
        .await
    }

    /// A registry with explicit options. Retries on a port grabbed by someone else.
    pub async fn start_with(opts: RegistryOptions) -> Result<Self> {
        let user = "tester".to_string();
        let password = random_token(20);
        let token = match opts.token {
            Some(lifetime) if opts.auth => {
                let t = TokenServer::start(lifetime).await?;
                t.add_user(&user, &password);
                t.add_user(ECR_USER, &ecr_password(&opts.ecr_account));
                Some(t)
            }
            Some(_) => bail!("token auth needs `auth: true`"),
            None => None,
        };
        let mut reg =
            retry_on_port_conflict(|| Self::try_start(&opts, &user, &password, token.as_ref()))
                .await?;
        reg.token = token;
        Ok(reg)
    }

    async fn try_start(
        opts: &RegistryOptions,
        user: &str,
        password: &str,
        token: Option<&TokenServer>,
    ) -> Result<Self> {
        let program = find_tool(&["docker-registry", "registry"])?;
        let dir = server_dir("registry")?;
        let port = free_port()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let mut auth_yaml = String::new();
        if let Some(t) = token {
            auth_yaml = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
                 issuer: {issuer}\n    rootcertbundle: {root}\n",
                realm = t.realm(),
                service = crate::token::SERVICE,
                issuer = crate::token::ISSUER,
                root = t.root_cert_path().display(),
            );
        } else if opts.auth {
            let htpasswd = dir.path().join("htpasswd");
            let mut lines = htpasswd_line(user, password)?;
            lines.push_str(&htpasswd_line(ECR_USER, &ecr_password(&opts.ecr_account))?);
            std::fs::write(&htpasswd, lines)?;
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: ecr-vault-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let driver = match &opts.s3 {
            // distribution's S3 driver presigns blob GETs (`redirect` is on by default; said
            // explicitly here) and uses path-style URLs when `regionendpoint` is set.
            Some(s) => format!(
                "  s3:\n    accesskey: {ak}\n    secretkey: {sk}\n    region: {region}\n    \
                 regionendpoint: {endpoint}\n    bucket: {bucket}\n    secure: false\n    \
                 v4auth: true\n    rootdirectory: /registry\n  redirect:\n    disable: false\n",
                ak = s.access_key,
                sk = s.secret_key,
                region = s.region,
                endpoint = s.endpoint,
                bucket = s.bucket,
            ),
            None => format!("  filesystem:\n    rootdirectory: {}\n", data.display()),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n{driver}  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n\
             {auth_yaml}",
            secret = random_token(24),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let args: Vec<OsString> = vec!["serve".into(), config_path.into_os_string()];
        let mut process = ServerProcess::spawn("docker-registry", &program, &args, &[], dir)?;
        let probe = probe_client();
        let url = format!("http://127.0.0.1:{port}/v2/");
        process
            .wait_ready(READY_TIMEOUT, || {
                http_status_probe(&probe, &url, &[200, 401])
            })
            .await?;
        let http = http_client()?;
        Ok(Registry {
            process: Some(process),
            base_url: format!("http://127.0.0.1:{port}"),
            auth: opts.auth,
            user: user.to_string(),
            password: password.to_string(),
            http,
            token: None,
        })
    }

    /// A handle on a registry that is already running (e.g. one `ecr-vault-stack up`
    /// started), for pushing fixtures into it. `url` is `http://host:port`.
    pub fn external(url: &str, credentials: Option<(&str, &str)>) -> Result<Self> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("registry URL {url}"))?;
        ensure!(
            parsed.host_str().is_some(),
            "registry URL {url} has no host"
        );
        let (user, password) = credentials.unwrap_or_default();
        Ok(Registry {
            process: None,
            base_url: url.trim_end_matches('/').to_string(),
            auth: credentials.is_some(),
            user: user.to_string(),
            password: password.to_string(),
            http: http_client()?,
            token: None,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.base_url.clone()
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, h)| h)
            .to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        reqwest::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(0)
    }

    /// `Some((user, password))` when auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth
            .then_some((self.user.as_str(), self.password.as_str()))
    }

    /// The server process (log path, data dir); None for [`Registry::external`].
    pub fn process(&self) -> Option<&ServerProcess> {
        self.process.as_ref()
    }

    /// The token server of a token-auth registry.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// A request to `path` (starting with `/v2/`) or an absolute URL, authenticated as the test
    /// user (on a token-auth registry, with a token minted for every action on the repository
    /// the path names).
    pub fn request(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.url(), path_or_url)
        };
        if let Some(t) = &self.token {
            let path = reqwest::Url::parse(&url)
                .map(|u| u.path().to_string())
                .unwrap_or_default();
            let scopes: Vec<String> = crate::token::scope_for_path(&path)
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            let rb = self.http.request(method, url);
            return match t.mint(&self.user, &scopes) {
                Ok(tok) => rb.bearer_auth(tok),
                // The registry answers 401, which the caller reports.
                Err(_) => rb,
            };
        }
        let rb = self.http.request(method, url);
        match self.credentials() {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// True if the blob exists in `repo`.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let resp = self
            .request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("HEAD blob {repo}@{digest}: {s}"),
        }
    }

    /// Starts an upload session; returns the absolute upload URL.
    pub async fn start_upload(&self, repo: &str) -> Result<reqwest::Url> {
        let resp = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await?;
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            bail!(
                "POST blob upload {repo}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        self.location(&resp)
    }

    fn location(&self, resp: &reqwest::Response) -> Result<reqwest::Url> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .context("upload response without Location")?
            .to_str()?;
        let base = reqwest::Url::parse(&self.url())?;
        Ok(base.join(loc)?)
    }

    /// Pushes a blob monolithically (POST, then PUT `?digest=`), skipping it if present.
    /// Returns its digest and size.
    pub async fn push_blob(&self, repo: &str, data: Bytes) -> Result<(String, u64)> {
        let digest = sha256_digest(&data);
        let size = data.len() as u64;
        if self.blob_exists(repo, &digest).await? {
            return Ok((digest, size));
        }
        let mut url = self.start_upload(repo).await?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let resp = self
            .request(Method::PUT, url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            bail!(
                "PUT blob {repo}@{digest}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok((digest, size))
    }

    /// PUTs exact manifest bytes under `reference` (a tag or the digest). Returns the digest,
    /// checked against the registry's `Docker-Content-Digest`.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<String> {
        let digest = sha256_digest(manifest);
        let resp = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(manifest.to_vec())
            .send()
            .await?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            bail!(
                "PUT manifest {repo}:{reference}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        if let Some(d) = resp.headers().get("docker-content-digest") {
            ensure!(
                d.to_str()? == digest,
                "registry computed digest {d:?}, expected {digest}"
            );
        }
        Ok(digest)
    }

    /// GETs a manifest (tag or digest) with every Accept type: raw bytes and Content-Type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<(Bytes, String)> {
        let resp = self
            .request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS)
            .send()
            .await?;
        let status = resp.status();
        if status != StatusCode::OK {
            bail!("GET manifest {repo}:{reference}: {status}");
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((resp.bytes().await?, media_type))
    }

    /// True if the manifest (tag or digest) exists.
    pub async fn manifest_exists(&self, repo: &str, reference: &str) -> Result<bool> {
        let resp = self
            .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS)
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("HEAD manifest {repo}:{reference}: {s}"),
        }
    }

    /// GETs a whole blob (small blobs only).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Bytes> {
        let resp = self
            .request(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await?;
        let status = resp.status();
        if status != StatusCode::OK {
            bail!("GET blob {repo}@{digest}: {status}");
        }
        Ok(resp.bytes().await?)
    }

    /// Deletes a manifest by digest (the registry API deletes by digest only; every tag
    /// pointing at it goes too). Blobs stay until a registry GC, which tests never need.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let resp = self
            .request(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"))
            .send()
            .await?;
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            bail!(
                "DELETE manifest {repo}@{digest}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Tags of `repo` (sorted by the registry), empty if the repository is unknown.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let resp = self
            .request(Method::GET, &format!("/v2/{repo}/tags/list"))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let status = resp.status();
        if status != StatusCode::OK {
            bail!("GET tags {repo}: {status}");
        }
        let v: serde_json::Value = resp.json().await?;
        Ok(v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Repository names from `/v2/_catalog`, all pages (a repository stays listed after its
    /// manifests are deleted). Distribution refuses page sizes above 1000.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        loop {
            let mut url = reqwest::Url::parse(&format!("{}/v2/_catalog", self.url()))?;
            url.query_pairs_mut().append_pair("n", "1000");
            if let Some(last) = out.last() {
                url.query_pairs_mut().append_pair("last", last);
            }
            let resp = self.request(Method::GET, url.as_str()).send().await?;
            let status = resp.status();
            if status != StatusCode::OK {
                bail!("GET catalog: {status}");
            }
            let more = resp.headers().contains_key(reqwest::header::LINK);
            let v: serde_json::Value = resp.json().await?;
            let page: Vec<String> = v["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let empty = page.is_empty();
            out.extend(page);
            if !more || empty {
                return Ok(out);
            }
        }
    }
}

/// No idle pooled connections: a pooled connection belongs to the tokio runtime that opened it,
/// and a shared stack is used from many `#[tokio::test]` runtimes.
fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A random alphanumeric string, for passwords and unique names.
pub fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// One bcrypt htpasswd line, made by `htpasswd -Bbn` (cost 4: the registry checks it on every
/// request, and the default cost makes big tests measurably slower).
fn htpasswd_line(user: &str, password: &str) -> Result<String> {
    let htpasswd = find_tool(&["htpasswd"])?;
    let out = std::process::Command::new(htpasswd)
        .args(["-Bbn", "-C", "4", user, password])
        .output()
        .context("running htpasswd")?;
    ensure!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout)?;
    Ok(format!("{}\n", line.trim_end()))
}
