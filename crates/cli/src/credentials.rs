//! Registry credentials the way skopeo, crane and regctl find them, so a user who ran
//! `docker login` (or set up `docker-credential-ecr-login`) needs no flags:
//!
//! 1. `--creds user:pass`, or `--username` with `--password` / `--password-stdin`;
//! 2. otherwise the first auth file that has an entry for the registry, in skopeo's order:
//!    `--authfile`, `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//!    `~/.docker/config.json`. An entry is a `credHelpers` helper, the `credsStore` helper,
//!    or an `auths` entry (`auth` = base64 `user:pass`, or `username` and `password`);
//! 3. otherwise anonymous.
//!
//! Helpers speak the docker-credential protocol: `docker-credential-<name> get`, the server on
//! stdin, `{"Username": …, "Secret": …}` on stdout. Secrets are never logged.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::output::Invalid;

/// A username and password (or token) for one registry.
pub type UserPass = (String, String);

/// What the user gave on the command line.
#[derive(Default)]
pub struct Given<'a> {
    pub creds: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub password_stdin: bool,
    pub authfile: Option<&'a Path>,
}

/// The credentials for the registry at `url`, or None for anonymous access.
pub fn resolve(given: &Given, url: &str) -> Result<Option<UserPass>, Invalid> {
    if let Some(c) = given.creds {
        if given.username.is_some() || given.password.is_some() || given.password_stdin {
            return Err(Invalid(
                "--creds cannot be combined with --username, --password or --password-stdin".into(),
            ));
        }
        let (u, p) = c
            .split_once(':')
            .ok_or_else(|| Invalid("--creds must be USERNAME:PASSWORD".into()))?;
        return Ok(Some((u.to_owned(), p.to_owned())));
    }
    let password = match (given.password, given.password_stdin) {
        (Some(_), true) => {
            return Err(Invalid(
                "give --password or --password-stdin, not both".into(),
            ));
        }
        (Some(p), false) => Some(p.to_owned()),
        (None, true) => Some(read_stdin()?),
        (None, false) => None,
    };
    match (given.username, password) {
        (Some(u), Some(p)) => return Ok(Some((u.to_owned(), p))),
        (Some(u), None) => {
            return Err(Invalid(format!(
                "--username {u} without a password: add --password-stdin (or \
                 ECR_VAULT_REGISTRY_PASSWORD), or use --creds"
            )));
        }
        (None, Some(_)) => return Err(Invalid("a password without --username".into())),
        (None, None) => {}
    }
    let host = host_of(url);
    for path in auth_files(given.authfile)? {
        let file = AuthFile::load(&path)?;
        if let Some(c) = file.lookup(&host, &path)? {
            tracing::debug!(file = %path.display(), host, "registry credentials from an auth file");
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn read_stdin() -> Result<String, Invalid> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Invalid(format!("--password-stdin: {e}")))?;
    let p = s.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        return Err(Invalid("--password-stdin: stdin was empty".into()));
    }
    Ok(p)
}

