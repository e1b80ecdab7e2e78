//! A Docker token server: the `realm` of a registry configured with `auth: token`, the way
//! Docker Hub, GHCR, Harbor, Quay and GitLab authenticate.
//!
//! The registry (the real `docker-registry`, see [`crate::registry::RegistryOptions::token`])
//! answers 401 with `Bearer realm=…,service=…,scope=…`; the client asks this server for a
//! token and presents it. The registry checks it exactly as distribution 2.8 does
//! (`registry/auth/token`): RS256 signature by the leaf certificate of the `x5c` header chain,
//! which must chain to `rootcertbundle`; `iss`, `aud`; `exp`/`nbf` (with distribution's
//! 60-second leeway); and an `access` claim covering every action the request needs.
//!
//! This server is a small in-process hyper service because no package-installable token
//! server exists for distribution; it issues what real ones issue:
//! - `GET /token?service=…&scope=…&scope=…` with Basic credentials (or none: an anonymous
//!   token with no access), answering `token`, `access_token`, `expires_in`, `issued_at`;
//! - the OAuth2 form, `POST /token` with `grant_type=password` (and `access_type=offline`
//!   for a `refresh_token`) or `grant_type=refresh_token`, `scope` space-separated;
//! - per-repository `access` claims exactly as requested, minus actions a test denies
//!   ([`TokenServer::deny`]); a short lifetime a test can change while running.
//!
//! Keys: a root CA and a leaf signing certificate made by the `openssl` CLI at start-up (RSA
//! 2048, valid two days); the leaf's PKCS#8 key signs with `ring`. Every issued token is
//! recorded ([`TokenServer::issued`]) so tests can see refreshes and scopes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::paths::find_tool;
use crate::process::server_dir;
use crate::registry::random_token;

/// The `service` (token audience) the test registries announce.
pub const SERVICE: &str = "ecr-vault-test-registry";
/// The `iss` of issued tokens, trusted by the test registries.
pub const ISSUER: &str = "ecr-vault-test-token-issuer";

/// How a token was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `GET` with Basic credentials (or anonymous).
    Get,
    /// OAuth2 `POST`, `grant_type=password`.
    Password,
    /// OAuth2 `POST`, `grant_type=refresh_token`.
    Refresh,
}

/// One issued token.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Empty for anonymous.
    pub user: String,
    pub grant: Grant,
    /// Granted scopes, `type:name:action,action`, in the order requested.
    pub scopes: Vec<String>,
    pub lifetime: Duration,
    pub at: Instant,
}

struct State {
    users: HashMap<String, String>,
    refresh_tokens: HashMap<String, String>,
    lifetime: Duration,
    denied: Vec<(String, String)>,
    /// Never grant `registry:catalog:*`, as Docker Hub, GHCR and Quay do not.
    no_catalog: bool,
    issued: Vec<Issued>,
}

struct Inner {
    signer: ring::signature::RsaKeyPair,
    /// Base64 (standard) DER of the leaf, then the root.
    x5c: Vec<String>,
    state: Mutex<State>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running token server on 127.0.0.1; stops when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    root_cert: PathBuf,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    /// Makes the key pair and certificates, and starts serving on a free loopback port.
    /// Tokens live `lifetime` (whole seconds, at least one).
    pub async fn start(lifetime: Duration) -> Result<TokenServer> {
        let dir = server_dir("token")?;
        let pki = make_pki(dir.path()).await?;
        let signer = ring::signature::RsaKeyPair::from_pkcs8(&pki.leaf_key_der)
            .map_err(|e| anyhow::anyhow!("openssl's leaf key does not load: {e}"))?;
        let inner = Arc::new(Inner {
            signer,
            x5c: vec![
                STANDARD.encode(&pki.leaf_der),
                STANDARD.encode(&pki.root_der),
            ],
            state: Mutex::new(State {
                users: HashMap::new(),
                refresh_tokens: HashMap::new(),
                lifetime: whole_seconds(lifetime),
                denied: Vec::new(),
                no_catalog: false,
                issued: Vec::new(),
            }),
        });
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(TokenServer {
            addr,
            inner,
            root_cert: pki.root_pem,
            task,
            _dir: dir,
        })
    }

    /// The realm: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// PEM file with the root certificate, for the registry's `rootcertbundle`.
    pub fn root_cert_path(&self) -> &Path {
        &self.root_cert
    }

    /// Lets `user` log in with `password`.
    pub fn add_user(&self, user: &str, password: &str) {
        self.inner
            .state()
            .users
            .insert(user.to_string(), password.to_string());
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.inner.state().lifetime = whole_seconds(lifetime);
    }

    /// Never grants `action` on repositories named `repo` or under `repo/`: the token leaves it
    /// out, as real token servers do for actions a user may not take.
    pub fn deny(&self, repo: &str, action: &str) {
        self.inner
            .state()
            .denied
            .push((repo.to_string(), action.to_string()));
    }

    /// Never grants the catalog scope from now on: `/v2/_catalog` answers 401 to every
    /// client, as on hosted registries that do not list their repositories.
    pub fn deny_catalog(&self) {
        self.inner.state().no_catalog = true;
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.inner.state().issued.clone()
    }

