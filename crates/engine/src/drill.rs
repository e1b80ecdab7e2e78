//! The restore drill: proof, on a schedule, that the vault restores.
//!
//! Like AWS Backup's restore testing: take a sample of the latest snapshot, restore it into
//! scratch repositories under a reserved prefix ([`DrillOptions::prefix`], one sub-prefix per
//! drill), read every restored manifest back from the registry by digest (the registry's bytes
//! must hash to the vault's digest), check every blob it references is there with its size and
//! every tag points at the right digest, then delete the scratch repositories. The restore
//! itself is [`crate::restore()`] (which re-hashes every blob it streams from the vault), and the
//! choice of snapshot is [`crate::select`] with [`SnapshotSel::Latest`].
//!
//! The schedule is here too ([`DrillEvent`]): the drill function is invoked daily, drills on
//! its day of the month (or when forced), and emits `DrillChecks` on every invocation, so a
//! broken schedule shows as missing checks within days, not a month later (CloudWatch alarms
//! look back at most 7 days).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Datelike as _, Utc};
use ecr_vault_registry::{Digest, ManifestKind, Reference, RegistryClient, RepoName, Tag};
use ecr_vault_vault::{Failure, Role, Vault};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::filter::{FilterSpec, Filters};
use crate::progress::NoProgress;
use crate::restore::{Mapping, RestoreReport, RestoreRequest, restore};
use crate::select::{SnapshotSel, select};
use crate::source::{Source, Target};

/// The reserved ECR prefix of scratch repositories. The drill role may delete only there.
pub const DRILL_PREFIX: &str = "ecr-vault-drill/";

#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// Images restored per drill (distinct repository and digest).
    pub sample: usize,
    /// Scratch repositories are `<prefix><run>/<original name>`; must end in `/`.
    pub prefix: String,
    /// This drill's name under the prefix, e.g. its start time (`20261201T060000Z`).
    pub run: String,
    /// Chooses the sample; reported, so a drill can be repeated on the same images.
    pub seed: u64,
}

/// What a drill found. `passed` only when every sampled image restored and verified.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    pub passed: bool,
    pub snapshot: Option<String>,
    pub seed: u64,
    /// Images in the snapshot, and the sample restored.
    pub images_in_snapshot: u64,
    pub images_sampled: u64,
    /// Sampled images whose every digest matched after the restore.
    pub images_verified: u64,
    pub bytes_restored: u64,
    /// Restore failures and digest mismatches, per image.
    pub failures: Vec<Failure>,
    pub scratch_repositories: Vec<String>,
    /// Scratch repositories that could not be deleted (they stay under the prefix).
    pub cleanup_failures: Vec<Failure>,
    pub duration_ms: u64,
}

/// The schedule's input: `{"action": "drill"}`; a person may add `"force": true` (drill now)
/// and a `"seed"` (repeat an earlier drill's sample).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrillEvent {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl DrillEvent {
    pub fn parse(payload: serde_json::Value) -> Result<Self, String> {
        let e: DrillEvent =
            serde_json::from_value(payload).map_err(|e| format!("invalid drill event: {e}"))?;
        match e.action.as_deref() {
            None | Some("drill") => Ok(e),
            Some(other) => Err(format!(
                "invalid drill event: action {other:?}, expected \"drill\""
            )),
        }
    }

    /// Whether this invocation drills: when forced, on `day_of_month` (UTC), or on every
    /// invocation when `day_of_month` is 0.
    pub fn due(&self, day_of_month: u32, now: DateTime<Utc>) -> bool {
        self.force || day_of_month == 0 || now.day() == day_of_month
    }

    /// The options of a drill starting `now`: named by its start time, sampled by the event's
    /// seed, or by the clock when the event names none.
    pub fn options(&self, sample: usize, now: DateTime<Utc>) -> DrillOptions {
        DrillOptions {
            sample,
            prefix: DRILL_PREFIX.to_owned(),
            run: now.format("%Y%m%d-%H%M%S").to_string(),
            seed: self.seed.unwrap_or(now.timestamp() as u64),
        }
    }
}

/// How a drill ended, for the invocation's result and alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillVerdict {
    Passed,
    /// Some sampled image did not restore or verify, or the drill could not start.
    Failed,
    /// Passed, but scratch repositories could not be deleted.
    LeftScratch,
}

