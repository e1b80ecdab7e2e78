//! Scale: 1,000 images in 100 repositories, 5,000 distinct blobs, 50 % of layer references
//! shared, on the real local stack (distribution registry → SeaweedFS with Object Lock). Then
//! 1 % of the images change and the nightly run goes again.
//!
//! The source is a generic registry (distribution): it lists through `_catalog` + tags, which
//! costs one HEAD per tag, the same for every run; ECR through moto would list through
//! DescribeImages instead, but the data path is the same. Both the registry and S3 sit behind
//! the request-counting proxy (`ecr_vault_testkit::faultproxy`), so the traffic figures come
//! from the wire, not from the product's own report.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ecr_vault_engine::{
    BackupOptions, BackupReport, FilterSpec, Filters, Mapping, NoProgress, RestoreRequest,
    SnapshotSel, Source, backup, restore,
};
use ecr_vault_registry::{ClientOptions, Credentials, RegistryClient, StaticCredentials};
use ecr_vault_testkit::fixtures::{self, Blob, Generated, ImageBuilder};
use ecr_vault_testkit::s3::s3_client;
use ecr_vault_testkit::{Fault, FaultProxy, Registry, Rule, S3, unique_name};
use ecr_vault_tests::{lock, only_ns, registry_client};
use ecr_vault_vault::{Vault, VaultLocation, VaultOptions};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

const REPOS: usize = 100;
const PER_REPO: usize = 10;
const IMAGES: usize = REPOS * PER_REPO;
/// Each image: its own config, 3 layers of its own, and 4 layers from a shared pool: 8 blob
/// references, 4 of them shared (50 %); 1,000 configs + 3,000 own layers + 1,000 pooled
/// layers = 5,000 distinct blobs.
const OWN_LAYERS: usize = 3;
const SHARED_PER_IMAGE: usize = 4;
const POOL: usize = 1_000;
/// One image in every tenth repository changes: 1 %.
const CHANGED_EVERY: usize = 10;

fn repo_name(ns: &str, r: usize) -> String {
    format!("{ns}/svc{r:03}")
}

fn tag_name(k: usize) -> String {
    format!("r{k}")
}

fn own_sizes(n: usize, extra: bool) -> Vec<u64> {
    let mut v: Vec<u64> = (0..OWN_LAYERS)
        .map(|i| 600 + ((n * 7 + i * 131) % 900) as u64)
        .collect();
    if extra {
        v.push(777 + (n % 100) as u64);
    }
    v
}

fn build(n: usize, pool: &[Blob], extra: bool) -> Generated {
    let mut b = ImageBuilder::oci(10_000 + n as u64).layers(&own_sizes(n, extra));
    for m in 0..SHARED_PER_IMAGE {
        b = b.shared_layer(pool[(n * SHARED_PER_IMAGE + m) % POOL].clone());
    }
    b.build().unwrap()
}

