//! The push trigger. First the `detail` of an EventBridge "ECR Image Action" event, and what
//! it asks for: back up a pushed image, record a deletion, or nothing (an action that did not
//! succeed); every name is validated against the OCI grammar before it is used, and the
//! envelope is the adapter's (aws_lambda_events). Then the run for one pushed image: looked up
//! by digest, selected as the nightly listing would select it, and backed up as a run of its
//! own (a partial snapshot of that one image).

use std::sync::Arc;

use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{Skip, Vault};
use serde::{Deserialize, Serialize};

use crate::lookup::{self, Lookup, Unselected};
use crate::{
    BackupOptions, BackupReport, EngineError, Listing, NoProgress, Source, backup_listing, shown,
};

/// `detail` of an "ECR Image Action" event. There is no type for it in aws_lambda_events, and
/// the schema is best-effort, so every field is optional.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct EcrImageActionDetail {
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub repository_name: Option<String>,
    #[serde(default)]
    pub image_digest: Option<String>,
    #[serde(default)]
    pub action_type: Option<String>,
    #[serde(default)]
    pub image_tag: Option<String>,
    #[serde(default)]
    pub manifest_media_type: Option<String>,
    #[serde(default)]
    pub artifact_media_type: Option<String>,
}

/// The image an action names, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionImage {
    pub repository: RepoName,
    pub digest: Digest,
    pub tag: Option<Tag>,
}

/// What an image action asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Back up this image ([`crate::trigger::push()`]).
    Push(ActionImage),
    /// Record the deletion under `events/` ([`crate::audit`]); nothing is deleted.
    Delete(ActionImage),
    /// The action did not succeed in ECR: nothing to do.
    Ignored {
        /// `PUSH` or `DELETE`.
        action: &'static str,
        /// Why, e.g. `result is "FAILURE", not SUCCESS`.
        reason: String,
    },
}

/// Why an image action is refused; nothing is written either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// An action type other than PUSH and DELETE.
    Unsupported(String),
    /// A missing or malformed repository, digest or tag.
    Invalid(String),
}

impl EcrImageActionDetail {
    /// Validates repository, digest and tag; a clear error otherwise.
    pub fn image(&self) -> Result<ActionImage, String> {
        let repo = self
            .repository_name
            .as_deref()
            .ok_or("detail.repository-name is missing")?;
        let digest = self
            .image_digest
            .as_deref()
            .ok_or("detail.image-digest is missing")?;
        let repository =
            RepoName::parse(repo).map_err(|e| format!("detail.repository-name: {e}"))?;
        let digest = Digest::parse(digest).map_err(|e| format!("detail.image-digest: {e}"))?;
        let tag = match self.image_tag.as_deref() {
            None | Some("") => None,
            Some(t) => Some(Tag::parse(t).map_err(|e| format!("detail.image-tag: {e}"))?),
        };
        Ok(ActionImage {
            repository,
            digest,
            tag,
        })
    }

    /// What this action asks for. The action type is checked first, then the result (a
    /// failed action is ignored before its names are looked at), then the names.
    pub fn action(&self) -> Result<Action, Refused> {
        let action = match self.action_type.as_deref() {
            Some("PUSH") => "PUSH",
            Some("DELETE") => "DELETE",
            other => {
                return Err(Refused::Unsupported(format!(
                    "an \"ECR Image Action\" with action-type {}: only PUSH and DELETE are \
                     handled; nothing was written",
                    other.map_or_else(|| "missing".to_owned(), shown)
                )));
            }
        };
        if let Some(result) = self.result.as_deref()
            && result != "SUCCESS"
        {
            return Ok(Action::Ignored {
                action,
                reason: format!("result is {}, not SUCCESS", shown(result)),
            });
        }
        let image = self.image().map_err(|m| {
            Refused::Invalid(format!(
                "ECR {action} event refused, nothing was written: {m}"
            ))
        })?;
        Ok(if action == "DELETE" {
            Action::Delete(image)
        } else {
            Action::Push(image)
        })
    }
}

/// Why a pushed image needed no run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// Deleted since the push.
    Gone,
    /// Archived images cannot be pulled.
    Archived,
    NotSelected(Unselected),
}

#[derive(Debug)]
pub enum PushOutcome {
    NotRun(NotRun),
    Ran(Box<BackupReport>),
}