impl DrillReport {
    /// The report of a drill that could not start (no vault access, no snapshot): a failed
    /// drill, so the alarms see it like any other.
    pub fn not_started(seed: u64, error: String) -> Self {
        DrillReport {
            seed,
            failures: vec![Failure {
                repository: String::new(),
                reference: String::new(),
                error,
            }],
            ..DrillReport::default()
        }
    }

    pub fn verdict(&self) -> DrillVerdict {
        if !self.passed {
            DrillVerdict::Failed
        } else if !self.cleanup_failures.is_empty() {
            DrillVerdict::LeftScratch
        } else {
            DrillVerdict::Passed
        }
    }

    /// One line saying how the drill ended.
    pub fn verdict_line(&self) -> String {
        match self.verdict() {
            DrillVerdict::Failed => format!(
                "restore drill failed: {} of {} sampled image(s) verified",
                self.images_verified, self.images_sampled
            ),
            DrillVerdict::LeftScratch => {
                "restore drill passed, scratch repositories remain".to_owned()
            }
            DrillVerdict::Passed => "restore drill passed".to_owned(),
        }
    }
}

/// The scheduled drill: the vault at `vault_uri` into this account's ECR (`registry_url`
/// overrides its endpoint). A drill that cannot start (no vault access, ECR unreachable, no
/// snapshot) is reported as a failed drill, so the alarms see it like any other.
pub async fn drill_ecr(
    sdk: &aws_config::SdkConfig,
    vault_uri: &str,
    registry_url: Option<String>,
    opts: &DrillOptions,
) -> DrillReport {
    let run = async {
        let vault = crate::open_vault_at(sdk, vault_uri).map_err(|e| e.to_string())?;
        let ecr = crate::RegistryConfig::Ecr {
            registry_url,
            registry_id: None,
        };
        let target = crate::open_source(sdk, &ecr)
            .await
            .map_err(|e| format!("target registry: {e}"))?;
        drill(&vault, &target, opts)
            .await
            .map_err(|e| e.to_string())
    };
    // Boxed: the nested futures are otherwise deep enough to hit the compiler's limit in the
    // function that awaits this one.
    Box::pin(run)
        .await
        .unwrap_or_else(|e| DrillReport::not_started(opts.seed, e))
}

