//! The restore request: JSON in, engine request out. Strict on purpose: unknown fields are
//! refused so a typo cannot change what a restore does, and `dryRun` defaults to true so only
//! an explicit `"dryRun": false` changes a registry.

use ecr_vault_engine::{EngineError, FilterSpec, Filters, Mapping, RestoreRequest, SnapshotSel};
use serde::Deserialize;

use crate::egress::CREDENTIAL_FIELDS;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
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
    pub target: Target,
    #[serde(default = "yes")]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// `ecr`, or the URL of a registry the deployment approved (`ApprovedRestoreRegistries`).
    /// Credentials are never part of a request: they come from Secrets Manager.
    pub registry: String,
    pub region: Option<String>,
    pub account_id: Option<String>,
}

impl Request {
    /// Parses the invocation payload, with an error that says what is wrong.
    pub fn parse(payload: serde_json::Value) -> Result<Self, String> {
        refuse_credentials(&payload)?;
        serde_json::from_value(payload).map_err(|e| format!("invalid restore request: {e}"))
    }

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
        let r = Request::parse(event("restore.json")).unwrap();
        assert!(!r.dry_run);
        let e = r.engine_request().unwrap();
        assert_eq!(
            e.mapping.renames,
            vec![("team/".into(), "restored/team/".into())]
        );
        assert!(
            Request::parse(event("restore-dry-run.json"))
                .unwrap()
                .dry_run
        );
    }

    #[test]
    fn refuses_typos_and_missing_target_and_defaults_to_dry_run() {
        let typo = serde_json::json!({"target":{"registry":"ecr"},"dryrun":false});
        let err = Request::parse(typo).unwrap_err();
        assert!(err.contains("dryrun"), "{err}");
        assert!(
            Request::parse(serde_json::json!({"snapshot":"latest"}))
                .unwrap_err()
                .contains("target")
        );
        let minimal = Request::parse(serde_json::json!({"target":{"registry":"ecr"}})).unwrap();
        assert!(
            minimal.dry_run,
            "a request that does not say dryRun:false must not write"
        );
        let bad =
            Request::parse(serde_json::json!({"target":{"registry":"ecr"},"snapshot":"../x"}))
                .unwrap();
        assert!(bad.engine_request().is_err());
        for creds in [
            serde_json::json!({"target":{"registry":"https://r.example.com","username":"u","password":"p"}}),
            serde_json::json!({"target":{"registry":"ecr"},"Password":"p"}),
        ] {
            let err = Request::parse(creds).unwrap_err();
            assert!(err.contains("credentials are never accepted"), "{err}");
            assert!(!err.contains("\"p\""), "{err}");
        }
        let both = Request::parse(serde_json::json!({"target":{"registry":"ecr"},"snapshot":"latest","asOf":"2026-11-01"})).unwrap();
        assert!(both.engine_request().is_err());
    }
}
