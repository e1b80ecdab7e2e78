//! A restore request as JSON (the restore function's payload): parsed, then turned into a
//! [`RestoreRequest`]. Strict on purpose: unknown fields are refused so a typo cannot change
//! what a restore does, and `dryRun` defaults to true so only an explicit `"dryRun": false`
//! changes a registry. Where the target may be is [`crate::egress`].

use serde::Deserialize;
use url::Url;

use crate::egress::{CREDENTIAL_FIELDS, EgressPolicy, RegistrySecret};
use crate::{
    EngineError, FilterSpec, Filters, Mapping, RegistryConfig, RestoreRequest, SnapshotSel,
};

/// The JSON document; [`RestorePayload::engine_request`] validates names and digests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestorePayload {
    pub snapshot: Option<String>,
    pub as_of: Option<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub exclude_repositories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    #[serde(default)]
    pub digests: Vec<String>,
    #[serde(default)]
    pub rename: Vec<Rename>,
    #[serde(default)]
    pub retag: Vec<Rename>,
    #[serde(default)]
    pub digest_only: bool,
    pub target: TargetSpec,
    #[serde(default = "yes")]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

/// One `from` → `to` prefix pair of `rename` (repositories) or `retag` (tags).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// The registry a restore pushes to, as the request names it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// `ecr`, or the URL of a registry the deployment approved (`ApprovedRestoreRegistries`).
    /// Credentials are never part of a request: they come from Secrets Manager.
    pub registry: String,
    pub region: Option<String>,
    pub account_id: Option<String>,
}

impl RestorePayload {
    /// Parses the invocation payload, with an error that says what is wrong.
    pub fn parse(payload: serde_json::Value) -> Result<Self, String> {
        refuse_credentials(&payload)?;
        serde_json::from_value(payload).map_err(|e| format!("invalid restore request: {e}"))
    }

