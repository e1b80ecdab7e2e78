//! Registry authentication: anonymous, Basic (including ECR's `AWS:<token>`), and the Bearer
//! token challenge, with credentials that can be refreshed while a run is going on.
//!
//! ECR's authorization token lasts 12 hours, and a long nightly run or a resumed upload can
//! outlive it, so credentials come from a provider that is asked again after a 401 instead of a
//! string fixed at start-up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::error::RegistryError;

/// A username and password (ECR: `AWS` and the decoded authorization token), or an OAuth2
/// refresh token (Docker's `identitytoken`) for registries that hand one out instead.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Used with the OAuth2 `grant_type=refresh_token` form at a token realm.
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            refresh_token: None,
        }
    }

    /// Only a refresh token: tokens come from the OAuth2 POST form.
    pub fn refresh_token(token: impl Into<String>) -> Self {
        Credentials {
            username: String::new(),
            password: String::new(),
            refresh_token: Some(token.into()),
        }
    }

    fn has_password(&self) -> bool {
        !self.username.is_empty() || !self.password.is_empty()
    }

    /// `Authorization: Basic …` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Source of registry credentials. `invalidate` is called after the registry rejects them, so
/// a caching provider (ECR) fetches a fresh token on the next call.
pub trait CredentialProvider: Send + Sync {
    fn credentials(&self) -> BoxFuture<'_, Result<Option<Credentials>, RegistryError>>;
    fn invalidate(&self) {}
}

/// Fixed credentials, or none (anonymous).
pub struct StaticCredentials(pub Option<Credentials>);

impl CredentialProvider for StaticCredentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Option<Credentials>, RegistryError>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

/// Token scopes, merged per resource: `repository:a:pull,push` and `repository:b:pull` stay
/// two scopes (two `scope` parameters), while `repository:a:pull` and `repository:a:push`
/// become one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scopes(BTreeMap<(String, String), BTreeSet<String>>);

impl Scopes {
    pub(crate) fn one(typ: &str, name: &str, actions: &[&str]) -> Scopes {
        let mut s = Scopes::default();
        s.add(typ, name, actions.iter().map(|a| a.to_string()));
        s
    }

    fn add(&mut self, typ: &str, name: &str, actions: impl IntoIterator<Item = String>) -> bool {
        let set = self.0.entry((typ.to_owned(), name.to_owned())).or_default();
        let before = set.len();
        set.extend(actions);
        set.len() > before
    }

    /// A challenge's `scope`: space-separated `type:name:action,…`. Malformed parts are
    /// skipped (the name may hold no colon, but split at the first and last one anyway).
    pub(crate) fn parse(s: &str) -> Scopes {
        let mut out = Scopes::default();
        for part in s.split_whitespace() {
            let Some((typ, rest)) = part.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            if typ.is_empty() || name.is_empty() {
                continue;
            }
            out.add(
                typ,
                name,
                actions
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned),
            );
        }
        out
    }

    /// Adds `other`; true if that widened the set.
    pub(crate) fn merge(&mut self, other: &Scopes) -> bool {
        let mut widened = false;
        for ((t, n), actions) in &other.0 {
            widened |= self.add(t, n, actions.iter().cloned());
        }
        widened
    }

    /// One `scope` parameter per resource.
    pub(crate) fn params(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|((t, n), a)| {
                format!(
                    "{t}:{n}:{}",
                    a.iter().map(String::as_str).collect::<Vec<_>>().join(",")
                )
            })
            .collect()
    }

    fn key(&self) -> String {
        self.params().join(" ")
    }
}

/// What the registry asked for in its `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
}

impl Challenge {
    pub(crate) fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut map = HashMap::new();
        let mut rest = params;
        while let Some((key, after)) = rest.split_once('=') {
            let key = key
                .trim()
                .trim_start_matches(',')
                .trim()
                .to_ascii_lowercase();
            let after = after.trim_start();
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                match quoted.find('"') {
                    Some(end) => (&quoted[..end], &quoted[end + 1..]),
                    None => (quoted, ""),
                }
            } else {
                match after.find(',') {
                    Some(end) => (&after[..end], &after[end..]),
                    None => (after, ""),
                }
            };
            map.insert(key, value.to_owned());
            rest = next;
        }
        Some(Challenge::Bearer {
            realm: map.remove("realm")?,
            service: map.remove("service"),
            scope: map.remove("scope"),
            error: map.remove("error"),
        })
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// When to ask for a new token: before it expires, by a fifth of its life but at most 10 s.
/// `issued_at` (RFC 3339) shortens the remaining life when the token was issued earlier than
/// it reached us; a time in the future (clock skew) is ignored. `expires_in` defaults to 60 s,
/// as the token spec says.
fn renew_at(
    now: Instant,
    now_wall: chrono::DateTime<chrono::Utc>,
    expires_in: Option<u64>,
    issued_at: Option<&str>,
) -> Instant {
    let lifetime = Duration::from_secs(expires_in.filter(|s| *s > 0).unwrap_or(60));
    let age = issued_at
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| (now_wall - t.with_timezone(&chrono::Utc)).to_std().ok())
        .unwrap_or_default()
        .min(lifetime);
    let margin = (lifetime / 5).min(Duration::from_secs(10));
    now + (lifetime - age).saturating_sub(margin)
}