/// Why a push needs no run before anything is looked up: its repository is not selected. The
/// adapter asks this before it connects, so a push the filters leave out costs no ECR call.
pub fn unselected(filters: &crate::Filters, image: &ActionImage) -> Option<NotRun> {
    let selected = filters.repository(image.repository.as_str());
    (!selected).then_some(NotRun::NotSelected(Unselected::Repository))
}

pub async fn push(
    source: &Source,
    vault: &Vault,
    pushed: &ActionImage,
    opts: &BackupOptions,
) -> Result<PushOutcome, EngineError> {
    let (repo, digest, tag) = (&pushed.repository, &pushed.digest, pushed.tag.as_ref());
    let (image, warnings) = match lookup::pushed(source, &opts.filters, repo, digest, tag).await? {
        Lookup::Found { image, warnings } => (image, warnings),
        Lookup::Gone => return Ok(PushOutcome::NotRun(NotRun::Gone)),
        Lookup::Archived => return Ok(PushOutcome::NotRun(NotRun::Archived)),
        Lookup::NotSelected(why) => return Ok(PushOutcome::NotRun(NotRun::NotSelected(why))),
    };
    let listing = Listing {
        images: vec![image],
        warnings,
        ..Listing::default()
    };
    let report = backup_listing(source, vault, listing, opts, Arc::new(NoProgress)).await?;
    Ok(PushOutcome::Ran(Box::new(report)))
}

impl NotRun {
    /// The skip record of a push that needed no run; `filters` names the settings that select
    /// images where the caller configures them.
    pub fn skipped(self, image: &ActionImage, filters: [&str; 2]) -> Skip {
        let why = match self {
            NotRun::Gone => {
                "image no longer in ECR (deleted since the push); nothing to back up".to_owned()
            }
            NotRun::Archived => {
                "image is archived (archived images cannot be pulled); not backed up".to_owned()
            }
            NotRun::NotSelected(Unselected::Repository) => {
                format!("repository not selected by {}", filters[0])
            }
            NotRun::NotSelected(Unselected::Tags) => format!("no tag selected by {}", filters[1]),
        };
        Skip {
            repository: image.repository.to_string(),
            reference: image.digest.to_string(),
            error: why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> EcrImageActionDetail {
        EcrImageActionDetail {
            repository_name: Some("team/app".into()),
            image_digest: Some(
                "sha256:cccebb337cb45e831493c358fe82df29dcdd355cba62de55c738ddb99aafe758".into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn image_actions_need_valid_names() {
        let mut d = valid();
        assert!(d.image().unwrap().tag.is_none());
        d.repository_name = Some("Team/../x".into());
        assert!(d.image().unwrap_err().contains("detail.repository-name"));
        d.repository_name = None;
        assert!(d.image().unwrap_err().contains("missing"));
    }

    #[test]
    fn only_successful_pushes_and_deletes_are_acted_on() {
        let mut d = valid();
        for (t, want_push) in [("PUSH", true), ("DELETE", false)] {
            d.action_type = Some(t.into());
            match d.action().unwrap() {
                Action::Push(i) if want_push => assert_eq!(i.repository.as_str(), "team/app"),
                Action::Delete(_) if !want_push => {}
                other => panic!("{t}: {other:?}"),
            }
        }
        d.result = Some("FAILURE".into());
        assert_eq!(
            d.action().unwrap(),
            Action::Ignored {
                action: "DELETE",
                reason: "result is \"FAILURE\", not SUCCESS".into()
            }
        );
        // A failed action is ignored before its names are checked.
        d.repository_name = Some("../x".into());
        assert!(matches!(d.action(), Ok(Action::Ignored { .. })));
        d.result = Some("SUCCESS".into());
        let Err(Refused::Invalid(m)) = d.action() else {
            panic!("bad names must be refused")
        };
        assert!(
            m.starts_with("ECR DELETE event refused, nothing was written: "),
            "{m}"
        );
        for t in [Some("REPLICATE"), None] {
            d.action_type = t.map(str::to_owned);
            let Err(Refused::Unsupported(m)) = d.action() else {
                panic!("{t:?} must be refused")
            };
            assert!(m.contains("nothing was written"), "{m}");
        }
    }
}