    /// The engine's request: filters, digests and snapshot selection validated.
    pub fn engine_request(&self) -> Result<RestoreRequest, EngineError> {
        let filters = Filters::new(FilterSpec {
            repositories: self.repositories.clone(),
            exclude_repositories: self.exclude_repositories.clone(),
            tags: self.tags.clone(),
            exclude_tags: self.exclude_tags.clone(),
        })
        .map_err(EngineError::Config)?;
        let digests = self
            .digests
            .iter()
            .map(|d| {
                d.parse()
                    .map_err(|e| EngineError::Config(format!("digests: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pairs = |v: &[Rename]| -> Vec<(String, String)> {
            v.iter().map(|r| (r.from.clone(), r.to.clone())).collect()
        };
        Ok(RestoreRequest {
            snapshot: SnapshotSel::parse(self.snapshot.as_deref(), self.as_of.as_deref())?,
            filters,
            digests,
            mapping: Mapping {
                renames: pairs(&self.rename),
                retags: pairs(&self.retag),
                digest_only: self.digest_only,
            },
            dry_run: self.dry_run,
            concurrency: 4,
        })
    }
}

/// Where a request's target points, checked against the egress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `"registry": "ecr"` (any case): ECR of this account, or of `accountId`.
    Ecr,
    /// A registry the deployment approved, every address it resolves to checked.
    Approved(Url),
}

impl TargetSpec {
    /// Where this target points. Asked before the vault is read, so a refused target gets
    /// nothing, not even a probe.
    pub async fn destination(&self, egress: &EgressPolicy) -> Result<Destination, String> {
        if self.registry.eq_ignore_ascii_case("ecr") {
            return Ok(Destination::Ecr);
        }
        egress
            .check(&self.registry)
            .await
            .map(Destination::Approved)
    }

    /// The SDK configuration for this target: the target may be in another region.
    pub fn sdk(&self, sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        match &self.region {
            Some(r) => sdk
                .to_builder()
                .region(aws_config::Region::new(r.clone()))
                .build(),
            None => sdk.clone(),
        }
    }

    /// The registry to open: ECR (`ecr_url` overrides its endpoint), or the approved registry
    /// with `credentials` from Secrets Manager (none: an anonymous push).
    pub fn registry_config(
        &self,
        destination: Destination,
        ecr_url: Option<String>,
        credentials: Option<RegistrySecret>,
    ) -> RegistryConfig {
        match destination {
            Destination::Ecr => RegistryConfig::Ecr {
                registry_url: ecr_url,
                registry_id: self.account_id.clone(),
            },
            Destination::Approved(url) => RegistryConfig::Oci {
                url: url.to_string().trim_end_matches('/').to_owned(),
                username: credentials.as_ref().map(|c| c.username.clone()),
                password: credentials.map(|c| c.password),
            },
        }
    }
}

/// Refuses a payload carrying credentials, at the top level or in `target`, with a message
/// that says where credentials come from (never what was sent).
fn refuse_credentials(payload: &serde_json::Value) -> Result<(), String> {
    let places = [("", Some(payload)), ("target.", payload.get("target"))];
    for (place, obj) in places {
        let Some(obj) = obj.and_then(serde_json::Value::as_object) else {
            continue;
        };
        for key in obj.keys() {
            if CREDENTIAL_FIELDS
                .iter()
                .any(|c| c.eq_ignore_ascii_case(key))
            {
                return Err(format!(
                    "invalid restore request: {place}{key}: credentials are never accepted in \
                     a restore request; the function reads them from Secrets Manager (stack \
                     parameter RestoreRegistrySecretArns)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> serde_json::Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn sample_requests_parse() {
        let r = RestorePayload::parse(event("restore.json")).unwrap();
        assert!(!r.dry_run);
        let e = r.engine_request().unwrap();
        assert_eq!(
            e.mapping.renames,
            vec![("team/".into(), "restored/team/".into())]
        );
        assert!(
            RestorePayload::parse(event("restore-dry-run.json"))
                .unwrap()
                .dry_run
        );
    }

    #[test]
    fn refuses_typos_and_missing_target_and_defaults_to_dry_run() {
        let typo = serde_json::json!({"target":{"registry":"ecr"},"dryrun":false});
        let err = RestorePayload::parse(typo).unwrap_err();
        assert!(err.contains("dryrun"), "{err}");
        assert!(
            RestorePayload::parse(serde_json::json!({"snapshot":"latest"}))
                .unwrap_err()
                .contains("target")
        );
        let minimal =
            RestorePayload::parse(serde_json::json!({"target":{"registry":"ecr"}})).unwrap();
        assert!(
            minimal.dry_run,
            "a request that does not say dryRun:false must not write"
        );
        let bad = RestorePayload::parse(
            serde_json::json!({"target":{"registry":"ecr"},"snapshot":"../x"}),
        )
        .unwrap();
        assert!(bad.engine_request().is_err());
        for creds in [
            serde_json::json!({"target":{"registry":"https://r.example.com","username":"u","password":"p"}}),
            serde_json::json!({"target":{"registry":"ecr"},"Password":"p"}),
        ] {
            let err = RestorePayload::parse(creds).unwrap_err();
            assert!(err.contains("credentials are never accepted"), "{err}");
            assert!(!err.contains("\"p\""), "{err}");
        }
        let both = RestorePayload::parse(serde_json::json!({"target":{"registry":"ecr"},"snapshot":"latest","asOf":"2026-11-01"})).unwrap();
        assert!(both.engine_request().is_err());
    }

    #[tokio::test]
    async fn ecr_is_named_and_any_other_target_must_be_approved() {
        let egress = EgressPolicy::new("https://10.0.0.5:5000", false).unwrap();
        let target = |registry: &str| TargetSpec {
            registry: registry.into(),
            region: None,
            account_id: Some("123456789012".into()),
        };
        let ecr = target("ECR");
        assert_eq!(ecr.destination(&egress).await, Ok(Destination::Ecr));
        match ecr.registry_config(Destination::Ecr, None, None) {
            RegistryConfig::Ecr { registry_id, .. } => {
                assert_eq!(registry_id.as_deref(), Some("123456789012"))
            }
            other => panic!("{other:?}"),
        }
        let approved = target("https://10.0.0.5:5000");
        let dest = approved.destination(&egress).await.unwrap();
        match approved.registry_config(dest, None, None) {
            RegistryConfig::Oci { url, username, .. } => {
                assert_eq!((url.as_str(), username), ("https://10.0.0.5:5000", None))
            }
            other => panic!("{other:?}"),
        }
        let err = target("https://10.0.0.6:5000").destination(&egress).await;
        assert!(err.unwrap_err().contains("not approved"));
    }
}
