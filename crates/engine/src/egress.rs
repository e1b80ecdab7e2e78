//! Where a restore may push: ECR of its own account (IAM scopes it), or a registry the
//! deployment approved (template parameter `ApprovedRestoreRegistries`). Whoever may invoke
//! the restore function must not be able to copy the vault somewhere else, so the target named
//! in a payload is only ever *chosen* from the approved list, never introduced by it, and its
//! credentials come from Secrets Manager (`RestoreRegistrySecretArns`), never from the payload
//! ([`crate::restore_request`] refuses them).
//!
//! An approved name is still resolved and refused when any of its addresses is loopback,
//! link-local (which includes the instance metadata address 169.254.169.254), the IPv6
//! metadata address or unspecified: a DNS record changed later must not turn an approved
//! registry into a way to reach the function's own host. The registry client resolves the
//! name again when it connects, so a record switched between the two lookups is not caught
//! here; the network-level answer to that is the VPC without NAT in docs/deploy.md
//! (docs/decisions/0008).

use std::net::{IpAddr, Ipv6Addr};

use url::Url;

/// The only switch that admits loopback targets, for tests that restore into registries on
/// 127.0.0.1. The template never sets it (tests/template_policy.rs checks that), and it does
/// not admit link-local or metadata addresses.
pub const TEST_ALLOW_LOOPBACK_VAR: &str = "ECR_VAULT_TEST_ALLOW_LOOPBACK_TARGETS";

/// Payload fields that would carry credentials; refused with a message saying where they
/// come from instead.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "username",
    "password",
    "token",
    "auth",
    "credentials",
    "identityToken",
    "registryToken",
    "secret",
    "secretArn",
];

/// The deployment's egress rule, from the function's environment.
#[derive(Clone, Debug, Default)]
pub struct EgressPolicy {
    approved: Vec<Url>,
    allow_loopback: bool,
}

impl EgressPolicy {
    /// `approved` is the comma-separated `ECR_VAULT_APPROVED_REGISTRIES`; every entry must be
    /// an `http(s)://host[:port]` URL without a path, user or query.
    pub fn new(approved: &str, allow_loopback: bool) -> Result<Self, String> {
        let approved = approved
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| registry_url(s).map_err(|e| format!("ECR_VAULT_APPROVED_REGISTRIES: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy {
            approved,
            allow_loopback,
        })
    }

    /// The approved URL `target` names, after checking every address it resolves to. The
    /// error says why, without echoing anything secret (a target carries no credentials).
    pub async fn check(&self, target: &str) -> Result<Url, String> {
        let url = registry_url(target)?;
        if !self.approved.iter().any(|a| same_origin(a, &url)) {
            return Err(format!(
                "target registry {} is not approved: the restore function pushes to ECR \
                 (\"registry\": \"ecr\") or to a registry listed in the stack parameter \
                 ApprovedRestoreRegistries",
                origin(&url)
            ));
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            _ => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("target registry {}: cannot resolve: {e}", origin(&url)))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!(
                "target registry {}: resolves to no address",
                origin(&url)
            ));
        }
        for ip in addrs {
            if let Some(why) = forbidden(ip, self.allow_loopback) {
                return Err(format!(
                    "target registry {} resolves to {ip}, {why}: refused",
                    origin(&url)
                ));
            }
        }
        Ok(url)
    }
}

/// Why `ip` may not be a restore target, or `None` when it may.
pub fn forbidden(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    const IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() && !allow_loopback => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_loopback() && !allow_loopback => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("a link-local address (instance metadata lives there)")
        }
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(v6) if v6 == IMDS_V6 => Some("the instance metadata address"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => {
            Some("an unspecified address")
        }
        IpAddr::V6(v6) if v6.is_unspecified() => Some("an unspecified address"),
        _ => None,
    }
}

/// Parses a registry URL: http or https, a host, nothing else.
fn registry_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a registry URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?}: a registry URL is http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?}: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{}: credentials in a registry URL are refused; they come from Secrets Manager",
            origin(&url)
        ));
    }
    if !url.path().trim_matches('/').is_empty() || url.query().is_some() || url.fragment().is_some()
    {
        return Err(format!(
            "{s:?}: a registry URL has no path, query or fragment"
        ));
    }
    Ok(url)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Credentials for an approved registry, from one Secrets Manager secret: a JSON object
/// `{"registry": "https://host[:port]", "username": "...", "password": "..."}`. The
/// `registry` field binds the secret to one origin, so a secret is never sent elsewhere.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySecret {
    registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistrySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySecret")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl RegistrySecret {
    /// Parses a secret string; the error never contains it.
    pub fn parse(arn: &str, secret: &str) -> Result<Self, String> {
        serde_json::from_str(secret).map_err(|_| {
            format!("secret {arn}: expected JSON {{\"registry\", \"username\", \"password\"}}")
        })
    }

    /// Whether this secret belongs to `target`.
    pub fn is_for(&self, target: &Url) -> bool {
        registry_url(&self.registry).is_ok_and(|u| same_origin(&u, target))
    }
}

/// `scheme://host:port`, safe to print.
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_covers_loopback_link_local_metadata_and_mapped_forms() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(forbidden(ip, false).is_some(), "{ip}");
        }
        for ip in ["10.0.0.1", "192.0.2.10", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(forbidden(ip, false).is_none(), "{ip}");
        }
        // The test switch admits loopback, never metadata.
        assert!(forbidden("127.0.0.1".parse().unwrap(), true).is_none());
        assert!(forbidden("169.254.169.254".parse().unwrap(), true).is_some());
    }

    #[test]
    fn approved_list_is_strict_registry_urls() {
        assert!(EgressPolicy::new("https://r.example.com, http://10.0.0.5:5000", false).is_ok());
        assert!(EgressPolicy::new("", false).unwrap().approved.is_empty());
        for bad in [
            "r.example.com",
            "ftp://r.example.com",
            "https://u:p@r.example.com",
            "https://r.example.com/path",
        ] {
            assert!(EgressPolicy::new(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_names_its_registry_and_never_shows_its_password() {
        let target = Url::parse("https://r.example.com").unwrap();
        let s = RegistrySecret::parse(
            "arn:x",
            r#"{"registry":"https://r.example.com:443","username":"u","password":"hunter2"}"#,
        )
        .unwrap();
        assert!(s.is_for(&target));
        assert!(!s.is_for(&Url::parse("https://other.example.com").unwrap()));
        assert!(!format!("{s:?}").contains("hunter2"));
        let err = RegistrySecret::parse("arn:x", r#"{"password":"hunter2"}"#).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn only_approved_origins_pass() {
        let p = EgressPolicy::new("https://10.0.0.5:5000", false).unwrap();
        assert!(p.check("https://10.0.0.5:5000").await.is_ok());
        assert!(p.check("https://10.0.0.5:5000/").await.is_ok());
        for other in [
            "http://10.0.0.5:5000",
            "https://10.0.0.5",
            "https://10.0.0.6:5000",
        ] {
            let err = p.check(other).await.unwrap_err();
            assert!(err.contains("not approved"), "{other}: {err}");
        }
    }
}
