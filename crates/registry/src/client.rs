//! The registry client: one HTTP connection pool, authentication, retries, and the manifest,
//! blob and listing calls of the OCI Distribution API.
//!
//! Every name and reference in a URL has already been validated by [`crate::reference`] and
//! [`crate::digest`], so paths are built by plain formatting.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::auth::{AuthState, CredentialProvider, Retry, Scopes};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::limit::{AimdConfig, AimdPermit, Limits, is_throttle_status};
use crate::manifest::{ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES, Manifest};
use crate::reference::{Reference, RepoName};
use crate::retry::Backoff;

/// Connection settings. Defaults suit both ECR and a local registry.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// Longest silence on a connection before it is treated as dropped.
    pub read_timeout: Duration,
    pub user_agent: String,
    /// Longest a single request may spend waiting out throttles (429, 503). Within it, a
    /// throttle does not use up one of `backoff.attempts` and its `Retry-After` is honoured in
    /// full (Docker Hub's rate limit says when to come back); a `Retry-After` beyond what is
    /// left fails the request at once instead of retrying too early.
    pub max_throttle_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("ecr-vault/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_throttle_wait: Duration::from_secs(300),
        }
    }
}

/// Throttles one request may wait out, whatever their `Retry-After` (see
/// [`ClientOptions::max_throttle_wait`]).
const MAX_THROTTLE_WAITS: u32 = 30;

/// A registry endpoint. Cheap to clone; clones share the pool and the auth state.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: AuthState,
    opts: ClientOptions,
    /// Adaptive concurrency per (registry host, action); see [`crate::limit`].
    limits: Limits,
}

