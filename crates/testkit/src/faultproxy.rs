//! A fault-injecting, request-counting HTTP/1.1 reverse proxy for tests.
//!
//! It listens on 127.0.0.1 (free port) in front of one upstream (the real registry or the real
//! SeaweedFS S3) and forwards every request with its `Host` header unchanged, so S3 SigV4
//! signatures stay valid and the registry's `Location` URLs keep pointing at the proxy. Bodies
//! stream both ways frame by frame (100+ MiB bodies are never buffered whole). Faults are
//! injected where a real server cannot be made to misbehave on cue; everything else is the
//! real server's behaviour.
//!
//! # API
//! - [`FaultProxy::start`]`(upstream_url)` → [`FaultProxy::url`] / [`FaultProxy::addr`] /
//!   [`FaultProxy::host`].
//! - Rules: [`FaultProxy::add_rule`]`(`[`Rule`]`)` → [`RuleId`]; [`FaultProxy::remove_rule`],
//!   [`FaultProxy::clear_rules`], [`FaultProxy::rule_stats`] (matches, triggers, bytes seen).
//!   A rule matches on method, a path glob (`*` matches any run of characters, `/` included),
//!   query keys ([`Rule::query`]) and header names ([`Rule::header`]), and fires on the Nth
//!   match ([`Rule::nth`]), every match (default), after N matches ([`Rule::after`]), at most
//!   K times ([`Rule::times`]) or with a seeded probability ([`Rule::probability`]). Only the
//!   first rule (in insertion order) that fires acts on a request; an observe-only rule
//!   ([`Fault::Observe`]) never blocks others.
//! - Faults ([`Fault`]): reset the connection at a byte offset of the response or request body
//!   (fixed or seeded-random, [`Offset`]); canned statuses ([`Fault::s3_internal_error`],
//!   [`Fault::s3_slow_down`], [`Fault::too_many_requests`], [`Fault::unauthorized`], or any
//!   [`Fault::Status`]); truncate a response body (framing kept, so the client sees an early
//!   close, or `Content-Length` rewritten, so it sees a short but well-framed body); flip a
//!   byte in a response or request body; delay; hold a request at a [`Gate`] until the test
//!   opens it ([`Fault::Hold`], a sync point that needs no sleep); rewrite text in a small
//!   response body ([`Fault::Rewrite`], e.g. a field the real server cannot produce).
//! - Outages: [`FaultProxy::set_unreachable`] (every new connection and every request on an
//!   open one is reset until re-enabled) and [`FaultProxy::refuse_next_connections`]`(n)`.
//! - Counting: [`FaultProxy::requests`] (one [`RequestRecord`] per request, with the headers
//!   that decide how S3 authorizes a write: lock mode and date, `If-None-Match`, checksum),
//!   [`FaultProxy::count`]`(method, path_prefix)`, [`FaultProxy::counts`] by (method,
//!   [`route_class`]), [`FaultProxy::totals`], [`FaultProxy::reset_counts`].
//! - Sync points (no sleeps): [`FaultProxy::wait_for`]`(what, timeout, predicate)` re-checks
//!   the predicate every time anything happens in the proxy (a request, a body chunk, a rule
//!   firing, a refused connection) until it holds or the deadline passes; e.g. "rule X fired",
//!   "N bytes of UploadPart passed".
//!
//! A reset sets `SO_LINGER` 0 before the socket closes, so the client sees a real TCP RST; bytes
//! still in flight may be dropped with it, so a client sees *at most* the offset's bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// A byte position in a body.
#[derive(Clone, Copy, Debug)]
pub enum Offset {
    /// Exactly this many bytes pass first.
    At(u64),
    /// Uniform in `[0, len)` from this seed, where `len` is the body's declared length (or 64 KiB
    /// when unknown), so one seed always picks the same place in the same body.
    Random(u64),
}

impl Offset {
    fn resolve(self, len: Option<u64>) -> u64 {
        match self {
            Offset::At(n) => n,
            Offset::Random(seed) => {
                let len = len.unwrap_or(64 * 1024).max(1);
                StdRng::seed_from_u64(seed).random_range(0..len)
            }
        }
    }
}