/// Pushes `(repo, tag, image)`s through the registry HTTP API, 16 at a time.
async fn push_all(reg: &Registry, items: &[(String, String, Generated)]) {
    futures::stream::iter(items)
        .map(|(repo, tag, g)| async move {
            g.push(reg, repo, &[tag.as_str()]).await.unwrap();
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

fn opts(ns: &str) -> BackupOptions {
    BackupOptions {
        filters: only_ns(ns),
        image_concurrency: 16,
        blob_concurrency: 16,
        trigger: "scheduled".into(),
        // distribution 2.8 has no referrers API; the fallback lookup is exercised elsewhere.
        referrers: false,
        ..BackupOptions::default()
    }
}

/// The key a request through the S3 proxy touched, relative to the bucket (`None` for
/// bucket-level requests such as a listing).
fn s3_key<'a>(bucket: &str, path: &'a str) -> Option<&'a str> {
    path.strip_prefix('/')?
        .strip_prefix(bucket)?
        .strip_prefix('/')
        .filter(|k| !k.is_empty())
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn summary(r: &BackupReport) -> String {
    let c = &r.counts;
    format!(
        "{} images ({} copied, {} unchanged, {} failed), {} blobs written, {} existing, {} bytes, {} lock extensions, {} ms",
        c.images,
        c.images_copied,
        c.images_unchanged,
        c.images_failed,
        c.blobs_written,
        c.blobs_existing,
        c.bytes_written,
        c.lock_extensions,
        r.duration_ms
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_percent_change_over_a_thousand_images_moves_only_the_new_blobs_and_restores_exactly()
{
    let t0 = Instant::now();
    let (source_reg, s3) = tokio::join!(Registry::start(), S3::start());
    let (source_reg, s3) = (source_reg.unwrap(), s3.unwrap());
    let ns = unique_name("scale");

    // 1. Generate and push.
    let pool: Vec<Blob> = (0..POOL)
        .map(|j| fixtures::oci_layer(1_000_000 + j as u64, 500 + (j % 700) as u64))
        .collect();
    let mut current: BTreeMap<(usize, usize), Generated> = BTreeMap::new();
    let mut items = Vec::new();
    for r in 0..REPOS {
        for k in 0..PER_REPO {
            let g = build(r * PER_REPO + k, &pool, false);
            items.push((repo_name(&ns, r), tag_name(k), g.clone()));
            current.insert((r, k), g);
        }
    }
    let distinct: HashSet<String> = current
        .values()
        .flat_map(|g| g.blobs.iter().map(|b| b.digest.clone()))
        .collect();
    assert_eq!(
        distinct.len(),
        5_000,
        "the fixture has 5,000 distinct blobs"
    );
    push_all(&source_reg, &items).await;
    let pushed_at = t0.elapsed();

    // The product talks to both servers through counting proxies.
    let reg_proxy = FaultProxy::start(&source_reg.url()).await.unwrap();
    let s3_proxy = FaultProxy::start(&s3.endpoint()).await.unwrap();
    let blob_gets =
        reg_proxy.add_rule(Rule::new("/v2/*/blobs/sha256:*", Fault::Observe).method("GET"));
    let bucket = unique_name("vault");
    s3.create_locked_bucket(&bucket).await.unwrap();
    let vault = Vault::new(
        s3_client(&s3_proxy.url(), &s3.access_key, &s3.secret_key),
        VaultLocation::parse(&format!("s3://{bucket}")).unwrap(),
        VaultOptions {
            lock: lock(3),
            part_size: 5 * 1024 * 1024,
            parts_in_flight: 4,
            blob_storage_class: None,
        },
    )
    .unwrap();
    let (user, password) = source_reg.credentials().unwrap();
    let source = Source::Registry {
        registry: RegistryClient::new(
            &reg_proxy.url(),
            Arc::new(StaticCredentials(Some(Credentials::new(user, password)))),
            ClientOptions::default(),
        )
        .unwrap(),
    };

    // 2. The first run captures everything.
    let first = backup(&source, &vault, &opts(&ns), Arc::new(NoProgress))
        .await
        .unwrap();
    eprintln!("first run: {}", summary(&first));
    assert!(first.complete, "{:#?}", first.failures);
    assert_eq!(first.counts.images_copied, IMAGES as u64);
    assert_eq!(first.counts.blobs_written, 5_000);
    let first_at = t0.elapsed();

    // 3. 1 %: one image in every tenth repository gets a new layer (so a new config and a new
    //    manifest digest) under the same tag.
    let mut changed = Vec::new();
    let mut new_blobs: BTreeMap<String, u64> = BTreeMap::new();
    for r in (0..REPOS).step_by(CHANGED_EVERY) {
        let g = build(r * PER_REPO, &pool, true);
        for b in &g.blobs {
            if !distinct.contains(&b.digest) {
                new_blobs.insert(b.digest.clone(), b.size);
            }
        }
        changed.push((repo_name(&ns, r), tag_name(0), g.clone()));
        current.insert((r, 0), g);
    }
    assert_eq!(
        new_blobs.len(),
        2 * changed.len(),
        "a new layer and a new config each"
    );
    push_all(&source_reg, &changed).await;
    reg_proxy.reset_counts();
    s3_proxy.reset_counts();
    let blob_gets_before = reg_proxy.rule_stats(blob_gets);

    // 4. The second run.
    let second = backup(&source, &vault, &opts(&ns), Arc::new(NoProgress))
        .await
        .unwrap();
    eprintln!("second run: {}", summary(&second));
    assert!(second.complete, "{:#?}", second.failures);
    let c = &second.counts;
    assert_eq!(c.images, IMAGES as u64);
    assert_eq!(c.images_copied, changed.len() as u64);
    assert_eq!(c.images_unchanged, (IMAGES - changed.len()) as u64);

    // Only the changed images' new blobs moved, by the report...
    let manifest_bytes: u64 = changed.iter().map(|(_, _, g)| g.size()).sum();
    let new_bytes: u64 = new_blobs.values().sum();
    assert_eq!(c.blobs_written, new_blobs.len() as u64);
    assert_eq!(c.bytes_written, new_bytes + manifest_bytes);
    // ...and by the wire: the registry served exactly those blobs, and those bytes.
    let fetched: BTreeSet<String> = reg_proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.class == "registry-blob")
        .filter_map(|r| r.path.rsplit('/').next().map(str::to_owned))
        .collect();
    assert_eq!(
        fetched,
        new_blobs.keys().cloned().collect::<BTreeSet<_>>(),
        "registry blob GETs in the second run"
    );
    let blob_stats = reg_proxy.rule_stats(blob_gets);
    assert_eq!(
        blob_stats.response_bytes - blob_gets_before.response_bytes,
        new_bytes,
        "blob bytes served by the registry"
    );
    let manifest_gets = reg_proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.class == "registry-manifest" && r.status == Some(200))
        .count();
    assert_eq!(
        manifest_gets,
        changed.len(),
        "manifest GETs: the changed images only"
    );

    // S3: requests on objects of the changed images' closures are the copy itself; everything
    // else is the run's overhead, bounded by one request per unchanged image plus one per
    // repository.
    let mut changed_keys: HashSet<String> = HashSet::new();
    for (_, _, g) in &changed {
        changed_keys.insert(format!("blobs/sha256/{}", hex_of(&g.digest)));
        for b in &g.blobs {
            changed_keys.insert(format!("blobs/sha256/{}", hex_of(&b.digest)));
        }
    }
    let s3_requests = s3_proxy.requests();
    let overhead: Vec<_> = s3_requests
        .iter()
        .filter(|r| s3_key(&bucket, &r.path).is_none_or(|k| !changed_keys.contains(k)))
        .collect();
    let unchanged = IMAGES - changed.len();
    eprintln!(
        "second run S3 requests: {} total, {} outside the changed closures: {:?}",
        s3_requests.len(),
        overhead.len(),
        s3_proxy.counts()
    );
    assert!(
        overhead.len() <= unchanged + REPOS,
        "{} S3 requests outside the changed images' closures; allowed {}",
        overhead.len(),
        unchanged + REPOS
    );
    let per_image_closure = 1 + 1 + OWN_LAYERS + 1 + SHARED_PER_IMAGE; // manifest, config, layers
    assert!(
        s3_requests.len() <= unchanged + REPOS + changed.len() * per_image_closure * 2,
        "{} S3 requests in total",
        s3_requests.len()
    );
    let second_at = t0.elapsed();

    // 5. The new snapshot is complete: read it with plain S3 calls, not the vault crate.
    let raw = s3.client();
    let key = second.snapshot_key.clone().unwrap();
    let doc = raw
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let index: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let recorded: BTreeMap<String, String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = current
        .iter()
        .map(|((r, k), g)| {
            (
                format!("{}:{}", repo_name(&ns, *r), tag_name(*k)),
                g.digest.clone(),
            )
        })
        .collect();
    assert_eq!(
        recorded, expected,
        "the second snapshot names every current image"
    );
    let mut in_vault = HashSet::new();
    let mut pages = raw
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("blobs/sha256/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            in_vault.insert(
                o.key()
                    .unwrap()
                    .trim_start_matches("blobs/sha256/")
                    .to_owned(),
            );
        }
    }
    for g in current.values() {
        assert!(
            in_vault.contains(hex_of(&g.digest)),
            "manifest {}",
            g.digest
        );
        for b in &g.blobs {
            assert!(in_vault.contains(hex_of(&b.digest)), "blob {}", b.digest);
        }
    }

    // 6. A rerun with no change moves nothing and touches neither blobs nor manifests.
    reg_proxy.reset_counts();
    s3_proxy.reset_counts();
    let third = backup(&source, &vault, &opts(&ns), Arc::new(NoProgress))
        .await
        .unwrap();
    eprintln!(
        "no-change rerun: {}; S3 {:?}; registry {:?}",
        summary(&third),
        s3_proxy.counts(),
        reg_proxy.counts()
    );
    assert!(third.complete);
    assert_eq!(
        (third.counts.blobs_written, third.counts.bytes_written),
        (0, 0)
    );
    assert_eq!(third.counts.images_unchanged, IMAGES as u64);
    let blob_requests = s3_proxy
        .requests()
        .iter()
        .filter(|r| s3_key(&bucket, &r.path).is_some_and(|k| k.starts_with("blobs/")))
        .count();
    assert_eq!(
        blob_requests, 0,
        "no per-image S3 request when the recorded locks suffice"
    );
    assert_eq!(
        reg_proxy
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.class == "registry-blob")
            .count(),
        0
    );

    // 7. Restore the changed repositories (100 images, the changed ones among them) from the
    //    second snapshot into a fresh registry, and judge with plain registry HTTP calls.
    let fresh = Registry::start().await.unwrap();
    let target = Source::Registry {
        registry: registry_client(&fresh).unwrap(),
    };
    let restored_repos: Vec<String> = changed.iter().map(|(r, _, _)| r.clone()).collect();
    let req = RestoreRequest {
        snapshot: SnapshotSel::Id(second.snapshot.clone().unwrap()),
        filters: Filters::new(FilterSpec {
            repositories: restored_repos.clone(),
            ..Default::default()
        })
        .unwrap(),
        digests: Vec::new(),
        mapping: Mapping::default(),
        dry_run: false,
        concurrency: 8,
    };
    let r = restore(&vault, &target, &req, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    let checks: Vec<(String, String, Generated)> = current
        .iter()
        .filter(|((r, _), _)| r % CHANGED_EVERY == 0)
        .map(|((r, k), g)| (repo_name(&ns, *r), tag_name(*k), g.clone()))
        .collect();
    assert_eq!(checks.len(), restored_repos.len() * PER_REPO);
    futures::stream::iter(&checks)
        .map(|(repo, tag, g)| {
            let fresh = &fresh;
            async move {
                let (bytes, _) = fresh.get_manifest(repo, tag).await.unwrap();
                assert_eq!(bytes, g.manifest, "{repo}:{tag} manifest bytes");
                for b in &g.blobs {
                    let data = fresh.get_blob(repo, &b.digest).await.unwrap();
                    let got = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
                    assert_eq!(got, b.digest, "{repo}:{tag} blob");
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "timings: push {:?}, first backup {:?}, second backup {:?}, rerun + restore + checks {:?}",
        pushed_at,
        first_at - pushed_at,
        second_at - first_at,
        t0.elapsed() - second_at
    );
}
