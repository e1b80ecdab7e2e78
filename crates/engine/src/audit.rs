//! Audit records of ECR image actions that the backup never mirrors (deletes).
//!
//! A DELETE in ECR must not delete anything in the vault. Instead, the event is kept as a small
//! JSON document under the vault's `events/` prefix, locked and written once like everything
//! else:
//!
//! ```text
//! <prefix>/events/<YYYYMMDDTHHMMSSZ>-<event id>.json
//! {"time":"2026-11-24T03:10:02Z","account":"123456789012","region":"us-east-1",
//!  "repository":"team/app/api","digest":"sha256:…","tag":"v1","eventId":"…","action":"DELETE"}
//! ```
//!
//! The name sorts by event time and is unique per event, and the document's bytes depend only on
//! the event, so a redelivered event finds its record already there and writes nothing new.
//! Every string is validated before it reaches a key or a document.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{Vault, WriteOutcome};
use serde::Serialize;

use crate::EngineError;

/// Content type of audit records.
pub const AUDIT_CONTENT_TYPE: &str = "application/vnd.ecr-vault.audit.v1+json";

/// Longest event id accepted (EventBridge ids are 36-character UUIDs).
const MAX_EVENT_ID: usize = 64;

/// The raw strings of an event, as they arrived.
#[derive(Clone, Debug, Default)]
pub struct AuditInput<'a> {
    pub time: Option<DateTime<Utc>>,
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    pub repository: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub action: Option<&'a str>,
}

/// A validated audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub repository: RepoName,
    pub digest: Digest,
    pub tag: Option<Tag>,
    pub event_id: String,
    pub action: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditDoc<'a> {
    time: String,
    account: Option<&'a str>,
    region: Option<&'a str>,
    repository: &'a str,
    digest: String,
    tag: Option<&'a str>,
    event_id: &'a str,
    action: &'a str,
}

fn invalid(what: &str, value: &str, why: &str) -> EngineError {
    let shown: String = value.chars().take(80).collect();
    EngineError::Config(format!("audit event: invalid {what} {shown:?}: {why}"))
}

fn required<'a>(what: &str, v: Option<&'a str>) -> Result<&'a str, EngineError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(EngineError::Config(format!(
            "audit event: {what} is missing"
        ))),
    }
}

impl AuditRecord {
    /// Validates every field: repository, digest and tag against the OCI grammar, the account
    /// as 12 digits, the region as `xx-name-1`, the event id as up to 64 characters of
    /// `[A-Za-z0-9-]`, and the action as up to 32 characters of `[A-Z_]`.
    pub fn new(input: &AuditInput<'_>) -> Result<Self, EngineError> {
        let time = input
            .time
            .ok_or_else(|| EngineError::Config("audit event: time is missing".into()))?;
        let repository = RepoName::parse(required("repository", input.repository)?)
            .map_err(|e| EngineError::Config(format!("audit event: {e}")))?;
        let digest = Digest::parse(required("digest", input.digest)?)
            .map_err(|e| EngineError::Config(format!("audit event: {e}")))?;
        let tag = match input.tag {
            None | Some("") => None,
            Some(t) => {
                Some(Tag::parse(t).map_err(|e| EngineError::Config(format!("audit event: {e}")))?)
            }
        };
        let event_id = required("event id", input.event_id)?;
        if event_id.len() > MAX_EVENT_ID
            || !event_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "event id",
                event_id,
                "expected up to 64 characters of [A-Za-z0-9-]",
            ));
        }
        let action = required("action", input.action)?;
        if action.len() > 32 || !action.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(invalid(
                "action",
                action,
                "expected up to 32 characters of [A-Z_]",
            ));
        }
        let account = match input.account {
            None | Some("") => None,
            Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => Some(a.to_owned()),
            Some(a) => return Err(invalid("account", a, "expected 12 digits")),
        };
        let region = match input.region {
            None | Some("") => None,
            Some(r) if valid_region(r) => Some(r.to_owned()),
            Some(r) => return Err(invalid("region", r, "expected a region such as us-east-1")),
        };
        Ok(AuditRecord {
            time,
            account,
            region,
            repository,
            digest,
            tag,
            event_id: event_id.to_owned(),
            action: action.to_owned(),
        })
    }

    /// `<YYYYMMDDTHHMMSSZ>-<event id>`: sorts by event time, unique per event.
    pub fn name(&self) -> String {
        format!("{}-{}", self.time.format("%Y%m%dT%H%M%SZ"), self.event_id)
    }

    /// The document's bytes: deterministic, so a redelivered event produces the same bytes.
    pub fn to_bytes(&self) -> Bytes {
        let doc = AuditDoc {
            time: self.time.to_rfc3339_opts(SecondsFormat::Secs, true),
            account: self.account.as_deref(),
            region: self.region.as_deref(),
            repository: self.repository.as_str(),
            digest: self.digest.to_string(),
            tag: self.tag.as_ref().map(|t| t.as_str()),
            event_id: &self.event_id,
            action: &self.action,
        };
        // Serializing plain strings and options cannot fail.
        Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
    }
}