/// A blob body as a stream of chunks, with the length the registry announced.
pub struct BlobStream {
    pub content_length: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

/// Result of starting a blob upload.
pub enum UploadStart {
    /// The registry mounted the blob from another repository; nothing to send.
    Mounted,
    /// Send the bytes to this upload URL.
    Location(Url),
}

/// Existence and size of a manifest, from HEAD.
#[derive(Clone, Debug)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

enum Scope<'a> {
    Pull(&'a RepoName),
    Push(&'a RepoName),
    /// Push on the target and pull on the repository the blob is mounted from: distribution
    /// (and Docker Hub, Harbor, GHCR) check both for `POST …/uploads/?mount=…&from=…`.
    Mount {
        target: &'a RepoName,
        from: &'a RepoName,
    },
    Catalog,
}

impl Scope<'_> {
    fn scopes(&self) -> Scopes {
        match self {
            Scope::Pull(r) => Scopes::one("repository", r.as_str(), &["pull"]),
            Scope::Push(r) => Scopes::one("repository", r.as_str(), &["pull", "push"]),
            Scope::Mount { target, from } => {
                let mut s = Scopes::one("repository", target.as_str(), &["pull", "push"]);
                s.merge(&Scopes::one("repository", from.as_str(), &["pull"]));
                s
            }
            Scope::Catalog => Scopes::one("registry", "catalog", &["*"]),
        }
    }
}

impl RegistryClient {
    /// A client for the registry at `base_url` (`https://host[:port]` or `http://…` for a local
    /// test registry).
    pub fn new(
        base_url: &str,
        credentials: Arc<dyn CredentialProvider>,
        opts: ClientOptions,
    ) -> Result<Self, RegistryError> {
        let mut base = Url::parse(base_url).map_err(|e| RegistryError::Protocol {
            url: base_url.to_owned(),
            reason: format!("invalid registry URL: {e}"),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(RegistryError::Protocol {
                url: base_url.to_owned(),
                reason: "registry URL must be http(s)://host[:port]".into(),
            });
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            // Follows ECR's redirect to presigned S3 URLs; reqwest drops Authorization when the
            // host changes, which S3 requires ("Only one auth mechanism allowed").
            .redirect(reqwest::redirect::Policy::limited(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| RegistryError::Protocol {
                url: base_url.to_owned(),
                reason: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth: AuthState::new(credentials),
                opts,
                limits: Limits::new([(
                    "blob-get",
                    // Blob transfers hold their slot for the whole body: start modestly.
                    AimdConfig {
                        initial: 8,
                        min: 1,
                        max: 32,
                        decrease: 0.5,
                    },
                )]),
            }),
        })
    }

    /// The registry's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The adaptive concurrency controllers of this client (limits and throttle counts).
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// `host[:port]` of the registry, as used in image references.
    pub fn host(&self) -> String {
        let b = &self.inner.base;
        match (b.host_str(), b.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => String::new(),
        }
    }

    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.inner
            .base
            .join(path)
            .map_err(|e| RegistryError::Protocol {
                url: path.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Sends a request that has no body or a small in-memory one, so it can be repeated: with
    /// auth challenges answered and retryable failures retried with backoff.
    async fn send(
        &self,
        method: Method,
        url: Url,
        scope: &Scope<'_>,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let (resp, permit) = self.send_limited(method, url, scope, build).await?;
        permit.success();
        Ok(resp)
    }

    /// [`Self::send`], returning the concurrency slot with the response, so a streamed body
    /// keeps it until the stream is dropped. Each attempt waits for a slot of its (host,
    /// action) controller; a 429 or 503 cuts that controller's limit.
    async fn send_limited(
        &self,
        method: Method,
        url: Url,
        scope: &Scope<'_>,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<(Response, AimdPermit), RegistryError> {
        let mut scopes = scope.scopes();
        let backoff = self.inner.opts.backoff;
        let limiter = self
            .inner
            .limits
            .get(&self.host(), action_of(&method, &url));
        let mut attempt = 0;
        let mut auth_rounds = 0;
        let mut throttle_waits = 0;
        let mut throttled_for = Duration::ZERO;
        loop {
            let auth = self.inner.auth.header(&self.inner.http, &scopes).await?;
            let mut req = self.inner.http.request(method.clone(), url.clone());
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let permit = limiter.acquire().await;
            let result = build(req).send().await;
            let err = match result {
                // Up to three rounds: learn the challenge, renew a refused token, widen the
                // scope to what the challenge names.
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && auth_rounds < 3 => {
                    drop(permit);
                    let www = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if self
                        .inner
                        .auth
                        .on_unauthorized(www.as_deref(), auth.is_some(), &mut scopes)
                        .await
                        == Retry::Yes
                    {
                        auth_rounds += 1;
                        continue;
                    }
                    status_error(&method, &url, resp).await
                }
                Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => {
                    return Ok((resp, permit));
                }
                Ok(resp) if is_throttle_status(resp.status().as_u16()) => {
                    permit.throttled();
                    let remaining = header_str(resp.headers(), "ratelimit-remaining");
                    let err = status_error(&method, &url, resp).await;
                    // Throttles spend the time budget, not the attempts.
                    let wait = match err.retry_after() {
                        Some(ra) if !ra.is_zero() => ra,
                        // No (or a zero) Retry-After: jittered backoff, so a registry that
                        // says "now" forever still costs time and ends.
                        _ => backoff.delay(throttle_waits, None).max(backoff.base),
                    };
                    throttle_waits += 1;
                    let budget = self.inner.opts.max_throttle_wait;
                    if throttle_waits > MAX_THROTTLE_WAITS || throttled_for + wait > budget {
                        tracing::warn!(%url, ?wait, ?throttled_for, ?remaining, "registry throttle outlasts the wait budget");
                        return Err(err);
                    }
                    throttled_for += wait;
                    tracing::info!(%url, ?wait, ?remaining, "registry throttled the request; waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(resp) => status_error(&method, &url, resp).await,
                Err(e) => transport_error(&method, &url, e),
            };
            attempt += 1;
            if !err.is_retryable()
                || matches!(err, RegistryError::DigestMismatch { .. })
                || attempt >= backoff.attempts
            {
                return Err(err);
            }
            let wait = backoff.delay(attempt - 1, err.retry_after());
            tracing::debug!(%url, error = %err, ?wait, "retrying registry request");
            tokio::time::sleep(wait).await;
        }
    }

    /// `GET /v2/`: checks reachability and primes authentication.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("v2/")?;
        // A 401 here is normal before auth; `send` answers the challenge when it can.
        match self.send(Method::GET, url, &Scope::Catalog, &|r| r).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(401) => Err(e),
            Err(e) => Err(e),
        }
    }

    /// Fetches a manifest with every supported `Accept` type and returns its exact bytes,
    /// verified against the digest when fetched by digest, and size-capped.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Manifest, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{}", reference.as_path()))?;
        let resp = self
            .send(Method::GET, url.clone(), &Scope::Pull(repo), &|r| {
                r.header(header::ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE.as_str());
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let what = format!("manifest {repo}@{reference}");
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &what, &url).await?;
        let expected = match reference {
            Reference::Digest(d) => d.clone(),
            // By tag there is nothing to check against but the bytes themselves; the header is
            // advisory (and was wrong in some registries for converted manifests).
            Reference::Tag(_) => Digest::of(&bytes),
        };
        if let (Reference::Tag(_), Some(h)) = (reference, header_digest.as_deref())
            && h != expected.to_string()
        {
            tracing::warn!(%what, header = h, computed = %expected, "Docker-Content-Digest disagrees with the bytes; using the bytes");
        }
        Manifest::parse(&expected, content_type.as_deref(), bytes)
    }

    /// `HEAD` a manifest: its digest and media type without the body, or `None` if absent.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{}", reference.as_path()))?;
        match self
            .send(Method::HEAD, url, &Scope::Pull(repo), &|r| {
                r.header(header::ACCEPT, ACCEPT_MANIFESTS)
            })
            .await
        {
            Ok(resp) => {
                let h = resp.headers();
                Ok(Some(ManifestHead {
                    digest: header_str(h, "docker-content-digest")
                        .and_then(|d| Digest::parse(&d).ok()),
                    media_type: header_str(h, header::CONTENT_TYPE.as_str()),
                    size: content_length(h),
                }))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams a blob, from byte `offset` (a ranged GET, for resuming after a dropped
    /// connection). Redirects to storage (ECR → S3) are followed without our Authorization.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let (resp, permit) = self
            .send_limited(
                Method::GET,
                url.clone(),
                &Scope::Pull(repo),
                &|r| match &range {
                    Some(v) => r.header(header::RANGE, v),
                    None => r,
                },
            )
            .await?;
        permit.succeeded();
        if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(RegistryError::Protocol {
                url: url.to_string(),
                reason: format!(
                    "asked for a range from byte {offset}, got HTTP {}",
                    resp.status().as_u16()
                ),
            });
        }
        let content_length = resp.content_length();
        // The slot stays taken while the body streams: blob transfers are what a throttled
        // registry needs fewer of.
        let stream = resp
            .bytes_stream()
            .map(move |r| {
                let _slot = &permit;
                r.map_err(|e| transport_error(&Method::GET, &url, e))
            })
            .boxed();
        Ok(BlobStream {
            content_length,
            stream,
        })
    }

    /// Size of a blob if the repository has it.
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        match self
            .send(Method::HEAD, url, &Scope::Pull(repo), &|r| r)
            .await
        {
            Ok(resp) => Ok(Some(content_length(resp.headers()).unwrap_or(0))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload, asking the registry to mount the blob from `mount.1` if given. A
    /// mount the registry refuses (401/403: no pull on the source for this login) becomes a
    /// plain upload, and so does a 202 that did not mount.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Result<UploadStart, RegistryError> {
        let plain = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let empty = |r: reqwest::RequestBuilder| r.header(header::CONTENT_LENGTH, "0");
        let mut resp = None;
        if let Some((d, from)) = mount {
            let mut url = plain.clone();
            url.query_pairs_mut()
                .append_pair("mount", &d.to_string())
                .append_pair("from", from.as_str());
            let scope = Scope::Mount { target: repo, from };
            match self.send(Method::POST, url, &scope, &empty).await {
                Ok(r) if r.status() == StatusCode::CREATED => return Ok(UploadStart::Mounted),
                Ok(r) => resp = Some(r),
                Err(e) if matches!(e.status(), Some(401 | 403)) => {
                    tracing::info!(%repo, %from, digest = %d, error = %e, "mount refused; uploading the blob");
                }
                Err(e) => return Err(e),
            }
        }
        let resp = match resp {
            Some(r) => r,
            None => {
                self.send(Method::POST, plain.clone(), &Scope::Push(repo), &empty)
                    .await?
            }
        };
        let url = plain;
        let loc = header_str(resp.headers(), header::LOCATION.as_str()).ok_or_else(|| {
            RegistryError::Protocol {
                url: url.to_string(),
                reason: "upload started without a Location".into(),
            }
        })?;
        Ok(UploadStart::Location(url.join(&loc).map_err(|e| {
            RegistryError::Protocol {
                url: loc.clone(),
                reason: e.to_string(),
            }
        })?))
    }

    /// Finishes an upload with one monolithic, streamed `PUT ?digest=` of `size` bytes. ECR's
    /// chunked PATCH is unreliable, so this is the only upload path. Not retried here: the body
    /// is a one-shot stream; the caller restarts the whole blob.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        location: Url,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let mut url = location;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let auth = self
            .inner
            .auth
            .header(&self.inner.http, &Scope::Push(repo).scopes())
            .await?;
        let mut req = self
            .inner
            .http
            .put(url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size.to_string())
            .body(body);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&Method::PUT, &url, e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(status_error(&Method::PUT, &url, resp).await)
    }

    /// Pushes manifest bytes unchanged under `reference` and checks the digest the registry
    /// computed.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{}", reference.as_path()))?;
        let resp = self
            .send(Method::PUT, url, &Scope::Push(repo), &|r| {
                r.header(header::CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        let expected = Digest::of(&bytes);
        if let Some(got) = header_str(resp.headers(), "docker-content-digest")
            && got != expected.to_string()
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest pushed to {repo}:{reference}"),
                expected: expected.to_string(),
                actual: got,
            });
        }
        Ok(())
    }

    /// Deletes a manifest by digest (used by tests and drills; backup never deletes).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repo}/manifests/{digest}"))?;
        self.send(Method::DELETE, url, &Scope::Push(repo), &|r| r)
            .await
            .map(|_| ())
    }

    /// All tags of a repository, following `Link` pagination. Raw strings: the caller validates
    /// each one and reports those that fail.
    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let first = self.url(&format!("v2/{repo}/tags/list?n=1000"))?;
        self.paginate(first, &Scope::Pull(repo), |b: TagList| {
            b.tags.unwrap_or_default()
        })
        .await
    }

    /// All repository names from `_catalog`, following `Link` pagination. Raw strings.
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Option<Vec<String>>,
        }
        let first = self.url("v2/_catalog?n=1000")?;
        self.paginate(first, &Scope::Catalog, |b: Catalog| {
            b.repositories.unwrap_or_default()
        })
        .await
    }