/// What a rule does when it fires.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Nothing: count matches and bytes only (for sync points such as "N bytes of UploadPart").
    Observe,
    /// Forward, then reset the connection after this many response body bytes.
    ResetResponse(Offset),
    /// Forward, but reset the connection after this many request body bytes (an upload cut).
    ResetRequest(Offset),
    /// Answer without contacting the upstream (the request body is drained first so the
    /// client reads the answer, not a broken pipe).
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Forward, and end the response body after this many bytes. With `keep_length` the
    /// upstream `Content-Length` stays and the connection closes early; without, the length is
    /// rewritten so the short body is well framed.
    Truncate { at: Offset, keep_length: bool },
    /// Forward, and XOR one response body byte with 0xFF.
    FlipResponse(Offset),
    /// Forward, and XOR one request body byte with 0xFF.
    FlipRequest(Offset),
    /// Wait this long, then forward.
    Delay(Duration),
    /// Wait until the gate opens, then forward: the test acts while the request is held.
    Hold(Gate),
    /// Forward, then replace each `(from, to)` in the response body (buffered whole, so only
    /// for small API answers) and fix `Content-Length`.
    Rewrite(Vec<(String, String)>),
}

/// A sync point for [`Fault::Hold`]: requests wait until [`Gate::open`].
#[derive(Clone, Debug)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }

    /// Lets every held and later request through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn pass(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Fault {
    /// S3 `500 InternalError`.
    pub fn s3_internal_error() -> Fault {
        Fault::s3_error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    }

    /// S3 `503 SlowDown`.
    pub fn s3_slow_down() -> Fault {
        Fault::s3_error(503, "SlowDown", "Please reduce your request rate.")
    }

    /// An S3 XML error document with this status and code.
    pub fn s3_error(status: u16, code: &str, message: &str) -> Fault {
        Fault::Status {
            status,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>faultproxy</RequestId></Error>"
            ),
        }
    }

    /// Registry `429 TOOMANYREQUESTS` with `Retry-After: secs`.
    pub fn too_many_requests(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), retry_after_secs.to_string()),
            ],
            body: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"injected by faultproxy"}]}"#
                .into(),
        }
    }

    /// Registry `401 UNAUTHORIZED` with a Basic challenge (an expired token).
    pub fn unauthorized() -> Fault {
        Fault::Status {
            status: 401,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (
                    "www-authenticate".into(),
                    "Basic realm=\"faultproxy\"".into(),
                ),
            ],
            body: r#"{"errors":[{"code":"UNAUTHORIZED","message":"token expired (faultproxy)"}]}"#
                .into(),
        }
    }

    /// A plain status with an empty body.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// Which requests a fault applies to, and when it fires. Build with [`Rule::new`] and the
/// chained setters.
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<String>,
    path: String,
    query_keys: Vec<String>,
    headers: Vec<String>,
    skip: u64,
    times: Option<u64>,
    probability: Option<(f64, u64)>,
    fault: Fault,
}

impl Rule {
    /// Every request whose path matches the glob `path` (`*` = any run of characters).
    pub fn new(path: &str, fault: Fault) -> Rule {
        Rule {
            method: None,
            path: path.to_string(),
            query_keys: Vec::new(),
            headers: Vec::new(),
            skip: 0,
            times: None,
            probability: None,
            fault,
        }
    }

    /// Only this method (`GET`, `PUT`, ...).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose query string has this key (`partNumber`, `uploadId`, `uploads`).
    pub fn query(mut self, key: &str) -> Rule {
        self.query_keys.push(key.to_string());
        self
    }

    /// Only requests that carry this header (any value), e.g. `authorization`.
    pub fn header(mut self, name: &str) -> Rule {
        self.headers.push(name.to_ascii_lowercase());
        self
    }

    /// Fire on the `n`th matching request only (1-based).
    pub fn nth(mut self, n: u64) -> Rule {
        self.skip = n.saturating_sub(1);
        self.times = Some(1);
        self
    }

    /// Let the first `n` matching requests through, then fire.
    pub fn after(mut self, n: u64) -> Rule {
        self.skip = n;
        self
    }

    /// Fire at most `k` times.
    pub fn times(mut self, k: u64) -> Rule {
        self.times = Some(k);
        self
    }