    /// A token for `scopes` (e.g. `repository:a/b:*`), without asking over HTTP: for the
    /// harness's own raw calls. Not recorded in [`TokenServer::issued`].
    pub fn mint(&self, subject: &str, scopes: &[String]) -> Result<String> {
        let lifetime = self.inner.state().lifetime;
        let access = scopes.iter().filter_map(|s| parse_scope(s)).collect();
        mint(&self.inner, subject, access, lifetime)
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

struct Pki {
    root_pem: PathBuf,
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

/// A root CA and a leaf signed by it, both RSA 2048, with the `openssl` CLI.
async fn make_pki(dir: &Path) -> Result<Pki> {
    let openssl = find_tool(&["openssl"])?;
    let p = |name: &str| dir.join(name).display().to_string();
    let steps: [Vec<String>; 4] = [
        vec![
            "req".into(),
            "-x509".into(),
            "-newkey".into(),
            "rsa:2048".into(),
            "-nodes".into(),
            "-keyout".into(),
            p("root.key"),
            "-out".into(),
            p("root.pem"),
            "-days".into(),
            "2".into(),
            "-subj".into(),
            "/CN=ecr-vault test token root".into(),
            "-addext".into(),
            "basicConstraints=critical,CA:TRUE".into(),
            "-addext".into(),
            "keyUsage=critical,keyCertSign,cRLSign".into(),
        ],
        vec![
            "req".into(),
            "-newkey".into(),
            "rsa:2048".into(),
            "-nodes".into(),
            "-keyout".into(),
            p("leaf.key"),
            "-out".into(),
            p("leaf.csr"),
            "-subj".into(),
            "/CN=ecr-vault test token signer".into(),
        ],
        vec![
            "x509".into(),
            "-req".into(),
            "-in".into(),
            p("leaf.csr"),
            "-CA".into(),
            p("root.pem"),
            "-CAkey".into(),
            p("root.key"),
            "-set_serial".into(),
            "2".into(),
            "-days".into(),
            "2".into(),
            "-out".into(),
            p("leaf.pem"),
        ],
        vec![
            "pkcs8".into(),
            "-topk8".into(),
            "-nocrypt".into(),
            "-in".into(),
            p("leaf.key"),
            "-outform".into(),
            "DER".into(),
            "-out".into(),
            p("leaf.key.der"),
        ],
    ];
    for args in &steps {
        let out = tokio::process::Command::new(&openssl)
            .args(args)
            .output()
            .await
            .context("running openssl")?;
        ensure!(
            out.status.success(),
            "openssl {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Pki {
        root_der: pem_to_der(&std::fs::read_to_string(dir.join("root.pem"))?)?,
        leaf_der: pem_to_der(&std::fs::read_to_string(dir.join("leaf.pem"))?)?,
        leaf_key_der: std::fs::read(dir.join("leaf.key.der"))?,
        root_pem: dir.join("root.pem"),
    })
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    ensure!(!body.is_empty(), "no PEM block");
    Ok(STANDARD.decode(body)?)
}

/// `type:name:actions` → (type, name, actions). The name may itself hold no `:`, but a
/// registry host with a port in front of it would, so split at the first and last colon.
fn parse_scope(scope: &str) -> Option<(String, String, Vec<String>)> {
    let (typ, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if typ.is_empty() || name.is_empty() {
        return None;
    }
    let actions = actions
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    Some((typ.to_string(), name.to_string(), actions))
}

fn mint(
    inner: &Inner,
    subject: &str,
    access: Vec<(String, String, Vec<String>)>,
    lifetime: Duration,
) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": inner.x5c});
    let access: Vec<_> = access
        .into_iter()
        .map(|(t, n, a)| serde_json::json!({"type": t, "name": n, "actions": a}))
        .collect();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + lifetime.as_secs(),
        "nbf": now,
        "iat": now,
        "jti": random_token(16),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let mut sig = vec![0; inner.signer.public().modulus_len()];
    inner
        .signer
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &inner).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({"error": code}))
}

async fn handle(req: Request<Incoming>, inner: &Inner) -> Response<Full<Bytes>> {
    if req.uri().path() != "/token" {
        return oauth_error(StatusCode::NOT_FOUND, "not_found");
    }
    match *req.method() {
        hyper::Method::GET => handle_get(req, inner),
        hyper::Method::POST => handle_post(req, inner).await,
        _ => oauth_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    }
}

/// Multi-valued form or query parameters.
fn params(raw: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}

fn first<'a>(p: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    p.get(key).and_then(|v| v.first()).map(String::as_str)
}