    async fn paginate<T: serde::de::DeserializeOwned>(
        &self,
        first: Url,
        scope: &Scope<'_>,
        items: impl Fn(T) -> Vec<String>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 100_000 {
                return Err(RegistryError::Protocol {
                    url: url.to_string(),
                    reason: "pagination does not end".into(),
                });
            }
            let resp = self.send(Method::GET, url.clone(), scope, &|r| r).await?;
            next = next_link(resp.headers(), &url);
            let bytes = read_limited(resp, 64 * 1024 * 1024, "listing", &url).await?;
            let body: T = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("unreadable listing: {e}"),
            })?;
            out.extend(items(body));
        }
        Ok(out)
    }

    /// Manifests that name `digest` as their subject: the referrers API, or, where the registry
    /// has none (distribution 2.8, some ECR paths), the `sha256-<hex>` tag fallback index.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Referrers, RegistryError> {
        if let Some(manifests) = self.referrers_api(repo, digest).await? {
            return Ok(Referrers {
                via_tag_schema: false,
                manifests,
            });
        }
        let tag = crate::reference::Tag::parse(&digest.referrers_tag())?;
        match self.get_manifest(repo, &Reference::Tag(tag)).await {
            Ok(m) if m.kind == crate::manifest::ManifestKind::Index => Ok(Referrers {
                via_tag_schema: true,
                manifests: m.references,
            }),
            Ok(_) => Ok(Referrers::default()),
            Err(e) if e.is_not_found() => Ok(Referrers::default()),
            Err(e) => Err(e),
        }
    }

    /// The OCI 1.1 referrers API alone: `None` when the registry does not serve it (400, 404,
    /// 405, or an answer that is not an index). Referrers in the tag schema show up in a tag
    /// listing anyway, so a caller that already listed tags needs only this.
    pub async fn referrers_api(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<crate::manifest::Descriptor>>, RegistryError> {
        let url = self.url(&format!("v2/{repo}/referrers/{digest}"))?;
        match self
            .send(Method::GET, url.clone(), &Scope::Pull(repo), &|r| {
                r.header(header::ACCEPT, crate::manifest::OCI_INDEX)
            })
            .await
        {
            Ok(resp)
                if header_str(resp.headers(), header::CONTENT_TYPE.as_str())
                    .is_some_and(|c| c.starts_with(crate::manifest::OCI_INDEX)) =>
            {
                let bytes = read_limited(resp, MAX_MANIFEST_BYTES, "referrers", &url).await?;
                // The API's index is generated per request, so it has no digest to check.
                let ix = Manifest::parse(&Digest::of(&bytes), None, bytes)?;
                Ok(Some(ix.references))
            }
            Ok(_) => Ok(None),
            Err(e) if matches!(e.status(), Some(400 | 404 | 405)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What `referrers` found, and how.
#[derive(Debug, Default)]
pub struct Referrers {
    pub via_tag_schema: bool,
    pub manifests: Vec<crate::manifest::Descriptor>,
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// `Link: </v2/…?last=x&n=100>; rel="next"`
fn next_link(h: &HeaderMap, current: &Url) -> Option<Url> {
    let link = header_str(h, header::LINK.as_str())?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        current.join(target).ok()
    })
}

async fn read_limited(
    resp: Response,
    limit: u64,
    what: &str,
    url: &Url,
) -> Result<Bytes, RegistryError> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(&Method::GET, url, e))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn transport_error(method: &Method, url: &Url, e: reqwest::Error) -> RegistryError {
    RegistryError::Transport {
        method: method_name(method),
        url: redact(url),
        source: e,
    }
}

/// The controller a request counts against: blob downloads, manifest reads, uploads (any
/// write), and everything else (listings, pings).
fn action_of(method: &Method, url: &Url) -> &'static str {
    let path = url.path();
    if method == Method::GET || method == Method::HEAD {
        if path.contains("/blobs/uploads") {
            "upload"
        } else if path.contains("/blobs/") {
            "blob-get"
        } else if path.contains("/manifests/") {
            "manifest-get"
        } else {
            "list"
        }
    } else {
        "upload"
    }
}

async fn status_error(method: &Method, url: &Url, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = header_str(resp.headers(), header::RETRY_AFTER.as_str())
        .and_then(|v| parse_retry_after(&v, chrono::Utc::now()));
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().filter(|c| !c.is_control()).take(300).collect();
    RegistryError::Status {
        method: method_name(method),
        url: redact(url),
        status,
        retry_after,
        body,
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3); a date in the past
/// means now.
fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Upload URLs and presigned redirects carry secrets in the query; keep them out of errors.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "REQUEST",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            "</v2/a/tags/list?last=x&n=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        let cur = Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=2").unwrap();
        assert_eq!(
            next_link(&h, &cur).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=x&n=2"
        );
        assert!(next_link(&HeaderMap::new(), &cur).is_none());
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn refuses_non_http_urls() {
        let creds = Arc::new(crate::auth::StaticCredentials(None));
        assert!(
            RegistryClient::new("file:///etc", creds.clone(), ClientOptions::default()).is_err()
        );
        assert!(RegistryClient::new("not a url", creds, ClientOptions::default()).is_err());
    }
}