/// `host[:port]` of a registry URL (or of a bare host).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// The auth files to look in, in order. `--authfile` and `$REGISTRY_AUTH_FILE` must exist;
/// the docker defaults are skipped when absent.
fn auth_files(explicit: Option<&Path>) -> Result<Vec<PathBuf>, Invalid> {
    let mut out = Vec::new();
    let required = [
        explicit.map(|p| ("--authfile", p.to_path_buf())),
        std::env::var_os("REGISTRY_AUTH_FILE")
            .filter(|v| !v.is_empty())
            .map(|v| ("$REGISTRY_AUTH_FILE", PathBuf::from(v))),
    ];
    for (what, p) in required.into_iter().flatten() {
        if !p.is_file() {
            return Err(Invalid(format!("{what} {}: no such file", p.display())));
        }
        out.push(p);
    }
    let defaults = [
        std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(|d| PathBuf::from(d).join("config.json")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    ];
    out.extend(defaults.into_iter().flatten().filter(|p| p.is_file()));
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The names Docker Hub goes by in auth files.
const DOCKER_HUB: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1/",
];

impl AuthFile {
    fn load(path: &Path) -> Result<Self, Invalid> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Invalid(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Invalid(format!("{}: not a docker config.json: {e}", path.display())))
    }

    /// Whether `key` (as docker writes it: a host, or a URL) names `host`.
    fn names(key: &str, host: &str) -> bool {
        let k = host_of(key);
        k == host || (DOCKER_HUB.contains(&host) && DOCKER_HUB.iter().any(|h| host_of(h) == k))
    }

    /// Docker's order: a per-registry helper, else the store, else the file's own entry.
    fn lookup(&self, host: &str, path: &Path) -> Result<Option<UserPass>, Invalid> {
        if let Some((_, helper)) = self.cred_helpers.iter().find(|(k, _)| Self::names(k, host)) {
            return helper_get(helper, host);
        }
        if let Some(store) = &self.creds_store
            && let Some(c) = helper_get(store, host)?
        {
            return Ok(Some(c));
        }
        let Some((_, e)) = self.auths.iter().find(|(k, _)| Self::names(k, host)) else {
            return Ok(None);
        };
        if e.identitytoken.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(Invalid(format!(
                "{}: the entry for {host} holds an identity token, which ecr-vault cannot use; \
                 log in with a username and password or use --creds",
                path.display()
            )));
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            return Ok(Some((u.clone(), p.clone())));
        }
        let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let bad = || {
            Invalid(format!(
                "{}: the auth entry for {host} is not base64 user:password",
                path.display()
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        Ok(Some((u.to_owned(), p.to_owned())))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// `docker-credential-<name> get` for `host`. "Not found" (a non-zero exit saying so) is None.
fn helper_get(name: &str, host: &str) -> Result<Option<UserPass>, Invalid> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Invalid(format!("credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .map_err(|e| Invalid(format!("credential helper {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Invalid(format!("credential helper {program}: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's own words, cut short: they never carry the secret on failure.
        let said: String = said.trim().chars().take(300).collect();
        return Err(Invalid(format!(
            "credential helper {program} failed ({}): {said}",
            out.status
        )));
    }
    let a: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|_| {
        Invalid(format!(
            "credential helper {program} answered something other than {{\"Username\", \"Secret\"}}"
        ))
    })?;
    Ok(Some((a.username, a.secret)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file(json: &str) -> AuthFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn auth_entries_match_by_host_whatever_form_the_key_takes() {
        let f = file(
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dTpw"},
                 "https://index.docker.io/v1/":{"username":"hub","password":"pw"}}}"#,
        );
        let p = Path::new("config.json");
        assert_eq!(
            f.lookup("reg.example:5000", p).unwrap(),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(
            f.lookup("registry-1.docker.io", p).unwrap(),
            Some(("hub".into(), "pw".into()))
        );
        assert_eq!(f.lookup("other.example", p).unwrap(), None);
    }

    #[test]
    fn flags_are_checked_before_any_file_is_read() {
        let url = "http://127.0.0.1:1";
        let g = Given {
            username: Some("u"),
            ..Given::default()
        };
        assert!(
            resolve(&g, url)
                .unwrap_err()
                .0
                .contains("without a password")
        );
        let g = Given {
            creds: Some("u:p:q"),
            ..Given::default()
        };
        assert_eq!(resolve(&g, url).unwrap(), Some(("u".into(), "p:q".into())));
        let g = Given {
            creds: Some("nocolon"),
            ..Given::default()
        };
        assert!(resolve(&g, url).is_err());
        let g = Given {
            authfile: Some(Path::new("/nonexistent/auth.json")),
            ..Given::default()
        };
        assert!(resolve(&g, url).unwrap_err().0.contains("no such file"));
    }

    #[test]
    fn an_identity_token_is_refused_by_name() {
        let f = file(r#"{"auths":{"reg.example":{"identitytoken":"t"}}}"#);
        let e = f.lookup("reg.example", Path::new("c.json")).unwrap_err();
        assert!(e.0.contains("identity token"), "{}", e.0);
    }
}