fn handle_get(req: Request<Incoming>, inner: &Inner) -> Response<Full<Bytes>> {
    let p = params(req.uri().query().unwrap_or("").as_bytes());
    let user = match req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => String::new(),
        Some(h) => match check_basic(inner, h) {
            Some(u) => u,
            None => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_credentials"),
        },
    };
    if first(&p, "service") != Some(SERVICE) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_service");
    }
    let scopes: Vec<String> = p
        .get("scope")
        .into_iter()
        .flatten()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match issue(inner, &user, Grant::Get, &scopes) {
        Ok((token, lifetime, issued_at)) => reply(
            StatusCode::OK,
            serde_json::json!({
                "token": token,
                "access_token": token,
                "expires_in": lifetime.as_secs(),
                "issued_at": issued_at,
            }),
        ),
        Err(_) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    }
}

async fn handle_post(req: Request<Incoming>, inner: &Inner) -> Response<Full<Bytes>> {
    let Ok(body) = req.into_body().collect().await else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let p = params(&body.to_bytes());
    if first(&p, "service") != Some(SERVICE) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_service");
    }
    if first(&p, "client_id").is_none_or(str::is_empty) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let (user, grant) = match first(&p, "grant_type") {
        Some("password") => {
            let (Some(u), Some(pw)) = (first(&p, "username"), first(&p, "password")) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            if inner.state().users.get(u).map(String::as_str) != Some(pw) {
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant");
            }
            (u.to_string(), Grant::Password)
        }
        Some("refresh_token") => {
            let rt = first(&p, "refresh_token").unwrap_or("");
            match inner.state().refresh_tokens.get(rt) {
                Some(u) => (u.clone(), Grant::Refresh),
                None => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant"),
            }
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let scopes: Vec<String> = p
        .get("scope")
        .into_iter()
        .flatten()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let Ok((token, lifetime, issued_at)) = issue(inner, &user, grant, &scopes) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let mut body = serde_json::json!({
        "access_token": token,
        "expires_in": lifetime.as_secs(),
        "issued_at": issued_at,
        "scope": scopes.join(" "),
    });
    let offline = first(&p, "access_type") == Some("offline");
    match grant {
        Grant::Password if offline => {
            let rt = random_token(32);
            inner.state().refresh_tokens.insert(rt.clone(), user);
            body["refresh_token"] = rt.into();
        }
        Grant::Refresh => {
            body["refresh_token"] = first(&p, "refresh_token").unwrap_or("").into();
        }
        _ => {}
    }
    reply(StatusCode::OK, body)
}

fn check_basic(inner: &Inner, header: &str) -> Option<String> {
    let (scheme, b64) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (u, p) = raw.split_once(':')?;
    (inner.state().users.get(u).map(String::as_str) == Some(p)).then(|| u.to_string())
}

/// Grants the requested scopes (anonymous: none), minus denied actions; records and signs.
fn issue(
    inner: &Inner,
    user: &str,
    grant: Grant,
    scopes: &[String],
) -> Result<(String, Duration, String)> {
    let (lifetime, access) = {
        let st = inner.state();
        let access: Vec<(String, String, Vec<String>)> = if user.is_empty() {
            Vec::new()
        } else {
            scopes
                .iter()
                .filter_map(|s| parse_scope(s))
                .map(|(t, n, actions)| {
                    let actions = actions
                        .into_iter()
                        .filter(|a| {
                            let repo_denied = t == "repository"
                                && st.denied.iter().any(|(repo, act)| {
                                    act == a && (n == *repo || n.starts_with(&format!("{repo}/")))
                                });
                            !(repo_denied || (t == "registry" && n == "catalog" && st.no_catalog))
                        })
                        .collect();
                    (t, n, actions)
                })
                .collect()
        };
        (st.lifetime, access)
    };
    let granted = access
        .iter()
        .map(|(t, n, a)| format!("{t}:{n}:{}", a.join(",")))
        .collect();
    let token = mint(inner, user, access, lifetime)?;
    inner.state().issued.push(Issued {
        user: user.to_string(),
        grant,
        scopes: granted,
        lifetime,
        at: Instant::now(),
    });
    let issued_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok((token, lifetime, issued_at))
}

/// The `Authorization` header for the harness's own call `method path` (path from `/v2/`),
/// with every action on the repository it names.
pub(crate) fn scope_for_path(path: &str) -> Result<String> {
    let rest = path.strip_prefix("/v2/").unwrap_or(path);
    if rest.is_empty() {
        return Ok(String::new());
    }
    if rest.starts_with("_catalog") {
        return Ok("registry:catalog:*".to_string());
    }
    for marker in ["/manifests/", "/blobs/", "/tags/", "/referrers/"] {
        if let Some(i) = rest.find(marker) {
            return Ok(format!("repository:{}:*", &rest[..i]));
        }
    }
    bail!("no repository in registry path {path}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scopes_parse_with_several_actions() {
        assert_eq!(
            parse_scope("repository:a/b:pull,push"),
            Some((
                "repository".into(),
                "a/b".into(),
                vec!["pull".into(), "push".into()]
            ))
        );
        assert_eq!(parse_scope("nonsense"), None);
        assert_eq!(
            scope_for_path("/v2/x/y/blobs/uploads/abc").unwrap(),
            "repository:x/y:*"
        );
        assert_eq!(
            scope_for_path("/v2/_catalog").unwrap(),
            "registry:catalog:*"
        );
    }
}