/// The token flow against the real `docker-registry` with `auth: token` and the testkit's
/// token server (see `ecr_vault_testkit::token`).
#[cfg(test)]
mod token_auth {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::{Credentials, StaticCredentials};
    use ecr_vault_testkit::fixtures::ImageBuilder;
    use ecr_vault_testkit::token::Grant;
    use ecr_vault_testkit::{Fault, FaultProxy, Registry, RegistryOptions, Rule, unique_name};

    async fn token_registry() -> Registry {
        Registry::start_with(RegistryOptions {
            token: Some(Duration::from_secs(60)),
            ..RegistryOptions::default()
        })
        .await
        .unwrap()
    }

    fn client(url: &str, creds: Credentials) -> RegistryClient {
        RegistryClient::new(
            url,
            Arc::new(StaticCredentials(Some(creds))),
            ClientOptions {
                backoff: crate::Backoff::none(),
                ..ClientOptions::default()
            },
        )
        .unwrap()
    }

    fn user(r: &Registry) -> Credentials {
        let (u, p) = r.credentials().unwrap();
        Credentials::new(u, p)
    }

    /// An image in `<ns>/from` and the digest of its layer.
    async fn seeded(r: &Registry) -> (RepoName, RepoName, Digest) {
        let ns = unique_name("tok");
        let from = format!("{ns}/from");
        let img = ImageBuilder::oci(7).layers(&[3000]).build().unwrap();
        let pushed = img.push(r, &from, &["v1"]).await.unwrap();
        let layer = pushed
            .blobs
            .iter()
            .max_by_key(|(_, s)| *s)
            .unwrap()
            .0
            .clone();
        (
            RepoName::parse(&from).unwrap(),
            RepoName::parse(&format!("{ns}/to")).unwrap(),
            Digest::parse(&layer).unwrap(),
        )
    }