/// Runs one drill against `target` (ECR: scratch repositories are created and deleted
/// through its API; another registry: nothing is deleted). An `Err` is a drill that could not
/// start (no snapshot, bad options); a drill that ran reports its verdict in the report.
pub async fn drill(
    vault: &Vault,
    target: &Target,
    opts: &DrillOptions,
) -> Result<DrillReport, EngineError> {
    let started = Instant::now();
    if !opts.prefix.ends_with('/') || opts.prefix.len() < 2 {
        return Err(EngineError::Config(format!(
            "drill prefix {:?} must be a repository prefix ending in /",
            opts.prefix
        )));
    }
    let latest = select(vault, &SnapshotSel::Latest, &Filters::all(), &[]).await?;
    let snapshot = latest.snapshots.first().cloned().ok_or_else(|| {
        EngineError::Config(format!("the vault {} has no snapshots", vault.location()))
    })?;
    let images: BTreeMap<(RepoName, Digest), BTreeSet<Tag>> = latest
        .records
        .iter()
        .filter(|r| r.role == Role::Image)
        .fold(BTreeMap::new(), |mut m, r| {
            let tags: &mut BTreeSet<Tag> = m
                .entry((r.repository.clone(), r.digest.clone()))
                .or_default();
            tags.extend(r.tag.clone());
            m
        });
    let mut report = DrillReport {
        snapshot: Some(snapshot.to_string()),
        seed: opts.seed,
        images_in_snapshot: images.len() as u64,
        ..DrillReport::default()
    };
    let sample = choose(images, opts.sample, opts.seed);
    report.images_sampled = sample.len() as u64;
    if sample.is_empty() {
        report.failures.push(Failure {
            repository: String::new(),
            reference: snapshot.to_string(),
            error: "the latest snapshot lists no image to restore".into(),
        });
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    let scratch_root = format!("{}{}/", opts.prefix, opts.run);
    let scratch = |repo: &RepoName| RepoName::parse(&format!("{scratch_root}{repo}"));
    let repos: BTreeSet<&RepoName> = sample.iter().map(|((r, _), _)| r).collect();
    let req = RestoreRequest {
        snapshot: SnapshotSel::Id(snapshot.clone()),
        filters: Filters::new(FilterSpec {
            repositories: repos.iter().map(|r| r.to_string()).collect(),
            ..FilterSpec::default()
        })
        .map_err(EngineError::Config)?,
        digests: sample.iter().map(|((_, d), _)| d.clone()).collect(),
        mapping: Mapping {
            renames: repos
                .iter()
                .map(|r| (r.to_string(), format!("{scratch_root}{r}")))
                .collect(),
            retags: Vec::new(),
            digest_only: false,
        },
        dry_run: false,
        concurrency: 4,
    };
    let restored = restore(vault, target, &req, Arc::new(NoProgress)).await;
    let mut created: BTreeSet<String> = repos
        .iter()
        .filter_map(|r| scratch(r).ok().map(|s| s.to_string()))
        .collect();
    match restored {
        Ok(r) => {
            report.bytes_restored = r.bytes_pushed;
            created.extend(r.repositories_created.iter().cloned());
            report.failures.extend(restore_failures(&r));
            for ((repo, digest), tags) in &sample {
                let image = format!("{repo}@{digest}");
                let checked = match scratch(repo) {
                    Ok(to) => verify_image(target.registry(), &to, digest, tags).await,
                    Err(e) => Err(e.to_string()),
                };
                match checked {
                    Ok(()) => report.images_verified += 1,
                    Err(error) if !report.failures.iter().any(|f| f.reference == image) => {
                        report.failures.push(Failure {
                            repository: repo.to_string(),
                            reference: image,
                            error,
                        })
                    }
                    Err(_) => {}
                }
            }
        }
        Err(e) => report.failures.push(Failure {
            repository: String::new(),
            reference: snapshot.to_string(),
            error: format!("restore: {e}"),
        }),
    }

    report.scratch_repositories = created.iter().cloned().collect();
    if let Source::Ecr { ecr, .. } = target {
        for name in &created {
            // Never delete outside the drill's own sub-prefix, whatever the restore reported.
            if !name.starts_with(&scratch_root) {
                continue;
            }
            if let Err(e) = ecr.delete_repository(name).await {
                report.cleanup_failures.push(Failure {
                    repository: name.clone(),
                    reference: String::new(),
                    error: e.to_string(),
                });
            }
        }
    }
    report.passed = report.failures.is_empty() && report.images_verified == report.images_sampled;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// `n` images, in an order fixed by `seed` (the sha256 of seed and name), so the same seed
/// draws the same sample from the same snapshot.
fn choose(
    images: BTreeMap<(RepoName, Digest), BTreeSet<Tag>>,
    n: usize,
    seed: u64,
) -> Vec<((RepoName, Digest), BTreeSet<Tag>)> {
    let mut all: Vec<_> = images
        .into_iter()
        .map(|(k, v)| {
            let rank = Digest::of(format!("{seed}:{}@{}", k.0, k.1).as_bytes()).to_string();
            (rank, k, v)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().take(n).map(|(_, k, v)| (k, v)).collect()
}

/// The restore's failures, named by source image (`repo@digest`) where the restore named
/// them by target (`from → to`).
fn restore_failures(r: &RestoreReport) -> Vec<Failure> {
    r.failures
        .iter()
        .map(|f| {
            let repo = f
                .repository
                .split_once(" → ")
                .map_or(f.repository.as_str(), |(from, _)| from);
            Failure {
                repository: repo.to_owned(),
                reference: format!("{repo}@{}", f.reference),
                error: f.error.clone(),
            }
        })
        .collect()
}

/// Reads the image back from the registry: every manifest by digest (the registry's bytes
/// must hash to it), every blob present with its size, every tag on the digest.
async fn verify_image(
    registry: &RegistryClient,
    repo: &RepoName,
    digest: &Digest,
    tags: &BTreeSet<Tag>,
) -> Result<(), String> {
    let mut pending = vec![digest.clone()];
    let mut seen = BTreeSet::new();
    while let Some(d) = pending.pop() {
        if !seen.insert(d.clone()) || seen.len() > 1024 {
            continue;
        }
        let m = registry
            .get_manifest(repo, &Reference::Digest(d.clone()))
            .await
            .map_err(|e| format!("manifest {d} in {repo}: {e}"))?;
        for r in &m.references {
            match m.kind {
                ManifestKind::Index => pending.push(r.digest.clone()),
                ManifestKind::Image => {
                    let size = registry
                        .head_blob(repo, &r.digest)
                        .await
                        .map_err(|e| format!("blob {} in {repo}: {e}", r.digest))?;
                    match size {
                        None if r.is_non_distributable() => {}
                        None => return Err(format!("blob {} missing from {repo}", r.digest)),
                        // 0: the registry sent no length (HEAD); presence is what it proves.
                        Some(s) if s != r.size && s != 0 => {
                            return Err(format!(
                                "blob {} in {repo} has {s} bytes, the manifest says {}",
                                r.digest, r.size
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    for t in tags {
        let head = registry
            .head_manifest(repo, &Reference::Tag(t.clone()))
            .await
            .map_err(|e| format!("tag {repo}:{t}: {e}"))?
            .ok_or_else(|| format!("tag {repo}:{t} missing"))?;
        let got = match head.digest {
            Some(d) => d,
            None => {
                registry
                    .get_manifest(repo, &Reference::Tag(t.clone()))
                    .await
                    .map_err(|e| format!("tag {repo}:{t}: {e}"))?
                    .digest
            }
        };
        if &got != digest {
            return Err(format!("tag {repo}:{t} points at {got}, expected {digest}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> BTreeMap<(RepoName, Digest), BTreeSet<Tag>> {
        (0..n)
            .map(|i| {
                let repo = RepoName::parse(&format!("team/app{i}")).unwrap();
                let digest = Digest::of(format!("image {i}").as_bytes());
                ((repo, digest), BTreeSet::new())
            })
            .collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_sample_and_another_seed_another() {
        let a = choose(images(50), 5, 7);
        assert_eq!(a.len(), 5);
        let again = choose(images(50), 5, 7);
        assert_eq!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            again.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        let other = choose(images(50), 5, 8);
        assert_ne!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            other.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        assert_eq!(
            choose(images(3), 5, 1).len(),
            3,
            "a small vault is restored whole"
        );
    }

    #[test]
    fn drills_on_its_day_or_when_forced() {
        use chrono::TimeZone as _;
        let first = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
        let second = Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap();
        let scheduled = DrillEvent::parse(serde_json::json!({"action": "drill"})).unwrap();
        assert!(scheduled.due(1, first));
        assert!(!scheduled.due(1, second));
        let forced = DrillEvent::parse(serde_json::json!({"force": true})).unwrap();
        assert!(forced.due(1, second));
        assert!(scheduled.due(0, second), "0 drills on every invocation");
        let seeded = DrillEvent::parse(serde_json::json!({"seed": 42})).unwrap();
        let opts = seeded.options(5, second);
        assert_eq!((opts.seed, opts.run.as_str()), (42, "20261202-060000"));
        assert_eq!(opts.prefix, DRILL_PREFIX);
        assert_eq!(scheduled.options(5, second).seed, second.timestamp() as u64);
    }

    #[test]
    fn bad_events_are_refused() {
        assert!(DrillEvent::parse(serde_json::json!({"action": "backup"})).is_err());
        assert!(DrillEvent::parse(serde_json::json!({"forse": true})).is_err());
    }

    #[test]
    fn a_drill_that_did_not_start_failed_and_cleanup_is_judged_after_the_restore() {
        let r = DrillReport::not_started(7, "the vault has no snapshots".into());
        assert_eq!((r.verdict(), r.seed), (DrillVerdict::Failed, 7));
        assert!(r.verdict_line().contains("0 of 0"), "{}", r.verdict_line());
        let mut ok = DrillReport {
            passed: true,
            ..DrillReport::default()
        };
        assert_eq!(ok.verdict(), DrillVerdict::Passed);
        ok.cleanup_failures = r.failures.clone();
        assert_eq!(ok.verdict(), DrillVerdict::LeftScratch);
    }

    #[test]
    fn restore_failures_are_named_by_source_image() {
        let r = RestoreReport {
            failures: vec![Failure {
                repository: "team/app → ecr-vault-drill/x/team/app".into(),
                reference: "sha256:00".into(),
                error: "corrupt".into(),
            }],
            ..RestoreReport::default()
        };
        let f = restore_failures(&r);
        assert_eq!(f[0].repository, "team/app");
        assert_eq!(f[0].reference, "team/app@sha256:00");
    }
}