/// `xx-name-N` style: lower-case letters, digits and dashes, starting with a letter.
fn valid_region(r: &str) -> bool {
    (4..=32).contains(&r.len())
        && r.as_bytes()[0].is_ascii_lowercase()
        && r.contains('-')
        && !r.ends_with('-')
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Writes `record` under `events/`, locked and write-once. Returns the key and whether this
/// call wrote it (`Existed` for a redelivered event).
pub async fn write_audit(
    vault: &Vault,
    record: &AuditRecord,
) -> Result<(String, WriteOutcome), EngineError> {
    let key = vault.location().event_key(&record.name());
    let outcome = vault
        .put_document(&key, record.to_bytes(), AUDIT_CONTENT_TYPE, Utc::now())
        .await?;
    Ok((key, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:cccebb337cb45e831493c358fe82df29dcdd355cba62de55c738ddb99aafe758";

    fn input() -> AuditInput<'static> {
        AuditInput {
            time: DateTime::parse_from_rfc3339("2026-11-24T03:10:02Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            account: Some("123456789012"),
            region: Some("us-east-1"),
            repository: Some("team/app/api"),
            digest: Some(DIGEST),
            tag: Some("v1"),
            event_id: Some("b2e9c4a1-6f1d-4e0c-9a55-3c7e2f0d8e11"),
            action: Some("DELETE"),
        }
    }

    #[test]
    fn record_is_named_by_time_and_id_and_serializes_every_field() {
        let r = AuditRecord::new(&input()).unwrap();
        assert_eq!(
            r.name(),
            "20261124T031002Z-b2e9c4a1-6f1d-4e0c-9a55-3c7e2f0d8e11"
        );
        let v: serde_json::Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-11-24T03:10:02Z",
                "account": "123456789012",
                "region": "us-east-1",
                "repository": "team/app/api",
                "digest": DIGEST,
                "tag": "v1",
                "eventId": "b2e9c4a1-6f1d-4e0c-9a55-3c7e2f0d8e11",
                "action": "DELETE",
            })
        );
        assert_eq!(r.to_bytes(), r.to_bytes(), "deterministic");
    }

    #[test]
    fn hostile_or_missing_fields_are_refused() {
        let cases: Vec<(&str, AuditInput<'static>)> = vec![
            (
                "repository",
                AuditInput {
                    repository: Some("../../etc"),
                    ..input()
                },
            ),
            (
                "digest",
                AuditInput {
                    digest: Some("sha256:abc"),
                    ..input()
                },
            ),
            (
                "tag",
                AuditInput {
                    tag: Some("-bad/tag"),
                    ..input()
                },
            ),
            (
                "event id",
                AuditInput {
                    event_id: Some("../x"),
                    ..input()
                },
            ),
            (
                "event id",
                AuditInput {
                    event_id: None,
                    ..input()
                },
            ),
            (
                "action",
                AuditInput {
                    action: Some("delete;rm"),
                    ..input()
                },
            ),
            (
                "account",
                AuditInput {
                    account: Some("12345"),
                    ..input()
                },
            ),
            (
                "region",
                AuditInput {
                    region: Some("US_EAST/1"),
                    ..input()
                },
            ),
            (
                "time",
                AuditInput {
                    time: None,
                    ..input()
                },
            ),
        ];
        for (what, case) in cases {
            let err = AuditRecord::new(&case).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
        let no_tag = AuditRecord::new(&AuditInput {
            tag: None,
            ..input()
        })
        .unwrap();
        assert_eq!(no_tag.tag, None);
    }
}