    #[tokio::test]
    async fn mount_asks_for_push_on_the_target_and_pull_on_the_source() {
        let r = token_registry().await;
        let (from, to, layer) = seeded(&r).await;
        let c = client(&r.url(), user(&r));
        assert!(matches!(
            c.start_upload(&to, Some((&layer, &from))).await.unwrap(),
            UploadStart::Mounted
        ));
        assert_eq!(c.head_blob(&to, &layer).await.unwrap(), Some(3000));
        let issued = r.token_server().unwrap().issued();
        assert!(
            issued.iter().any(|t| t.grant == Grant::Get
                && t.scopes
                    == vec![
                        format!("repository:{from}:pull"),
                        format!("repository:{to}:pull,push")
                    ]),
            "{issued:#?}"
        );
    }

    #[tokio::test]
    async fn a_challenge_naming_a_wider_scope_is_retried_with_a_token_for_it() {
        let r = token_registry().await;
        let (from, to, layer) = seeded(&r).await;
        let c = client(&r.url(), user(&r));
        // A token for push on the target, cached.
        c.start_upload(&to, None).await.unwrap();
        let before = r.token_server().unwrap().issued().len();
        // Ask for the mount with too narrow a scope (what the client did before): the
        // registry's challenge names pull on the source too, and the retry carries it.
        let mut url = c.url(&format!("v2/{to}/blobs/uploads/")).unwrap();
        url.query_pairs_mut()
            .append_pair("mount", &layer.to_string())
            .append_pair("from", from.as_str());
        let resp = c
            .send(Method::POST, url, &Scope::Push(&to), &|r| {
                r.header(header::CONTENT_LENGTH, "0")
            })
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let scopes: Vec<_> = r
            .token_server()
            .unwrap()
            .issued()
            .into_iter()
            .map(|t| t.scopes)
            .collect();
        assert_eq!(
            scopes.last().unwrap(),
            &vec![
                format!("repository:{from}:pull"),
                format!("repository:{to}:pull,push")
            ]
        );
        assert_eq!(scopes.len(), before + 1, "one retry, with one new token");
        assert_eq!(
            scopes[before - 1],
            vec![format!("repository:{to}:pull,push")]
        );
    }

