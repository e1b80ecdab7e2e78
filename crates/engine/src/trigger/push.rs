//! A run for one pushed image: looked up by digest, selected as the nightly listing would
//! select it, then backed up as a run of its own (a partial snapshot of that one image).

use std::sync::Arc;

use ecr_vault_vault::{Skip, Vault};

use super::ActionImage;
use crate::lookup::{self, Lookup, Unselected};
use crate::{
    BackupOptions, BackupReport, EngineError, Listing, NoProgress, Source, backup_listing,
};

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
