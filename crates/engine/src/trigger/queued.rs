//! A batch of queued work items. Bodies are decoded first ([`Batch::decode`]); a body that is
//! not a work item is redelivered (and dead-lettered in the end). Items of a fanned-out run
//! (its manifest is in the vault) are captured and marked done for that run; the others (no
//! run, or a run that did not fan out) are backed up together as one run of their own. The
//! answer is which messages to redeliver.

use std::collections::BTreeMap;
use std::sync::Arc;

use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{SnapshotId, Vault};
use futures::StreamExt as _;

use crate::fanout::{self, Attempt, IndexedManifest, Unavailable, WorkItem, WorkReport};
use crate::lookup::{self, Lookup};
use crate::{BackupOptions, BackupReport, Listing, NoProgress, Source, backup_listing};

/// One message as the queue delivered it, body not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// What `batchItemFailures` names to have the message redelivered.
    pub message_id: String,
    /// `ApproximateReceiveCount` (1 when absent): with the queue's maxReceiveCount it tells a
    /// worker that a failure now sends the item to the DLQ.
    pub receives: u32,
    pub body: Option<String>,
}

/// A delivered batch with its bodies decoded.
#[derive(Debug, Default)]
pub struct Batch {
    accepted: Vec<Accepted>,
    /// Messages whose body is not a work item.
    refused: Vec<String>,
}

/// A delivery whose body decoded to a work item.
#[derive(Debug)]
struct Accepted {
    message_id: String,
    receives: u32,
    item: WorkItem,
}

impl Batch {
    /// Decodes every body ([`crate::fanout::item::decode`]); a refused one is logged with why.
    pub fn decode(deliveries: Vec<Delivery>) -> Self {
        let mut batch = Batch::default();
        for d in deliveries {
            match decode_body(d.body.as_deref()) {
                Ok(item) => batch.accepted.push(Accepted {
                    message_id: d.message_id,
                    receives: d.receives,
                    item,
                }),
                Err(why) => {
                    tracing::warn!(message_id = d.message_id, why, "refused a work item");
                    batch.refused.push(d.message_id);
                }
            }
        }
        batch
    }

    /// Whether any body is a work item: without one there is nothing to back up.
    pub fn has_work(&self) -> bool {
        !self.accepted.is_empty()
    }

    /// Every message id, sorted: what to redeliver when the batch cannot be worked on.
    pub fn message_ids(self) -> Vec<String> {
        let mut ids = self.refused;
        ids.extend(self.accepted.into_iter().map(|a| a.message_id));
        ids.sort();
        ids.dedup();
        ids
    }
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct QueuedReport {
    /// Message ids whose image was not backed up, or whose body was refused: the queue
    /// redelivers them.
    pub failed: Vec<String>,
    /// Per fanned-out run named in the batch, what its worker did.
    pub runs: Vec<(String, WorkReport)>,
    /// The run of the items that belong to no fanned-out run.
    pub standalone: Option<BackupReport>,
}

impl QueuedReport {
    /// Logs what the batch did and returns its metrics, one EMF line per fanned-out run and
    /// one for the standalone run.
    pub fn metrics(&self, function_name: &str, now_ms: i64) -> Vec<String> {
        let mut lines = Vec::new();
        for (run, w) in &self.runs {
            tracing::info!(
                run,
                done = w.done.len(),
                retry = w.retry.len(),
                failed_final = w.failed_final.len(),
                "work items processed"
            );
            let full = w.finalised.as_ref().is_some_and(|f| {
                f.log();
                super::is_full_snapshot(super::SCHEDULED, f.complete, f.written)
            });
            lines.push(crate::metrics::work_emf(w, function_name, full, now_ms));
        }
        if let Some(r) = &self.standalone {
            lines.push(super::run_metrics(
                r,
                super::WORK_ITEM,
                function_name,
                now_ms,
            ));
        }
        lines
    }
}

/// Decodes one message body ([`crate::fanout::item::decode`]); the error says why the item is
/// refused.
pub fn decode_body(body: Option<&str>) -> Result<WorkItem, String> {
    fanout::item::decode(body.ok_or("the message has no body")?)
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
    images: Vec<Attempt>,
    unavailable: Vec<Unavailable>,
    ids: BTreeMap<(RepoName, Digest), &'a Vec<String>>,
}

/// Backs up a batch. `max_receives` is the queue's maxReceiveCount: a failure on that delivery
/// is final for a fanned-out run.
pub async fn queued(
    source: &Source,
    vault: &Vault,
    batch: Batch,
    opts: &BackupOptions,
    max_receives: u32,
) -> QueuedReport {
    let mut report = QueuedReport {
        failed: batch.refused,
        ..QueuedReport::default()
    };
    let mut wanted: BTreeMap<ItemKey, Wanted> = BTreeMap::new();
    for q in batch.accepted {
        let i = q.item;
        let entry = wanted.entry((i.run, i.repository, i.digest)).or_default();
        entry.ids.push(q.message_id);
        entry.tags.extend(i.tags);
        entry.receives = entry.receives.max(q.receives);
    }
    let all_ids = |w: &BTreeMap<ItemKey, Wanted>| -> Vec<String> {
        w.values().flat_map(|w| w.ids.clone()).collect()
    };
    // The manifests of the runs named in the batch (read once per container); a run without
    // one did not fan out.
    let mut manifests: BTreeMap<String, Option<Arc<IndexedManifest>>> = BTreeMap::new();
    for (run, _, _) in wanted.keys() {
        let Some(run) = run else { continue };
        let Ok(id) = SnapshotId::parse(run) else {
            continue;
        };
        if manifests.contains_key(run) {
            continue;
        }
        match fanout::read_manifest_cached(vault, &id).await {
            Ok(m) => {
                manifests.insert(run.clone(), m);
            }
            Err(e) => {
                // Without its manifest the item cannot be accounted for: retry later.
                tracing::error!(run, error = %e, "cannot read the run manifest");
                report.failed.extend(all_ids(&wanted));
                report.failed.sort();
                report.failed.dedup();
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
                        f.images.push(Attempt {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_a_work_item_is_refused_and_redelivered() {
        let d = "sha256:cccebb337cb45e831493c358fe82df29dcdd355cba62de55c738ddb99aafe758";
        let delivery = |id: &str, body: Option<String>| Delivery {
            message_id: id.into(),
            receives: 1,
            body,
        };
        let ok = format!(r#"{{"action":"backup-image","repository":"a/b","digest":"{d}"}}"#);
        let refused = Batch::decode(vec![
            delivery("m2", Some("not json".into())),
            delivery("m1", None),
        ]);
        assert!(!refused.has_work());
        assert_eq!(refused.message_ids(), ["m1", "m2"]);
        let mixed = Batch::decode(vec![delivery("m3", Some(ok)), delivery("m1", None)]);
        assert!(mixed.has_work());
        assert_eq!(mixed.accepted[0].item.repository.as_str(), "a/b");
        assert_eq!(mixed.message_ids(), ["m1", "m3"]);
    }
}