    #[tokio::test]
    async fn a_mount_from_a_repository_without_the_blob_becomes_a_plain_upload() {
        let r = token_registry().await;
        let (_, to, layer) = seeded(&r).await;
        let empty = RepoName::parse(&format!("{}-empty", to.as_str())).unwrap();
        let c = client(&r.url(), user(&r));
        // distribution answers 202 and an upload session when it cannot mount.
        assert!(matches!(
            c.start_upload(&to, Some((&layer, &empty))).await.unwrap(),
            UploadStart::Location(_)
        ));
    }

    #[tokio::test]
    async fn a_refused_mount_becomes_a_plain_upload() {
        let r = token_registry().await;
        let (from, to, layer) = seeded(&r).await;
        let proxy = FaultProxy::start(&r.url()).await.unwrap();
        let c = client(&proxy.url(), user(&r));
        // GHCR-style 403, then distribution's own 401 when the token lacks a scope.
        let refusals = [
            Fault::status(403),
            Fault::Status {
                status: 401,
                headers: vec![(
                    "www-authenticate".into(),
                    format!(
                        "Bearer realm=\"{}\",service=\"{}\",error=\"insufficient_scope\"",
                        r.token_server().unwrap().realm(),
                        ecr_vault_testkit::token::SERVICE
                    ),
                )],
                body: r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.into(),
            },
        ];
        for fault in refusals {
            proxy.clear_rules();
            let rule = proxy.add_rule(
                Rule::new("/v2/*/blobs/uploads/", fault)
                    .method("POST")
                    .query("mount"),
            );
            let start = c.start_upload(&to, Some((&layer, &from))).await.unwrap();
            let UploadStart::Location(loc) = start else {
                panic!("refused mount reported as mounted");
            };
            assert!(proxy.rule_stats(rule).triggered >= 1);
            let data = r.get_blob(from.as_str(), &layer.to_string()).await.unwrap();
            c.put_blob(&to, loc, &layer, data.len() as u64, data.into())
                .await
                .unwrap();
            assert_eq!(c.head_blob(&to, &layer).await.unwrap(), Some(3000));
        }
    }