/// How a token was asked for, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenFlow {
    Get,
    OAuth2Refresh,
}

/// Per-client authentication state: the scheme learned from the first challenge, Bearer tokens
/// cached per scope set until shortly before they expire, and an OAuth2 refresh token when the
/// realm gave one.
pub(crate) struct AuthState {
    provider: Arc<dyn CredentialProvider>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Token>>,
    refresh_token: Mutex<Option<String>>,
    /// One token fetch at a time: concurrent requests for the same scopes wait and reuse it.
    fetching: Mutex<()>,
}

/// What to do after a 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Nothing can help: report the 401.
    No,
    /// Send again (with new credentials, a new token, or a token for the wider scope).
    Yes,
}

impl AuthState {
    pub(crate) fn new(provider: Arc<dyn CredentialProvider>) -> Self {
        AuthState {
            provider,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            refresh_token: Mutex::new(None),
            fetching: Mutex::new(()),
        }
    }

    /// The `Authorization` header to send for `scopes`, if the registry has told us how.
    pub(crate) async fn header(
        &self,
        http: &reqwest::Client,
        scopes: &Scopes,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = self.challenge.lock().await.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => {
                Ok(self.provider.credentials().await?.map(|c| c.basic_header()))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.key();
                if let Some(v) = self.cached(&key).await {
                    return Ok(Some(v));
                }
                let _one = self.fetching.lock().await;
                if let Some(v) = self.cached(&key).await {
                    return Ok(Some(v));
                }
                let (token, flow) = self
                    .fetch_token(http, &realm, service.as_deref(), scopes)
                    .await?;
                tracing::debug!(?flow, scopes = %key, "registry token fetched");
                let header = format!("Bearer {}", token.value);
                self.tokens.lock().await.insert(key, token);
                Ok(Some(header))
            }
        }
    }

    async fn cached(&self, key: &str) -> Option<String> {
        let tokens = self.tokens.lock().await;
        let t = tokens.get(key)?;
        (t.renew_at > Instant::now()).then(|| format!("Bearer {}", t.value))
    }

    /// Records a 401's challenge; widens `scopes` to the scope the challenge names.
    /// `sent` is whether the refused request carried credentials or a token.
    pub(crate) async fn on_unauthorized(
        &self,
        www_authenticate: Option<&str>,
        sent: bool,
        scopes: &mut Scopes,
    ) -> Retry {
        let Some(ch) = www_authenticate.and_then(Challenge::parse) else {
            return Retry::No;
        };
        let mut current = self.challenge.lock().await;
        let retry = match &ch {
            Challenge::Bearer { scope, error, .. } => {
                let widened = scope
                    .as_deref()
                    .is_some_and(|s| scopes.merge(&Scopes::parse(s)));
                if widened || !sent {
                    Retry::Yes
                } else if error.as_deref() == Some("insufficient_scope") {
                    // A new token for the same scope would be granted the same.
                    Retry::No
                } else {
                    // Refused as invalid: expired early, revoked, or the credentials behind it
                    // changed. Ask again.
                    self.tokens.lock().await.remove(&scopes.key());
                    self.provider.invalidate();
                    Retry::Yes
                }
            }
            Challenge::Basic => {
                if sent {
                    self.provider.invalidate();
                }
                Retry::Yes
            }
        };
        *current = Some(ch);
        retry
    }

    /// A token from the realm: the OAuth2 POST form when a refresh token is known (falling back
    /// to GET when the realm has no such endpoint or refuses the refresh token and a password
    /// is at hand), GET with Basic credentials otherwise.
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
    ) -> Result<(Token, TokenFlow), RegistryError> {
        let creds = self.provider.credentials().await?;
        let stored = self.refresh_token.lock().await.clone();
        let refresh = stored.or_else(|| creds.as_ref().and_then(|c| c.refresh_token.clone()));
        if let Some(rt) = refresh {
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", rt),
                ("client_id", "ecr-vault".into()),
                ("scope", scopes.params().join(" ")),
            ];
            if let Some(s) = service {
                form.push(("service", s.to_owned()));
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&form)
                .finish();
            let resp = http
                .post(realm)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
                .send()
                .await
                .map_err(|e| auth_error(realm, e.to_string()))?;
            let status = resp.status().as_u16();
            let has_password = creds.as_ref().is_some_and(Credentials::has_password);
            match status {
                200..=299 => {
                    return Ok((
                        self.token_from(realm, resp).await?,
                        TokenFlow::OAuth2Refresh,
                    ));
                }
                404 | 405 if has_password => {}
                400 | 401 | 403 if has_password => {
                    // The refresh token is no longer good; the password still may be.
                    *self.refresh_token.lock().await = None;
                }
                _ => {
                    return Err(auth_error(
                        realm,
                        format!("token endpoint answered HTTP {status} to the OAuth2 refresh"),
                    ));
                }
            }
        }
        let mut url = url::Url::parse(realm)
            .map_err(|e| auth_error(realm, format!("invalid token realm: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for p in scopes.params() {
                q.append_pair("scope", &p);
            }
        }
        let mut req = http.get(url);
        if let Some(c) = creds.filter(Credentials::has_password) {
            req = req.header(reqwest::header::AUTHORIZATION, c.basic_header());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| auth_error(realm, e.to_string()))?;
        if !resp.status().is_success() {
            return Err(auth_error(
                realm,
                format!("token endpoint answered HTTP {}", resp.status().as_u16()),
            ));
        }
        Ok((self.token_from(realm, resp).await?, TokenFlow::Get))
    }

    async fn token_from(
        &self,
        realm: &str,
        resp: reqwest::Response,
    ) -> Result<Token, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
            issued_at: Option<String>,
            refresh_token: Option<String>,
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| auth_error(realm, format!("unreadable token response: {e}")))?;
        let value = body
            .token
            .filter(|t| !t.is_empty())
            .or(body.access_token)
            .ok_or_else(|| auth_error(realm, "token response has no token".into()))?;
        if let Some(rt) = body.refresh_token.filter(|t| !t.is_empty()) {
            *self.refresh_token.lock().await = Some(rt);
        }
        Ok(Token {
            value,
            renew_at: renew_at(
                Instant::now(),
                chrono::Utc::now(),
                body.expires_in,
                body.issued_at.as_deref(),
            ),
        })
    }
}

