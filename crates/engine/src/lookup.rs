//! One image by digest, for the event-driven paths: a push event and a queued work item. Push
//! selection reuses the listing's tag rules ([`crate::source`]), so a pushed image is kept or
//! dropped exactly as the nightly listing would keep or drop it, cosign attachments included.

use ecr_vault_registry::{Digest, Reference, RepoName, Tag};

use crate::EngineError;
use crate::filter::Filters;
use crate::source::{Listing, Source, SourceImage, attach, select_tags};

/// What the source says about one image.
#[derive(Debug)]
pub enum Lookup {
    /// Present and selected; `warnings` name tags that could not be parsed.
    Found {
        image: SourceImage,
        warnings: Vec<String>,
    },
    /// No longer in the source (deleted since the event).
    Gone,
    /// Archived images cannot be pulled.
    Archived,
    /// Present, but the filters do not select it.
    NotSelected(Unselected),
}

/// Which filter left an image out; the adapter names its own settings for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unselected {
    Repository,
    Tags,
}

/// The source's record of one image: its tags now, when it was pushed, its media type.
struct Found {
    tags: Vec<String>,
    pushed_at: Option<chrono::DateTime<chrono::Utc>>,
    media_type: Option<String>,
    archived: bool,
}

/// Looks one image up by digest. ECR answers with its record; another registry only says
/// whether the manifest is there, so it keeps the tags it was given.
async fn find(
    source: &Source,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<Found>, EngineError> {
    match source {
        Source::Ecr { ecr, .. } => Ok(ecr
            .describe_image(repo.as_str(), &digest.to_string())
            .await?
            .map(|i| Found {
                archived: i.is_archived(),
                tags: i.tags,
                pushed_at: i.pushed_at,
                media_type: i.manifest_media_type,
            })),
        Source::Registry { registry } => Ok(registry
            .head_manifest(repo, &Reference::Digest(digest.clone()))
            .await?
            .map(|h| Found {
                tags: Vec::new(),
                pushed_at: None,
                media_type: h.media_type,
                archived: false,
            })),
    }
}

/// A queued work item's image, under the tags the run planned for it.
pub async fn queued(
    source: &Source,
    repo: &RepoName,
    digest: &Digest,
    mut tags: Vec<Tag>,
) -> Result<Lookup, EngineError> {
    Ok(match find(source, repo, digest).await? {
        None => Lookup::Gone,
        Some(f) if f.archived => Lookup::Archived,
        Some(f) => {
            tags.sort();
            tags.dedup();
            Lookup::Found {
                image: SourceImage {
                    repo: repo.clone(),
                    digest: digest.clone(),
                    tags,
                    pushed_at: f.pushed_at,
                    media_type: f.media_type,
                },
                warnings: Vec::new(),
            }
        }
    })
}

/// A pushed image: its tags as the source lists them now plus the pushed one, through the
/// filters. A cosign attachment (`sha256-<subject>.sig`) is kept when its subject is selected.
pub async fn pushed(
    source: &Source,
    filters: &Filters,
    repo: &RepoName,
    digest: &Digest,
    pushed_tag: Option<&Tag>,
) -> Result<Lookup, EngineError> {
    if !filters.repository(repo.as_str()) {
        return Ok(Lookup::NotSelected(Unselected::Repository));
    }
    let found = match find(source, repo, digest).await? {
        None => return Ok(Lookup::Gone),
        Some(f) if f.archived => return Ok(Lookup::Archived),
        Some(f) => f,
    };
    let mut raw = found.tags;
    raw.extend(pushed_tag.map(Tag::to_string));
    let mut scratch = Listing::default();
    let (tags, attachment) = select_tags(repo.as_str(), &raw, filters, &mut scratch);
    let image = SourceImage {
        repo: repo.clone(),
        digest: digest.clone(),
        tags,
        pushed_at: found.pushed_at,
        media_type: found.media_type,
    };
    let mut candidates = vec![(image, attachment, !raw.is_empty())];
    // An attachment's subjects, so `attach` can tell whether each is selected.
    let subjects: Vec<Digest> = candidates[0]
        .0
        .tags
        .iter()
        .filter_map(Tag::attached_subject)
        .collect();
    for subject in subjects {
        if let Some(s) = find(source, repo, &subject).await?
            && !s.archived
        {
            let (tags, attachment) = select_tags(repo.as_str(), &s.tags, filters, &mut scratch);
            let had_tags = !s.tags.is_empty();
            let img = SourceImage {
                repo: repo.clone(),
                digest: subject,
                tags,
                pushed_at: None,
                media_type: None,
            };
            candidates.push((img, attachment, had_tags));
        }
    }
    let warnings = scratch
        .failures
        .iter()
        .map(|f| format!("{repo}@{digest}: tag {}: {}", f.reference, f.error))
        .collect();
    match attach(candidates, filters)
        .into_iter()
        .find(|i| &i.digest == digest)
    {
        Some(mut image) => {
            image.tags.sort();
            image.tags.dedup();
            Ok(Lookup::Found { image, warnings })
        }
        None => Ok(Lookup::NotSelected(Unselected::Tags)),
    }
}