    /// Fire on each eligible match with probability `p`, drawn from `seed` (reproducible for
    /// the same request order).
    pub fn probability(mut self, p: f64, seed: u64) -> Rule {
        self.probability = Some((p, seed));
        self
    }
}

/// A handle to a rule, for [`FaultProxy::rule_stats`] and [`FaultProxy::remove_rule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleId(u64);

/// What a rule has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Requests that matched its method, path and query.
    pub matches: u64,
    /// Times its fault was applied.
    pub triggered: u64,
    /// Request body bytes of matching requests that reached the proxy.
    pub request_bytes: u64,
    /// Response body bytes of matching requests sent to the client.
    pub response_bytes: u64,
}

/// One request that went through the proxy.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// [`route_class`] of the request.
    pub class: &'static str,
    /// The status sent to the client; `None` when the connection failed first.
    pub status: Option<u16>,
    /// The rule that acted on it, if any (observe-only rules are not recorded here).
    pub fault: Option<RuleId>,
    /// The request headers that decide how S3 authorizes a write ([`RECORDED_HEADERS`] and
    /// every `x-amz-checksum-*`), lower-cased names, for request-conformance checks
    /// (`tests/conformance.rs`).
    pub headers: BTreeMap<String, String>,
}

/// Headers [`RequestRecord::headers`] keeps (besides `x-amz-checksum-*`): never credentials.
pub const RECORDED_HEADERS: &[&str] = &[
    "if-none-match",
    "if-match",
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
    "x-amz-bypass-governance-retention",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
    "x-amz-storage-class",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-copy-source",
    "x-amz-target",
    "content-md5",
];