    #[tokio::test]
    async fn an_oauth2_refresh_token_gets_tokens_by_post() {
        let r = token_registry().await;
        let (from, _, layer) = seeded(&r).await;
        let ts = r.token_server().unwrap();
        let (u, p) = r.credentials().unwrap();
        let form = [
            ("grant_type", "password"),
            ("username", u),
            ("password", p),
            ("client_id", "test"),
            ("access_type", "offline"),
            ("service", ecr_vault_testkit::token::SERVICE),
        ];
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let body: serde_json::Value = reqwest::Client::new()
            .post(ts.realm())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rt = body["refresh_token"].as_str().unwrap();
        let c = client(&r.url(), Credentials::refresh_token(rt));
        assert_eq!(c.head_blob(&from, &layer).await.unwrap(), Some(3000));
        assert_eq!(ts.issued().last().unwrap().grant, Grant::Refresh);

        // A refresh token the realm no longer knows, with a password at hand: GET instead.
        let mut creds = user(&r);
        creds.refresh_token = Some("revoked".into());
        let c = client(&r.url(), creds);
        assert_eq!(c.head_blob(&from, &layer).await.unwrap(), Some(3000));
        assert_eq!(ts.issued().last().unwrap().grant, Grant::Get);

        // Without one, the refusal is reported as an auth error, not retried forever.
        let c = client(&r.url(), Credentials::refresh_token("revoked"));
        let err = c.head_blob(&from, &layer).await.unwrap_err();
        assert!(matches!(err, RegistryError::Auth { .. }), "{err}");
    }

