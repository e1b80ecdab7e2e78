//! A batch of queued work items. Items of a fanned-out run (its manifest is in the vault) are
//! captured and marked done for that run; the others (no run, or a run that did not fan out)
//! are backed up together as one run of their own. The answer is which messages to redeliver.

use std::collections::BTreeMap;
use std::sync::Arc;

use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{SnapshotId, Vault};
use futures::StreamExt as _;

use crate::fanout::{self, RunManifest, Unavailable, WorkImage, WorkItem, WorkReport};
use crate::lookup::{self, Lookup};
use crate::{BackupOptions, BackupReport, Listing, NoProgress, Source, backup_listing};

/// One delivered work item, decoded ([`crate::fanout::item::decode`]).
#[derive(Clone, Debug)]
pub struct QueuedItem {
    pub message_id: String,
    /// How often the queue has delivered the message.
    pub receives: u32,
    pub item: WorkItem,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct QueuedReport {
    /// Message ids whose image was not backed up: the queue redelivers them.
    pub failed: Vec<String>,
    /// Per fanned-out run named in the batch, what its worker did.
    pub runs: Vec<(String, WorkReport)>,
    /// The run of the items that belong to no fanned-out run.
    pub standalone: Option<BackupReport>,
}

/// A work item's run (if any), repository and digest.
type ItemKey = (Option<String>, RepoName, Digest);

/// The messages asking for one image, merged.
#[derive(Default)]
struct Wanted {
    ids: Vec<String>,
    tags: Vec<Tag>,
    /// The highest delivery count among them.
    receives: u32,
}

/// The items of one fanned-out run in a batch.
#[derive(Default)]
struct FannedItems<'a> {
    images: Vec<WorkImage>,
    unavailable: Vec<Unavailable>,
    ids: BTreeMap<(RepoName, Digest), &'a Vec<String>>,
}

/// Backs up a batch. `max_receives` is the queue's maxReceiveCount: a failure on that delivery
/// is final for a fanned-out run.
pub async fn queued(
    source: &Source,
    vault: &Vault,
    items: Vec<QueuedItem>,
    opts: &BackupOptions,
    max_receives: u32,
) -> QueuedReport {
    let mut wanted: BTreeMap<ItemKey, Wanted> = BTreeMap::new();
    for q in items {
        let i = q.item;
        let entry = wanted.entry((i.run, i.repository, i.digest)).or_default();
        entry.ids.push(q.message_id);
        entry.tags.extend(i.tags);
        entry.receives = entry.receives.max(q.receives);
    }
    let mut report = QueuedReport::default();
    let all_ids = |w: &BTreeMap<ItemKey, Wanted>| w.values().flat_map(|w| w.ids.clone()).collect();
    // The manifests of the runs named in the batch; a run without one did not fan out.
    let mut manifests: BTreeMap<String, Option<RunManifest>> = BTreeMap::new();
    for (run, _, _) in wanted.keys() {
        let Some(run) = run else { continue };
        let Ok(id) = SnapshotId::parse(run) else {
            continue;
        };
        if manifests.contains_key(run) {
            continue;
        }
        match fanout::read_manifest(vault, &id).await {
            Ok(m) => {
                manifests.insert(run.clone(), m);
            }
            Err(e) => {
                // Without its manifest the item cannot be accounted for: retry later.
                tracing::error!(run, error = %e, "cannot read the run manifest");
                report.failed = all_ids(&wanted);
                return report;
            }
        }
    }
    let looked_up: Vec<_> = futures::stream::iter(wanted.iter())
        .map(|((run, repo, digest), w)| async move {
            let r = lookup::queued(source, repo, digest, w.tags.clone()).await;
            (run, repo, digest, w, r)
        })
        .buffer_unordered(opts.image_concurrency.max(1))
        .collect()
        .await;
    let mut images = Vec::new();
    // The message ids behind each image that goes into the standalone run.
    let mut pending: Vec<(String, &Vec<String>)> = Vec::new();
    let mut fanned: BTreeMap<&str, FannedItems> = BTreeMap::new();
    for (run, repo, digest, w, r) in looked_up {
        let image = format!("{repo}@{digest}");
        let run = run
            .as_deref()
            .filter(|r| matches!(manifests.get(*r), Some(Some(_))));
        let unavailable = |reason: String| Unavailable {
            repository: repo.clone(),
            digest: digest.clone(),
            reason,
        };
        let why = match r {
            Ok(Lookup::Found { image: img, .. }) => {
                match run {
                    Some(run) => {
                        let f = fanned.entry(run).or_default();
                        f.images.push(WorkImage {
                            image: img,
                            last_attempt: w.receives >= max_receives,
                        });
                        f.ids.insert((repo.clone(), digest.clone()), &w.ids);
                    }
                    None => {
                        images.push(img);
                        pending.push((image, &w.ids));
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(image, error = %e, "describe failed");
                report.failed.extend(w.ids.iter().cloned());
                if w.receives < max_receives {
                    continue;
                }
                format!("ECR DescribeImages failed: {e}")
            }
            Ok(Lookup::Gone) => {
                tracing::info!(image, "work item's image is gone from ECR; nothing to do");
                "image no longer in ECR (deleted after the run was planned)".to_owned()
            }
            Ok(Lookup::Archived) | Ok(Lookup::NotSelected(_)) => {
                tracing::info!(image, "work item's image is archived; not backed up");
                "image is archived (archived images cannot be pulled)".to_owned()
            }
        };
        if let Some(run) = run {
            fanned
                .entry(run)
                .or_default()
                .unavailable
                .push(unavailable(why));
        }
    }
    for (run, f) in fanned {
        let Some(Some(manifest)) = manifests.get(run) else {
            continue;
        };
        match fanout::work(source, vault, manifest, f.images, f.unavailable, opts).await {
            Ok(w) => {
                for key in &w.retry {
                    if let Some(ids) = f.ids.get(key) {
                        report.failed.extend(ids.iter().cloned());
                    }
                }
                report.runs.push((run.to_owned(), w));
            }
            Err(e) => {
                tracing::error!(run, error = %e, "work items of a fanned-out run failed");
                report
                    .failed
                    .extend(f.ids.values().flat_map(|ids| ids.iter().cloned()));
            }
        }
    }
    if !images.is_empty() {
        let listing = Listing {
            images,
            ..Listing::default()
        };
        match backup_listing(source, vault, listing, opts, Arc::new(NoProgress)).await {
            Ok(run) => {
                for (image, ids) in pending {
                    let bad = run
                        .failures
                        .iter()
                        .any(|f| format!("{}@{}", f.repository, f.reference) == image)
                        || run.deferred.contains(&image);
                    if bad {
                        report.failed.extend(ids.iter().cloned());
                    }
                }
                report.standalone = Some(run);
            }
            Err(e) => {
                tracing::error!(error = %e, "work-item run failed");
                for (_, ids) in pending {
                    report.failed.extend(ids.iter().cloned());
                }
            }
        }
    }
    report.failed.sort();
    report.failed.dedup();
    report
}
