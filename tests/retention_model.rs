//! A model-based test of retention over compressed time (locks of seconds), on the real local
//! stack: seeded random steps of what production does to a vault — pushes, retags and deletes
//! in the registry; nightly full runs, inline and fanned out over SQS; push-triggered runs;
//! filtered CLI runs; `gc --apply` with and without governance bypass; and GC running beside a
//! backup. After every step it checks, against its own model of the registry and of the
//! snapshots written:
//! - every snapshot left in the vault restores byte-exact (closure present, every object
//!   re-hashed, locks no shorter than the snapshot needs and no longer than its content);
//! - every snapshot the keep policy names survived the GC (per scope group, plus every part of
//!   `latest`), so images deleted from the registry stay recoverable as the policy says;
//! - `latest` is the registry as last seen (the model's own overlay);
//! - no manifest in the vault lacks its closure.
//!
//! Every `RESTORE_EVERY` steps, and at the end, `latest` is really restored into a fresh
//! registry and compared by digest with skopeo.
//!
//! `ECR_VAULT_MODEL_SEED` reproduces a run (the seed is printed first);
//! `ECR_VAULT_MODEL_STEPS` sets its length (200 here; `scripts/retention-soak.sh` runs 2,000+).

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use ecr_vault_engine::fanout::{self, Attempt, FanoutInput, FanoutOptions};
use ecr_vault_engine::gc::{GcOptions, gc};
use ecr_vault_engine::lease::LeaseRequest;
use ecr_vault_engine::{
    BackupOptions, Listing, NoProgress, PlanOptions, SnapshotSel, Source, SourceImage, backup,
    backup_listing, backup_plan, latest, plan, verify,
};
use ecr_vault_registry::{Digest, Manifest, RepoName, Tag};
use ecr_vault_testkit::fixtures::{Blob, Generated, ImageBuilder, oci_layer};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{
    new_vault, only, registry_source, restore_into_fresh, small_parts, sqs_client,
};
use ecr_vault_vault::{LockMode, LockPolicy, ScopeKind, SnapshotId, Vault};
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const REPOS: [&str; 4] = ["m/r0", "m/r1", "m/r2", "m/deep/r3"];
const TAGS: [&str; 2] = ["t0", "t1"];
const IMAGES: u64 = 10;
const RESTORE_EVERY: usize = 50;

/// What the model knows of one snapshot it wrote.
#[derive(Clone, Debug)]
struct ModelSnap {
    id: SnapshotId,
    /// Retention group: scope plus the filter (empty: unfiltered).
    group: (ScopeKind, String),
    /// Base-eligible for `latest`: a complete, unfiltered full listing.
    base: bool,
    /// name (`repo:tag`) → digest.
    records: BTreeMap<String, String>,
}

struct Model {
    rng: StdRng,
    registry: Registry,
    source: Source,
    vault: Vault,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    images: Vec<Generated>,
    /// `repo:tag` → image index.
    tags: BTreeMap<(String, String), usize>,
    last_pushed: Option<(String, String)>,
    snaps: Vec<ModelSnap>,
    steps_of: BTreeMap<&'static str, usize>,
}

impl Model {
    fn registry_records(&self, repo: Option<&str>) -> BTreeMap<String, String> {
        self.tags
            .iter()
            .filter(|((r, _), _)| repo.is_none_or(|x| x == r))
            .map(|((r, t), i)| (format!("{r}:{t}"), self.images[*i].digest.clone()))
            .collect()
    }