fn recorded_headers(h: &hyper::HeaderMap) -> BTreeMap<String, String> {
    h.iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            RECORDED_HEADERS.contains(&k) || k.starts_with("x-amz-checksum-")
        })
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Totals since start or the last [`FaultProxy::reset_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub connections: u64,
    pub refused_connections: u64,
    /// Request body bytes read from clients.
    pub bytes_up: u64,
    /// Response body bytes written to clients.
    pub bytes_down: u64,
}

/// A coarse name for what a request does, for counting: registry routes under `/v2/`, S3
/// routes otherwise.
pub fn route_class(method: &str, path: &str, query: Option<&str>) -> &'static str {
    let q = query.unwrap_or("");
    let has = |k: &str| {
        q.split('&')
            .any(|kv| kv.split('=').next().is_some_and(|key| key == k))
    };
    if path == "/v2/" || path == "/v2" {
        return "registry-ping";
    }
    if path.starts_with("/v2/") {
        return if path == "/v2/_catalog" {
            "registry-catalog"
        } else if path.contains("/blobs/uploads") {
            "registry-blob-upload"
        } else if path.contains("/blobs/") {
            "registry-blob"
        } else if path.contains("/manifests/") {
            "registry-manifest"
        } else if path.ends_with("/tags/list") {
            "registry-tags"
        } else if path.contains("/referrers/") {
            "registry-referrers"
        } else {
            "registry-other"
        };
    }
    let in_bucket = path.trim_start_matches('/').contains('/');
    match method {
        "POST" if has("uploads") => "s3-create-multipart",
        "POST" if has("uploadId") => "s3-complete-multipart",
        "PUT" if has("partNumber") => "s3-upload-part",
        "DELETE" if has("uploadId") => "s3-abort-multipart",
        "GET" if has("uploadId") => "s3-list-parts",
        "PUT" if has("retention") => "s3-put-retention",
        "GET" if has("retention") => "s3-get-retention",
        "GET" if has("versions") => "s3-list-versions",
        "GET" if !in_bucket => "s3-list",
        "HEAD" if in_bucket => "s3-head",
        "GET" if in_bucket => "s3-get",
        "PUT" if in_bucket => "s3-put",
        "DELETE" => "s3-delete",
        _ => "s3-other",
    }
}

struct RuleState {
    id: RuleId,
    rule: Rule,
    stats: RuleStats,
    rng: Option<StdRng>,
}

#[derive(Default)]
struct State {
    next_rule: u64,
    rules: Vec<RuleState>,
    removed: BTreeMap<RuleId, RuleStats>,
    records: Vec<RequestRecord>,
    totals: Totals,
    refuse_next: u64,
}

struct Inner {
    upstream: SocketAddr,
    state: Mutex<State>,
    unreachable: AtomicBool,
    events: watch::Sender<u64>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the proxy's state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.events.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.inner.upstream)
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Start a proxy in front of `upstream` (`http://127.0.0.1:PORT`, path ignored). The
    /// upstream must be on loopback.
    pub async fn start(upstream: &str) -> Result<FaultProxy> {
        let url = reqwest::Url::parse(upstream).with_context(|| format!("upstream {upstream}"))?;
        let host = url.host_str().context("upstream has no host")?;
        let port = url
            .port_or_known_default()
            .context("upstream has no port")?;
        let ip: std::net::IpAddr = match host {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            h => h
                .trim_matches(['[', ']'])
                .parse()
                .with_context(|| format!("upstream host {h} is not an IP"))?,
        };
        if !ip.is_loopback() {
            bail!("faultproxy only forwards to loopback, not {ip}");
        }
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (events, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            upstream: SocketAddr::new(ip, port),
            state: Mutex::new(State::default()),
            unreachable: AtomicBool::new(false),
            events,
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(FaultProxy { addr, inner, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn add_rule(&self, rule: Rule) -> RuleId {
        let mut st = self.inner.state();
        st.next_rule += 1;
        let id = RuleId(st.next_rule);
        let rng = rule
            .probability
            .map(|(_, seed)| StdRng::seed_from_u64(seed));
        st.rules.push(RuleState {
            id,
            rule,
            stats: RuleStats::default(),
            rng,
        });
        id
    }

    /// Stop applying a rule; its stats stay readable.
    pub fn remove_rule(&self, id: RuleId) {
        let mut st = self.inner.state();
        if let Some(i) = st.rules.iter().position(|r| r.id == id) {
            let r = st.rules.remove(i);
            st.removed.insert(id, r.stats);
        }
    }

    pub fn clear_rules(&self) {
        let mut st = self.inner.state();
        let rules = std::mem::take(&mut st.rules);
        for r in rules {
            st.removed.insert(r.id, r.stats);
        }
    }

    pub fn rule_stats(&self, id: RuleId) -> RuleStats {
        let st = self.inner.state();
        st.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.stats)
            .or_else(|| st.removed.get(&id).copied())
            .unwrap_or_default()
    }

    /// While on, new connections are reset at once and requests on open connections are
    /// reset before reaching the upstream: the server is "down".
    pub fn set_unreachable(&self, down: bool) {
        self.inner.unreachable.store(down, Ordering::SeqCst);
        self.inner.bump();
    }

    /// Reset the next `n` new connections.
    pub fn refuse_next_connections(&self, n: u64) {
        self.inner.state().refuse_next = n;
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.state().records.clone()
    }

    /// Requests with this method (any when empty) whose path starts with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> u64 {
        self.inner
            .state()
            .records
            .iter()
            .filter(|r| {
                (method.is_empty() || r.method == method) && r.path.starts_with(path_prefix)
            })
            .count() as u64
    }

    /// Requests by (method, [`route_class`]).
    pub fn counts(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut out = BTreeMap::new();
        for r in &self.inner.state().records {
            *out.entry((r.method.clone(), r.class)).or_insert(0) += 1;
        }
        out
    }

    pub fn totals(&self) -> Totals {
        self.inner.state().totals
    }

    /// Forget recorded requests and totals (rules and their stats stay).
    pub fn reset_counts(&self) {
        let mut st = self.inner.state();
        st.records.clear();
        st.totals = Totals::default();
    }

    /// Wait until `cond(self)` holds, re-checking whenever the proxy sees anything happen.
    /// Errors with `what` after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&FaultProxy) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.events.subscribe();
        loop {
            rx.borrow_and_update();
            if cond(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("faultproxy stopped while waiting for {what}"),
                Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Wait until rule `id` has fired at least `n` times.
    pub async fn wait_triggered(&self, id: RuleId, n: u64, timeout: Duration) -> Result<()> {
        self.wait_for(&format!("rule {id:?} to fire {n} times"), timeout, |p| {
            p.rule_stats(id).triggered >= n
        })
        .await
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let refuse = {
            let mut st = inner.state();
            st.totals.connections += 1;
            let refuse = inner.unreachable.load(Ordering::SeqCst) || st.refuse_next > 0;
            if refuse {
                st.refuse_next = st.refuse_next.saturating_sub(1);
                st.totals.refused_connections += 1;
            }
            refuse
        };
        inner.bump();
        if refuse {
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        tokio::spawn(async move {
            let ctl = Arc::new(ConnCtl::default());
            let io = ResettableIo {
                stream,
                ctl: ctl.clone(),
            };
            let upstream: Arc<tokio::sync::Mutex<Option<Upstream>>> = Arc::default();
            let svc = hyper::service::service_fn(move |req| {
                handle(req, inner.clone(), ctl.clone(), upstream.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

/// Per-client-connection switch: once set, the socket is closed with RST.
#[derive(Default)]
struct ConnCtl {
    reset: AtomicBool,
}

/// The client socket; after [`ConnCtl::reset`] is set, I/O fails and the drop sends RST.
struct ResettableIo {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl ResettableIo {
    fn check(&self) -> std::io::Result<()> {
        if self.ctl.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.ctl.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

type Upstream = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// What the matching step decided for one request.
struct Decision {
    fault: Option<(RuleId, Fault)>,
    /// Every rule that matched (fired or not), for byte accounting.
    matched: Vec<RuleId>,
    record: usize,
}

fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn decide(
    inner: &Inner,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &hyper::HeaderMap,
) -> Decision {
    let mut st = inner.state();
    let mut fault = None;
    let mut matched = Vec::new();
    for r in st.rules.iter_mut() {
        if r.rule.method.as_deref().is_some_and(|m| m != method)
            || !glob(&r.rule.path, path)
            || !r
                .rule
                .headers
                .iter()
                .all(|h| headers.contains_key(h.as_str()))
        {
            continue;
        }
        let q = query.unwrap_or("");
        if !r.rule.query_keys.iter().all(|k| {
            q.split('&')
                .any(|kv| kv.split('=').next().is_some_and(|key| key == k))
        }) {
            continue;
        }
        r.stats.matches += 1;
        matched.push(r.id);
        let observe = matches!(r.rule.fault, Fault::Observe);
        if fault.is_some() && !observe {
            continue;
        }
        let eligible =
            r.stats.matches > r.rule.skip && r.rule.times.is_none_or(|k| r.stats.triggered < k);
        let fires = eligible
            && match (r.rule.probability, r.rng.as_mut()) {
                (Some((p, _)), Some(rng)) => rng.random_bool(p.clamp(0.0, 1.0)),
                _ => true,
            };
        if fires {
            r.stats.triggered += 1;
            if !observe {
                fault = Some((r.id, r.rule.fault.clone()));
            }
        }
    }
    st.totals.requests += 1;
    st.records.push(RequestRecord {
        method: method.to_string(),
        path: path.to_string(),
        query: query.map(str::to_string),
        class: route_class(method, path, query),
        status: None,
        fault: fault.as_ref().map(|(id, _)| *id),
        headers: recorded_headers(headers),
    });
    let record = st.records.len() - 1;
    drop(st);
    inner.bump();
    Decision {
        fault,
        matched,
        record,
    }
}

fn set_status(inner: &Inner, record: usize, status: u16) {
    let mut st = inner.state();
    // A reset_counts() in between may have cleared the log.
    if let Some(r) = st.records.get_mut(record) {
        r.status = Some(status);
    }
}

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    req: Request<Incoming>,
    inner: Arc<Inner>,
    ctl: Arc<ConnCtl>,
    upstream: Arc<tokio::sync::Mutex<Option<Upstream>>>,
) -> Result<Response<ProxyBody>, BoxError> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let d = decide(&inner, &method, &path, query.as_deref(), req.headers());
    if inner.unreachable.load(Ordering::SeqCst) {
        ctl.reset.store(true, Ordering::SeqCst);
        return Err("faultproxy: server unreachable".into());
    }
    let (mut parts, body) = req.into_parts();
    let req_len = body.size_hint().exact();
    let mut up_plan = Plan::default();
    let mut down_plan = Plan::default();
    let mut rewrite_length = None;
    match d.fault.clone().map(|(_, f)| f) {
        None | Some(Fault::Observe) => {}
        Some(Fault::Status {
            status,
            headers,
            body: text,
        }) => {
            // Drain what the client sends so it reads our answer rather than a broken pipe.
            let mut counted = CountingBody::new(body, &inner, &d.matched, Direction::Up);
            while let Some(frame) = counted.frame().await {
                frame?;
            }
            let mut resp = Response::new(full(text));
            *resp.status_mut() = StatusCode::from_u16(status)?;
            for (k, v) in headers {
                resp.headers_mut().insert(
                    HeaderName::from_bytes(k.as_bytes())?,
                    HeaderValue::from_str(&v)?,
                );
            }
            set_status(&inner, d.record, status);
            inner.bump();
            return Ok(resp);
        }
        Some(Fault::Delay(t)) => tokio::time::sleep(t).await,
        Some(Fault::Hold(gate)) => gate.pass().await,
        Some(Fault::Rewrite(pairs)) => down_plan.pending = Some(Pending::Rewrite(pairs)),
        Some(Fault::ResetRequest(o)) => up_plan.reset_at = Some(o.resolve(req_len)),
        Some(Fault::FlipRequest(o)) => up_plan.flip_at = Some(o.resolve(req_len)),
        Some(Fault::ResetResponse(o)) => down_plan.pending = Some(Pending::Reset(o)),
        Some(Fault::FlipResponse(o)) => down_plan.pending = Some(Pending::Flip(o)),
        Some(Fault::Truncate { at, keep_length }) => {
            down_plan.pending = Some(Pending::Truncate(at));
            rewrite_length = Some(keep_length);
        }
    }

    strip_hop_by_hop(&mut parts.headers, &["te", "expect"]);
    let up_body = FaultBody {
        inner: CountingBody::new(body, &inner, &d.matched, Direction::Up).boxed(),
        plan: up_plan,
        pos: 0,
        done: false,
        ctl: ctl.clone(),
    };
    let up_req = Request::from_parts(parts, up_body.boxed());

    let mut guard = upstream.lock().await;
    let reusable = match guard.take() {
        Some(mut s) => s.ready().await.is_ok().then_some(s),
        None => None,
    };
    let mut sender = match reusable {
        Some(s) => s,
        None => connect(inner.upstream).await?,
    };
    let resp = match sender.send_request(up_req).await {
        Ok(r) => r,
        Err(e) => {
            // The upstream connection is unusable now; the client connection goes with it.
            ctl.reset.store(true, Ordering::SeqCst);
            inner.bump();
            return Err(e.into());
        }
    };
    *guard = Some(sender);
    drop(guard);

    let (mut parts, body) = resp.into_parts();
    let resp_len = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match down_plan.pending.take() {
        Some(Pending::Rewrite(pairs)) => {
            let counted = CountingBody::new(body, &inner, &d.matched, Direction::Down);
            let mut text =
                String::from_utf8_lossy(&counted.collect().await?.to_bytes()).into_owned();
            for (from, to) in &pairs {
                text = text.replace(from.as_str(), to);
            }
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
            strip_hop_by_hop(&mut parts.headers, &[]);
            set_status(&inner, d.record, parts.status.as_u16());
            return Ok(Response::from_parts(parts, full(text)));
        }
        Some(Pending::Reset(o)) => down_plan.reset_at = Some(o.resolve(resp_len)),
        Some(Pending::Flip(o)) => down_plan.flip_at = Some(o.resolve(resp_len)),
        Some(Pending::Truncate(o)) => {
            let at = o.resolve(resp_len);
            down_plan.truncate_at = Some(at);
            if rewrite_length == Some(false) {
                let at = resp_len.map_or(at, |l| l.min(at));
                parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(at));
            }
        }
        None => {}
    }
    strip_hop_by_hop(&mut parts.headers, &[]);
    set_status(&inner, d.record, parts.status.as_u16());
    let down = FaultBody {
        inner: CountingBody::new(body, &inner, &d.matched, Direction::Down).boxed(),
        plan: down_plan,
        pos: 0,
        done: false,
        ctl,
    };
    Ok(Response::from_parts(parts, down.boxed()))
}

async fn connect(addr: SocketAddr) -> Result<Upstream, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

enum Pending {
    Rewrite(Vec<(String, String)>),
    Reset(Offset),
    Flip(Offset),
    Truncate(Offset),
}

#[derive(Default)]
struct Plan {
    pending: Option<Pending>,
    reset_at: Option<u64>,
    truncate_at: Option<u64>,
    flip_at: Option<u64>,
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Counts body bytes into the totals and the matching rules' stats, waking waiters.
struct CountingBody {
    inner: Incoming,
    proxy: Arc<Inner>,
    rules: Vec<RuleId>,
    dir: Direction,
}

impl CountingBody {
    fn new(inner: Incoming, proxy: &Arc<Inner>, rules: &[RuleId], dir: Direction) -> CountingBody {
        CountingBody {
            inner,
            proxy: proxy.clone(),
            rules: rules.to_vec(),
            dir,
        }
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            let mut st = self.proxy.state();
            match self.dir {
                Direction::Up => st.totals.bytes_up += n,
                Direction::Down => st.totals.bytes_down += n,
            }
            for r in st.rules.iter_mut().filter(|r| self.rules.contains(&r.id)) {
                match self.dir {
                    Direction::Up => r.stats.request_bytes += n,
                    Direction::Down => r.stats.response_bytes += n,
                }
            }
            drop(st);
            self.proxy.bump();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Applies a [`Plan`] to a body stream, frame by frame.
struct FaultBody {
    inner: ProxyBody,
    plan: Plan,
    pos: u64,
    done: bool,
    ctl: Arc<ConnCtl>,
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.plan.reset_at.is_some_and(|r| this.pos >= r) {
            this.done = true;
            this.ctl.reset.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(anyhow!(
                "faultproxy: connection reset at byte {}",
                this.pos
            )
            .into())));
        }
        if this.plan.truncate_at.is_some_and(|t| this.pos >= t) {
            this.done = true;
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let limit = [this.plan.reset_at, this.plan.truncate_at]
            .into_iter()
            .flatten()
            .map(|l| l - this.pos)
            .min();
        if let Some(limit) = limit
            && (data.len() as u64) > limit
        {
            data.truncate(limit as usize);
        }
        if let Some(f) = this.plan.flip_at
            && f >= this.pos
            && f < this.pos + data.len() as u64
        {
            let mut m = BytesMut::from(&data[..]);
            m[(f - this.pos) as usize] ^= 0xFF;
            data = m.freeze();
        }
        this.pos += data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        if self.plan.reset_at.is_some() || self.plan.truncate_at.is_some() {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

/// A deadline-bounded poll for conditions the proxy does not observe itself.
pub async fn poll_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Removes the headers that describe one connection, not the message (RFC 9110 section 7.6.1),
/// plus `extra`: each hop of the proxy manages its own.
fn strip_hop_by_hop(headers: &mut hyper::HeaderMap, extra: &[&str]) {
    let hop = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ];
    for h in hop.iter().chain(extra) {
        headers.remove(*h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_registry_and_s3_paths() {
        assert!(glob("/v2/*/blobs/sha256:*", "/v2/a/b/blobs/sha256:00"));
        assert!(!glob("/v2/*/blobs/sha256:*", "/v2/a/manifests/x"));
        assert!(glob("/*/blobs/*", "/vault/prefix/blobs/sha256/ab"));
        assert!(glob("*", "/anything"));
    }

    #[test]
    fn route_classes_name_s3_multipart_steps() {
        assert_eq!(
            route_class("PUT", "/b/k", Some("partNumber=1&uploadId=x")),
            "s3-upload-part"
        );
        assert_eq!(
            route_class("POST", "/b/k", Some("uploads")),
            "s3-create-multipart"
        );
        assert_eq!(route_class("HEAD", "/b/k", None), "s3-head");
        assert_eq!(
            route_class("GET", "/v2/r/blobs/sha256:a", None),
            "registry-blob"
        );
    }
}
