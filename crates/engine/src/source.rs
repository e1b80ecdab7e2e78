//! Where images come from: ECR (listing through the ECR API) or any OCI registry (listing
//! through `_catalog` and the tag list). Either way the data plane is the registry client.
//!
//! Every name, tag and digest from a listing is validated here; an invalid one becomes a
//! reported failure, never a key or a URL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ecr_vault_ecr::{Ecr, RepositorySettings};
use ecr_vault_registry::{Digest, Reference, RegistryClient, RepoName, Tag};
use futures::StreamExt as _;
use serde::Serialize;

use crate::filter::Filters;
use ecr_vault_vault::Failure;

/// One image to capture: a manifest digest in a repository and the tags that point at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceImage {
    #[serde(rename = "repository")]
    pub repo: RepoName,
    pub digest: Digest,
    pub tags: Vec<Tag>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub media_type: Option<String>,
}

/// The result of listing a source.
#[derive(Debug, Default)]
pub struct Listing {
    pub images: Vec<SourceImage>,
    /// Images that could not be listed or whose names were invalid.
    pub failures: Vec<Failure>,
    /// Skipped on purpose, with the reason (archived images).
    pub skipped: Vec<ecr_vault_vault::Skip>,
    pub warnings: Vec<String>,
    /// Repository settings captured for restore (ECR only).
    pub repositories: Vec<RepositorySettings>,
    /// ECR's `imageSizeInBytes` per image (compressed; for a manifest list, its largest
    /// child), so the planner can estimate a run's bytes without touching the registry.
    pub sizes: HashMap<(RepoName, Digest), u64>,
}

/// A registry images are backed up from: ECR (listed through its API) or any OCI registry.
#[derive(Clone)]
pub enum Source {
    Ecr { ecr: Ecr, registry: RegistryClient },
    Registry { registry: RegistryClient },
}

/// A registry images are restored into. The same connection as a [`Source`] (ECR through its
/// API, or any OCI registry), named for the direction the images go.
pub type Target = Source;

impl Source {
    pub fn registry(&self) -> &RegistryClient {
        match self {
            Source::Ecr { registry, .. } | Source::Registry { registry } => registry,
        }
    }

    /// A short description for the snapshot record.
    pub fn describe(&self) -> String {
        match self {
            Source::Ecr { registry, .. } => format!("ecr:{}", registry.host()),
            Source::Registry { registry } => registry.base_url().to_string(),
        }
    }

    /// Lists every image the filters select.
    pub async fn list(&self, filters: &Filters, concurrency: usize) -> Listing {
        match self {
            Source::Ecr { ecr, .. } => list_ecr(ecr, filters, concurrency).await,
            Source::Registry { registry } => list_registry(registry, filters, concurrency).await,
        }
    }
}

pub(crate) fn failure(repo: &str, reference: &str, error: impl ToString) -> Failure {
    Failure {
        repository: repo.chars().take(300).collect(),
        reference: reference.chars().take(200).collect(),
        error: error.to_string(),
    }
}

/// Applies the tag filters to one image's tags. Cosign-style attachment tags
/// (`sha256-<hex>.sig`) are kept with their subject in [`attach`], whatever the tag filters.
pub(crate) fn select_tags(
    repo: &str,
    raw_tags: &[String],
    filters: &Filters,
    out: &mut Listing,
) -> (Vec<Tag>, bool) {
    let mut tags = Vec::new();
    let mut attachment = false;
    for t in raw_tags {
        match Tag::parse(t) {
            Ok(tag) if tag.attached_subject().is_some() => {
                attachment = true;
                tags.push(tag);
            }
            Ok(tag) if filters.tag(t) => tags.push(tag),
            Ok(_) => {}
            Err(e) => out.failures.push(failure(repo, t, e)),
        }
    }
    (tags, attachment)
}

/// Keeps an attachment-only image when its subject was selected; drops untagged images when
/// tag filters ask for tags.
pub(crate) fn attach(
    candidates: Vec<(SourceImage, bool, bool)>,
    filters: &Filters,
) -> Vec<SourceImage> {
    let selected: std::collections::HashSet<(RepoName, Digest)> = candidates
        .iter()
        .filter(|(img, attachment, _)| {
            !attachment && (!img.tags.is_empty() || !filters.has_tag_filter())
        })
        .map(|(img, _, _)| (img.repo.clone(), img.digest.clone()))
        .collect();
    candidates
        .into_iter()
        .filter_map(|(mut img, attachment, had_tags)| {
            if attachment {
                // Keep the attachment tags whose subject is selected; plus any tag the
                // filters selected in its own right.
                img.tags.retain(|t| match t.attached_subject() {
                    Some(s) => selected.contains(&(img.repo.clone(), s)),
                    None => true,
                });
                return (!img.tags.is_empty()).then_some(img);
            }
            let keep = !img.tags.is_empty() || (!had_tags && !filters.has_tag_filter());
            keep.then_some(img)
        })
        .collect()
}