    fn record(
        &mut self,
        id: SnapshotId,
        group: (ScopeKind, String),
        records: BTreeMap<String, String>,
    ) {
        let base = group.0 == ScopeKind::Full && group.1.is_empty();
        self.snaps.push(ModelSnap {
            id,
            group,
            base,
            records,
        });
        self.snaps.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// The model's `latest`: the newest base-eligible snapshot (else the newest full listing,
    /// else the oldest), overlaid name by name by every newer one.
    fn latest(&self) -> (Vec<SnapshotId>, BTreeMap<String, String>) {
        let base = self
            .snaps
            .iter()
            .rposition(|s| s.base)
            .or_else(|| {
                self.snaps
                    .iter()
                    .rposition(|s| s.group.0 == ScopeKind::Full)
            })
            .unwrap_or(0);
        let mut out = BTreeMap::new();
        let mut ids = Vec::new();
        for s in self.snaps.iter().skip(base) {
            ids.push(s.id.clone());
            out.extend(s.records.clone());
        }
        (ids, out)
    }

    /// What a keep-last-`k` policy must keep: each group's newest `k`, and `latest`'s parts.
    fn must_keep(&self, k: usize) -> BTreeSet<SnapshotId> {
        let mut groups: BTreeMap<&(ScopeKind, String), Vec<&SnapshotId>> = BTreeMap::new();
        for s in &self.snaps {
            groups.entry(&s.group).or_default().push(&s.id);
        }
        let mut keep: BTreeSet<SnapshotId> = groups
            .values()
            .flat_map(|ids| ids.iter().rev().take(k.max(1)).map(|i| (*i).clone()))
            .collect();
        keep.extend(self.latest().0);
        keep
    }

    async fn push(&mut self) {
        let repo = REPOS[self.rng.random_range(0..REPOS.len())].to_owned();
        let tag = TAGS[self.rng.random_range(0..TAGS.len())].to_owned();
        // Often an image already pushed elsewhere: a retag, and shared layers across repos.
        let i = self.rng.random_range(0..self.images.len());
        self.images[i]
            .push(&self.registry, &repo, &[&tag])
            .await
            .unwrap();
        self.tags.insert((repo.clone(), tag.clone()), i);
        self.last_pushed = Some((repo, tag));
    }

    async fn delete(&mut self) {
        let Some(((repo, _), i)) = self
            .tags
            .iter()
            .nth(self.rng.random_range(0..self.tags.len().max(1)))
            .map(|(k, v)| (k.clone(), *v))
        else {
            return;
        };
        let digest = self.images[i].digest.clone();
        self.registry.delete_manifest(&repo, &digest).await.unwrap();
        // Deleting a manifest removes every tag of it in that repository.
        self.tags
            .retain(|(r, _), j| !(r == &repo && self.images[*j].digest == digest));
    }

    async fn nightly(&mut self) {
        let r = backup(
            &self.source,
            &self.vault,
            &BackupOptions {
                trigger: "scheduled".into(),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(r.complete, "{r:#?}");
        let records = self.registry_records(None);
        self.record(
            r.snapshot.unwrap(),
            (ScopeKind::Full, String::new()),
            records,
        );
    }

    async fn push_run(&mut self) {
        let Some((repo, tag)) = self.last_pushed.clone() else {
            return;
        };
        let Some(&i) = self.tags.get(&(repo.clone(), tag.clone())) else {
            return; // deleted since: the push event finds nothing (the handler skips it)
        };
        let listing = Listing {
            images: vec![SourceImage {
                repo: RepoName::parse(&repo).unwrap(),
                digest: Digest::parse(&self.images[i].digest).unwrap(),
                tags: vec![Tag::parse(&tag).unwrap()],
                pushed_at: Some(Utc::now()),
                media_type: None,
            }],
            ..Listing::default()
        };
        let r = backup_listing(
            &self.source,
            &self.vault,
            listing,
            &BackupOptions {
                trigger: "push".into(),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(r.complete, "{r:#?}");
        let records = BTreeMap::from([(format!("{repo}:{tag}"), self.images[i].digest.clone())]);
        self.record(
            r.snapshot.unwrap(),
            (ScopeKind::Partial, String::new()),
            records,
        );
    }

    async fn filtered(&mut self) {
        let repo = REPOS[self.rng.random_range(0..REPOS.len())];
        let filters = only(repo);
        let r = backup(
            &self.source,
            &self.vault,
            &BackupOptions {
                filters,
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(r.complete, "{r:#?}");
        let records = self.registry_records(Some(repo));
        self.record(
            r.snapshot.unwrap(),
            (ScopeKind::Full, repo.to_owned()),
            records,
        );
    }

    /// The scheduled path with a work queue, as the backup function drives it: plan under a
    /// lease, fan out when there is work, drain the queue through workers.
    async fn fanned_out(&mut self) {
        let opts = BackupOptions {
            trigger: "scheduled".into(),
            ..Default::default()
        };
        let p = plan(
            &self.source,
            &self.vault,
            &PlanOptions {
                lease: Some(LeaseRequest {
                    holder: "scheduled".into(),
                    deadline: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let records = self.registry_records(None);
        let (policy, now) = (self.vault.options().lock, Utc::now());
        let work = p.new.len()
            + p.unchanged
                .iter()
                .filter(|u| u.lock_until.is_none() || policy.needs_extension(u.lock_until, now))
                .count();
        let fan = FanoutOptions {
            queue_url: self.queue.clone(),
            threshold_images: 0,
            run_timeout: Duration::from_secs(600),
            lookback: Duration::from_secs(3600),
        };
        if !fan.should_fan_out(work) {
            let r = backup_plan(&self.source, &self.vault, p, &opts, Arc::new(NoProgress))
                .await
                .unwrap();
            assert!(r.complete, "{r:#?}");
            self.record(
                r.snapshot.unwrap(),
                (ScopeKind::Full, String::new()),
                records,
            );
            return;
        }
        let input = FanoutInput::from_plan(p, policy, now);
        let report = fanout::fan_out(&self.source, &self.vault, &self.sqs, input, &opts, &fan)
            .await
            .unwrap();
        assert!(report.not_queued.is_empty(), "{report:#?}");
        let manifest = fanout::read_manifest_cached(&self.vault, &report.run)
            .await
            .unwrap()
            .unwrap();
        let mut finalised = None;
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue)
                .max_number_of_messages(3)
                .send()
                .await
                .unwrap();
            let messages = got.messages();
            if messages.is_empty() {
                break;
            }
            let mut images = Vec::new();
            for m in messages {
                let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
                assert_eq!(body["run"], report.run.as_str());
                images.push(Attempt {
                    image: SourceImage {
                        repo: RepoName::parse(body["repository"].as_str().unwrap()).unwrap(),
                        digest: Digest::parse(body["digest"].as_str().unwrap()).unwrap(),
                        tags: body["tags"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|t| Tag::parse(t.as_str().unwrap()).unwrap())
                            .collect(),
                        pushed_at: None,
                        media_type: None,
                    },
                    last_attempt: true,
                });
            }
            let w = fanout::work(&self.source, &self.vault, &manifest, images, vec![], &opts)
                .await
                .unwrap();
            assert!(w.retry.is_empty(), "{w:#?}");
            for m in messages {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            finalised = finalised.or(w.finalised);
        }
        let f = finalised.expect("no worker finalised the run");
        assert!(f.complete, "{f:#?}");
        self.record(report.run, (ScopeKind::Full, String::new()), records);
    }

    async fn collect(&mut self, bypass: bool) {
        let k = self.rng.random_range(1..=3);
        let must = self.must_keep(k);
        let report = gc(
            &self.vault,
            &GcOptions {
                keep_last: k,
                keep_daily_days: 0,
                keep_monthly_months: 0,
                bypass_governance: bypass,
                ..GcOptions::default()
            },
            true,
        )
        .await
        .unwrap();
        assert!(!report.failed(), "{:#?}", report.errors);
        self.after_gc(&must).await;
    }

    /// GC and a backup at the same time. The backup's snapshot is new to the GC's plan, so it
    /// must survive; what the GC keeps is judged on the snapshots that existed before.
    async fn concurrently(&mut self) {
        let k = self.rng.random_range(1..=3);
        let bypass = self.rng.random_bool(0.7);
        let before = self.must_keep(k);
        let opts = GcOptions {
            keep_last: k,
            keep_daily_days: 0,
            keep_monthly_months: 0,
            bypass_governance: bypass,
            ..GcOptions::default()
        };
        let records = self.registry_records(None);
        let nightly = BackupOptions {
            trigger: "scheduled".into(),
            ..Default::default()
        };
        let (g, b) = tokio::join!(
            gc(&self.vault, &opts, true),
            backup(&self.source, &self.vault, &nightly, Arc::new(NoProgress))
        );
        let (g, b) = (g.unwrap(), b.unwrap());
        assert!(!g.failed(), "{:#?}", g.errors);
        assert!(b.complete, "{b:#?}");
        // The GC may or may not have seen the new snapshot; what both views keep must stay,
        // and so must the new snapshot.
        let id = b.snapshot.unwrap();
        self.record(id.clone(), (ScopeKind::Full, String::new()), records);
        let mut must: BTreeSet<SnapshotId> =
            before.intersection(&self.must_keep(k)).cloned().collect();
        must.insert(id);
        self.after_gc(&must).await;
    }

    async fn after_gc(&mut self, must: &BTreeSet<SnapshotId>) {
        let present: BTreeSet<SnapshotId> = self
            .vault
            .list_snapshots()
            .await
            .unwrap()
            .into_iter()
            .collect();
        let lost: Vec<_> = must.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "GC removed snapshots the policy keeps: {lost:?}"
        );
        self.snaps.retain(|s| present.contains(&s.id));
    }

    async fn check(&self) {
        let v = verify(&self.vault, None, true).await.unwrap();
        assert!(v.ok(), "{:#?}", v.problems);
        let (ids, expected) = self.latest();
        let l = latest(&self.vault).await.unwrap().unwrap();
        assert_eq!(
            l.ids(),
            ids,
            "latest is made of other snapshots than the model's"
        );
        let engine: BTreeMap<String, String> = l
            .records()
            .into_iter()
            .filter_map(|r| Some((format!("{}:{}", r.repository, r.tag?), r.digest.to_string())))
            .collect();
        assert_eq!(
            engine, expected,
            "latest differs from the registry as last seen"
        );
        self.closures().await;
    }

    /// Every object written as a manifest has its whole closure in the vault.
    async fn closures(&self) {
        let prefix = self.vault.location().key("blobs/sha256/");
        let keys: Vec<String> = self
            .vault
            .list_keys(&prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let present: BTreeSet<String> = keys.iter().cloned().collect();
        let vault = &self.vault;
        let manifests: Vec<(String, Manifest)> = futures::stream::iter(keys)
            .map(|k| async move {
                let state = vault.head(&k).await.unwrap()?;
                if !state.is_manifest {
                    return None;
                }
                let bytes = vault.get_document(&k, 4 << 20).await.unwrap()?;
                let hex = k.rsplit('/').next().unwrap();
                let digest = Digest::parse(&format!("sha256:{hex}")).unwrap();
                let m = Manifest::parse(&digest, state.content_type.as_deref(), bytes).unwrap();
                Some((k, m))
            })
            .buffer_unordered(16)
            .filter_map(|x| async { x })
            .collect()
            .await;
        for (key, m) in manifests {
            for child in &m.references {
                let child_key = self.vault.location().blob_key(&child.digest);
                assert!(
                    present.contains(&child_key) || child.is_non_distributable(),
                    "{key} is in the vault without {child_key}"
                );
            }
        }
    }

    async fn restore_latest(&self) {
        let (_, expected) = self.latest();
        let fresh = restore_into_fresh(&self.vault, SnapshotSel::Latest)
            .await
            .unwrap();
        for (name, digest) in &expected {
            assert_eq!(
                &skopeo_digest(&fresh, name).await.unwrap(),
                digest,
                "{name}"
            );
        }
    }
}

fn images(seed: u64) -> Vec<Generated> {
    // Some images share a base layer, as real ones do, so GC sees blobs referenced by many.
    let base: Blob = oci_layer(seed ^ 0xba5e, 2_500);
    (0..IMAGES)
        .map(|i| {
            let b =
                ImageBuilder::oci(seed.wrapping_mul(31).wrapping_add(i)).layers(&[1_000 + i * 17]);
            let b = if i % 3 == 0 {
                b.shared_layer(base.clone())
            } else {
                b
            };
            b.build().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_holds_over_random_runs_gcs_and_registry_changes() {
    let seed: u64 = std::env::var("ECR_VAULT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let steps: usize = std::env::var("ECR_VAULT_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("retention model: ECR_VAULT_MODEL_SEED={seed} ECR_VAULT_MODEL_STEPS={steps}");
    let stack = Stack::shared().await.unwrap();
    let registry = Registry::start().await.unwrap();
    let source = registry_source(&registry).unwrap();
    // Compressed time: content is locked for 3 s (+1 s slack) in GOVERNANCE, so locks expire
    // between steps and GC has real work, with and without bypass.
    let vault = new_vault(
        &stack.s3,
        "model",
        small_parts(LockPolicy::seconds(LockMode::Governance, 3, 1)),
    )
    .await
    .unwrap();
    let sqs = sqs_client(stack);
    let queue = sqs
        .create_queue()
        .queue_name(unique_name("model-work").replace(['/', '.'], "-"))
        .attributes(QueueAttributeName::VisibilityTimeout, "300")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mut m = Model {
        rng: StdRng::seed_from_u64(seed),
        registry,
        source,
        vault,
        sqs,
        queue,
        images: images(seed),
        tags: BTreeMap::new(),
        last_pushed: None,
        snaps: Vec::new(),
        steps_of: BTreeMap::new(),
    };
    let started = Instant::now();
    for step in 0..steps {
        let roll = m.rng.random_range(0..100);
        let what = match roll {
            _ if m.tags.is_empty() => "push",
            0..25 => "push",
            25..33 => "delete",
            33..43 => "nightly",
            43..58 => "push-run",
            58..66 => "filtered",
            66..72 => "fan-out",
            72..82 => "gc",
            82..90 => "gc-bypass",
            _ => "gc-beside-backup",
        };
        *m.steps_of.entry(what).or_default() += 1;
        match what {
            "push" => m.push().await,
            "delete" => m.delete().await,
            "nightly" => m.nightly().await,
            "push-run" => m.push_run().await,
            "filtered" => m.filtered().await,
            "fan-out" => m.fanned_out().await,
            "gc" => m.collect(false).await,
            "gc-bypass" => m.collect(true).await,
            _ => m.concurrently().await,
        }
        if !m.snaps.is_empty() {
            m.check().await;
            if (step + 1) % RESTORE_EVERY == 0 {
                m.restore_latest().await;
            }
        }
        let _ = step;
    }
    if !m.snaps.is_empty() {
        m.restore_latest().await;
    }
    println!(
        "retention model: {steps} steps in {:.1} s, seed {seed}: {:?}; {} snapshots left",
        started.elapsed().as_secs_f64(),
        m.steps_of,
        m.snaps.len()
    );
}
