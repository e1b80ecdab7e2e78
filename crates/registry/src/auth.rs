//! Registry authentication: anonymous, Basic (including ECR's `AWS:<token>`), and the Bearer
//! token challenge, with credentials that can be refreshed while a run is going on.
//!
//! ECR's authorization token lasts 12 hours, and a long nightly run or a resumed upload can
//! outlive it, so credentials come from a provider that is asked again after a 401 instead of a
//! string fixed at start-up.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::error::RegistryError;

/// A username and password (ECR: `AWS` and the decoded authorization token).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
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
        }
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

/// What the registry asked for in its `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
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
        })
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// Per-client authentication state: the scheme learned from the first challenge, and Bearer
/// tokens cached per scope until shortly before they expire.
pub(crate) struct AuthState {
    provider: Arc<dyn CredentialProvider>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl AuthState {
    pub(crate) fn new(provider: Arc<dyn CredentialProvider>) -> Self {
        AuthState {
            provider,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The `Authorization` header to send for `scope`, if the registry has told us how.
    pub(crate) async fn header(
        &self,
        http: &reqwest::Client,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = self.challenge.lock().await.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => {
                Ok(self.provider.credentials().await?.map(|c| c.basic_header()))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(t) = self.tokens.lock().await.get(scope)
                    && t.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self
                    .fetch_token(http, &realm, service.as_deref(), scope)
                    .await?;
                let header = format!("Bearer {}", token.value);
                self.tokens.lock().await.insert(scope.to_owned(), token);
                Ok(Some(header))
            }
        }
    }

    /// Records a 401's challenge. Returns false when retrying cannot help.
    pub(crate) async fn on_unauthorized(&self, www_authenticate: Option<&str>, sent: bool) -> bool {
        let Some(ch) = www_authenticate.and_then(Challenge::parse) else {
            return false;
        };
        let mut current = self.challenge.lock().await;
        if sent {
            // Our credentials or token were refused: they may have expired. Ask again.
            self.provider.invalidate();
            self.tokens.lock().await.clear();
        }
        *current = Some(ch);
        true
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        let mut url = url::Url::parse(realm).map_err(|e| RegistryError::Auth {
            url: realm.to_owned(),
            reason: format!("invalid token realm: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
        }
        let mut req = http.get(url);
        if let Some(c) = self.provider.credentials().await? {
            req = req.header(reqwest::header::AUTHORIZATION, c.basic_header());
        }
        let resp = req.send().await.map_err(|e| RegistryError::Auth {
            url: realm.to_owned(),
            reason: e.to_string(),
        })?;
        if !resp.status().is_success() {
            return Err(RegistryError::Auth {
                url: realm.to_owned(),
                reason: format!("token endpoint answered HTTP {}", resp.status().as_u16()),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = resp.json().await.map_err(|e| RegistryError::Auth {
            url: realm.to_owned(),
            reason: format!("unreadable token response: {e}"),
        })?;
        let value = body
            .token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Auth {
                url: realm.to_owned(),
                reason: "token response has no token".into(),
            })?;
        // Default lifetime per the token spec is 60 s; renew 10 s early.
        let ttl = body.expires_in.unwrap_or(60).max(20);
        Ok(Token {
            value,
            expires: Instant::now() + Duration::from_secs(ttl - 10),
        })
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
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None);
    }
}