async fn list_ecr(ecr: &Ecr, filters: &Filters, concurrency: usize) -> Listing {
    let mut out = Listing::default();
    let repos = match ecr.list_repositories().await {
        Ok(r) => r,
        Err(e) => {
            out.failures.push(failure("*", "", e));
            return out;
        }
    };
    let selected: Vec<_> = repos
        .into_iter()
        .filter(|r| filters.repository(r.repository_name().unwrap_or_default()))
        .collect();
    let results: Vec<_> = futures::stream::iter(selected)
        .map(|r| async move {
            let name = r.repository_name().unwrap_or_default().to_owned();
            let images = ecr.list_images(&name).await;
            let settings = ecr.repository_settings(&r).await;
            (name, images, settings)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut candidates = Vec::new();
    for (name, images, settings) in results {
        let repo = match RepoName::parse(&name) {
            Ok(r) => r,
            Err(e) => {
                out.failures.push(failure(&name, "", e));
                continue;
            }
        };
        match settings {
            Ok(s) => out.repositories.push(s),
            Err(e) => out
                .warnings
                .push(format!("repository settings of {name} not captured: {e}")),
        }
        let images = match images {
            Ok(i) => i,
            Err(e) => {
                out.failures.push(failure(&name, "", e));
                continue;
            }
        };
        for img in images {
            let digest = match Digest::parse(&img.digest) {
                Ok(d) => d,
                Err(e) => {
                    out.failures.push(failure(&name, &img.digest, e));
                    continue;
                }
            };
            if img.is_archived() {
                out.skipped.push(failure(
                    &name,
                    &img.digest,
                    format!(
                        "image is {} (archived images cannot be pulled); not backed up",
                        img.status.as_deref().unwrap_or("ARCHIVED")
                    ),
                ));
                continue;
            }
            let (tags, attachment) = select_tags(&name, &img.tags, filters, &mut out);
            if let Some(size) = img.size {
                out.sizes.insert((repo.clone(), digest.clone()), size);
            }
            candidates.push((
                SourceImage {
                    repo: repo.clone(),
                    digest,
                    tags,
                    pushed_at: img.pushed_at,
                    media_type: img.manifest_media_type,
                },
                attachment,
                !img.tags.is_empty(),
            ));
        }
    }
    out.images = attach(candidates, filters);
    out.repositories.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn list_registry(
    registry: &RegistryClient,
    filters: &Filters,
    concurrency: usize,
) -> Listing {
    let mut out = Listing::default();
    // Named repositories need no catalog; globs do.
    let named = filters.named_repositories();
    let names = match &named {
        Some(n) => n.clone(),
        None => match registry.catalog().await {
            Ok(n) => n,
            Err(e) if e.is_retryable() => {
                out.failures.push(failure("*", "_catalog", e));
                return out;
            }
            Err(e) => {
                let why = format!(
                    "{e}; this registry does not list its repositories (/v2/_catalog), as most \
                     hosted registries do not: name each repository (--repository NAME, no \
                     glob) to back it up"
                );
                out.failures.push(failure("*", "_catalog", why));
                return out;
            }
        },
    };
    let mut repos = Vec::new();
    for n in names.into_iter().filter(|n| filters.repository(n)) {
        match RepoName::parse(&n) {
            Ok(r) => repos.push(r),
            Err(e) => out.failures.push(failure(&n, "", e)),
        }
    }
    let registry = Arc::new(registry.clone());
    for repo in repos {
        let raw_tags = match registry.list_tags(&repo).await {
            Ok(t) => t,
            // Named but absent (never pushed, or deleted): the snapshot truly holds nothing
            // from it, as a catalog listing would say, so it stays complete; the warning
            // catches a misspelt name.
            Err(e) if e.is_not_found() && named.is_some() => {
                out.warnings.push(format!(
                    "{repo}: repository not found in the registry, nothing backed up from it ({e})"
                ));
                continue;
            }
            Err(e) if e.is_not_found() => continue, // deleted since the catalog was read
            Err(e) => {
                out.failures.push(failure(repo.as_str(), "tags", e));
                continue;
            }
        };
        let (tags, _) = select_tags(repo.as_str(), &raw_tags, filters, &mut out);
        // Resolve each tag to its digest (HEAD, falling back to GET for registries that
        // omit Docker-Content-Digest), then group tags by digest.
        let resolved: Vec<_> = futures::stream::iter(tags)
            .map(|tag| {
                let registry = registry.clone();
                let repo = repo.clone();
                async move {
                    let r = Reference::Tag(tag.clone());
                    let digest = match registry.head_manifest(&repo, &r).await {
                        Ok(Some(h)) if h.digest.is_some() => Ok(h.digest),
                        Ok(Some(_)) => registry
                            .get_manifest(&repo, &r)
                            .await
                            .map(|m| Some(m.digest)),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                    (tag, digest)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut by_digest: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
        for (tag, d) in resolved {
            match d {
                Ok(Some(d)) => by_digest.entry(d).or_default().push(tag),
                // Listed a moment ago, gone now: nothing to back up, but say so, so a user
                // who expected the tag sees why it is not in the snapshot.
                Ok(None) => out.skipped.push(failure(
                    repo.as_str(),
                    tag.as_str(),
                    "tag deleted from the registry during the run; not backed up",
                )),
                Err(e) => out.failures.push(failure(repo.as_str(), tag.as_str(), e)),
            }
        }
        let mut candidates = Vec::new();
        for (digest, mut tags) in by_digest {
            tags.sort();
            let attachment = tags.iter().all(|t| t.attached_subject().is_some());
            candidates.push((
                SourceImage {
                    repo: repo.clone(),
                    digest,
                    tags,
                    pushed_at: None,
                    media_type: None,
                },
                attachment,
                true,
            ));
        }
        out.images.extend(attach(candidates, filters));
    }
    out
}