    #[tokio::test]
    async fn wrong_password_is_an_auth_error() {
        let r = token_registry().await;
        let (from, _, layer) = seeded(&r).await;
        let c = client(&r.url(), Credentials::new("tester", "wrong"));
        let err = c.head_blob(&from, &layer).await.unwrap_err();
        assert!(matches!(err, RegistryError::Auth { .. }), "{err}");
    }
}

/// Rate limits as Docker Hub sends them, injected by the testkit's fault proxy in front of a
/// real registry (no registry throttles on cue).
#[cfg(test)]
mod throttling {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::{Credentials, StaticCredentials};
    use ecr_vault_testkit::fixtures::ImageBuilder;
    use ecr_vault_testkit::{Fault, FaultProxy, Registry, Rule, unique_name};
    use std::time::Instant;

    fn rate_limited(retry_after: u64) -> Fault {
        Fault::Status {
            status: 429,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), retry_after.to_string()),
                ("ratelimit-limit".into(), "100;w=21600".into()),
                ("ratelimit-remaining".into(), "0;w=21600".into()),
            ],
            body: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#.into(),
        }
    }

    async fn setup() -> (Registry, FaultProxy, RegistryClient, RepoName, Digest) {
        let r = Registry::start().await.unwrap();
        let repo = format!("{}/app", unique_name("rl"));
        let p = ImageBuilder::oci(3)
            .layers(&[1000])
            .build()
            .unwrap()
            .push(&r, &repo, &["v1"])
            .await
            .unwrap();
        let proxy = FaultProxy::start(&r.url()).await.unwrap();
        let (u, pw) = r.credentials().unwrap();
        let c = RegistryClient::new(
            &proxy.url(),
            Arc::new(StaticCredentials(Some(Credentials::new(u, pw)))),
            ClientOptions {
                max_throttle_wait: Duration::from_secs(30),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let d = Digest::parse(&p.blobs[0].0).unwrap();
        (r, proxy, c, RepoName::parse(&repo).unwrap(), d)
    }

    #[tokio::test]
    async fn more_throttles_than_retry_attempts_are_waited_out_as_retry_after_says() {
        let (_r, proxy, c, repo, d) = setup().await;
        let n = u64::from(Backoff::default().attempts) + 1;
        let rule = proxy.add_rule(
            Rule::new("/v2/*/blobs/*", rate_limited(1))
                .method("HEAD")
                .times(n),
        );
        let start = Instant::now();
        assert!(c.head_blob(&repo, &d).await.unwrap().is_some());
        assert_eq!(proxy.rule_stats(rule).triggered, n);
        assert!(
            start.elapsed() >= Duration::from_secs(n),
            "did not honour Retry-After"
        );
        assert!(c.limits().snapshot().iter().any(|(_, _, _, t)| *t >= 1));
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_wait_budget_fails_at_once() {
        let (_r, proxy, c, repo, d) = setup().await;
        proxy.add_rule(Rule::new("/v2/*/blobs/*", rate_limited(3600)).method("HEAD"));
        let start = Instant::now();
        let err = c.head_blob(&repo, &d).await.unwrap_err();
        assert_eq!(err.status(), Some(429));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