fn auth_error(realm: &str, reason: String) -> RegistryError {
    RegistryError::Auth {
        url: realm.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: None,
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None);
    }

    #[test]
    fn scopes_merge_per_resource_and_render_one_parameter_each() {
        let mut s = Scopes::one("repository", "target/app", &["pull", "push"]);
        assert!(s.merge(&Scopes::one("repository", "from/app", &["pull"])));
        assert_eq!(
            s.params(),
            vec![
                "repository:from/app:pull",
                "repository:target/app:pull,push"
            ]
        );
        assert!(!s.merge(&Scopes::parse(
            "repository:target/app:push,pull repository:from/app:pull"
        )));
        assert!(s.merge(&Scopes::parse("repository:from/app:pull,push")));
        assert_eq!(
            Scopes::parse("junk repository::pull :x:y").params().len(),
            0
        );
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let in_secs = |t: Instant| t.duration_since(now).as_secs_f64();
        // 60 s token: renewed 10 s early.
        assert_eq!(in_secs(renew_at(now, wall, Some(60), None)), 50.0);
        // 5 s token: a fifth early, never treated as longer than it is.
        assert_eq!(in_secs(renew_at(now, wall, Some(5), None)), 4.0);
        // No expires_in: the spec's 60 s.
        assert_eq!(in_secs(renew_at(now, wall, None, None)), 50.0);
        // Issued 30 s ago with 60 s to live: 20 s left before renewal.
        let issued = (wall - chrono::Duration::seconds(30)).to_rfc3339();
        assert_eq!(in_secs(renew_at(now, wall, Some(60), Some(&issued))), 20.0);
        // Issued in the future (skewed clock): ignored.
        let future = (wall + chrono::Duration::seconds(300)).to_rfc3339();
        assert_eq!(in_secs(renew_at(now, wall, Some(60), Some(&future))), 50.0);
        // Issued long ago: renew at once.
        let old = (wall - chrono::Duration::seconds(3600)).to_rfc3339();
        assert_eq!(in_secs(renew_at(now, wall, Some(60), Some(&old))), 0.0);
    }

    #[test]
    fn challenge_error_is_kept() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="http://127.0.0.1:1/token",service="s",scope="repository:a:pull repository:b:pull,push",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/token".into(),
                service: Some("s".into()),
                scope: Some("repository:a:pull repository:b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
    }
}
