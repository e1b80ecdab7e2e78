//! Backup and restore against the registries people use, not just htpasswd on local disk:
//! - Docker token auth (Docker Hub, GHCR, Harbor, Quay, GitLab): a Bearer challenge, JWTs from
//!   a realm scoped per repository and action, short-lived (the testkit's token server in
//!   front of the real `docker-registry`);
//! - S3-backed blob storage that answers blob GETs with 307 to a presigned URL (ECR, and
//!   distribution's S3 driver, here on the stack's SeaweedFS).
//!
//! Every round trip is judged by skopeo, not by our own client.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecr_vault_engine::{
    BackupOptions, FilterSpec, Filters, Mapping, NoProgress, RestoreReport, RestoreRequest,
    SnapshotSel, Source, backup, restore,
};
use ecr_vault_registry::{
    ClientOptions, Credentials, Digest, RegistryClient, RepoName, StaticCredentials,
};
use ecr_vault_testkit::faultproxy::RuleId;
use ecr_vault_testkit::faultproxy::poll_until;
use ecr_vault_testkit::fixtures::{self, ImageBuilder, PushedImage, multi_arch_oci};
use ecr_vault_testkit::{
    Fault, FaultProxy, Gate, ReferrersFront, Registry, RegistryOptions, Rule, S3Storage, Stack,
    skopeo_digest, unique_name,
};
use ecr_vault_tests::{lock, new_vault, only_ns, registry_client, small_parts};
use ecr_vault_vault::{Vault, VaultOptions};

fn vault_opts() -> VaultOptions {
    small_parts(lock(2))
}

fn request(ns: &str) -> RestoreRequest {
    RestoreRequest {
        snapshot: SnapshotSel::Latest,
        filters: only_ns(ns),
        digests: vec![],
        mapping: Mapping::default(),
        dry_run: false,
        // One image at a time, so the shared layer goes up once and every later image mounts it.
        concurrency: 1,
    }
}

async fn token_registry(lifetime: Duration, s3: Option<S3Storage>) -> Registry {
    Registry::start_with(RegistryOptions {
        token: Some(lifetime),
        s3,
        ..RegistryOptions::default()
    })
    .await
    .unwrap()
}

/// The stack's SeaweedFS behind a proxy that refuses what AWS S3 refuses and SeaweedFS lets
/// through: a presigned request (`X-Amz-Signature` in the query) that also carries an
/// `Authorization` header gets S3's 400 `InvalidArgument`. A client that forwarded its
/// registry credentials across the redirect fails here as it would against ECR's S3.
struct StrictS3 {
    proxy: FaultProxy,
    two_auths: RuleId,
    presigned_gets: RuleId,
}

async fn strict_s3(stack: &Stack) -> StrictS3 {
    let proxy = FaultProxy::start(&stack.s3.endpoint()).await.unwrap();
    let two_auths = proxy.add_rule(
        Rule::new(
            "/*",
            Fault::s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
                 Signature query string parameter or the Authorization header should be specified",
            ),
        )
        .query("X-Amz-Signature")
        .header("authorization"),
    );
    let presigned_gets = proxy.add_rule(
        Rule::new("/*", Fault::Observe)
            .method("GET")
            .query("X-Amz-Signature"),
    );
    StrictS3 {
        proxy,
        two_auths,
        presigned_gets,
    }
}

/// A bucket for a registry, reached through `s3`'s proxy.
async fn s3_storage(stack: &Stack, s3: &StrictS3) -> S3Storage {
    let mut storage = S3Storage::create(&stack.s3, &unique_name("registry"))
        .await
        .unwrap();
    storage.endpoint = s3.proxy.url();
    storage
}

/// The product's client for `r`, reached at `url` (the registry itself or a proxy in front).
fn client_at(r: &Registry, url: &str) -> RegistryClient {
    let creds = r.credentials().map(|(u, p)| Credentials::new(u, p));
    RegistryClient::new(
        url,
        Arc::new(StaticCredentials(creds)),
        ClientOptions::default(),
    )
    .unwrap()
}

/// Images in four repositories sharing one layer (and a config-free index), so a restore
/// mounts across repositories. One goes in with skopeo, which does its own token flow.
async fn push_sharing(reg: &Registry, ns: &str) -> Vec<PushedImage> {
    let shared = fixtures::oci_layer(900, 300_000);
    vec![
        ImageBuilder::oci(91)
            .layers(&[50_000])
            .shared_layer(shared.clone())
            .build()
            .unwrap()
            .push_with_skopeo(reg, &format!("{ns}/base"), &["v1"])
            .await
            .unwrap(),
        ImageBuilder::docker(92)
            .layers(&[20_000])
            .shared_layer(shared.clone())
            .build()
            .unwrap()
            .push(reg, &format!("{ns}/team/api"), &["1.0", "stable"])
            .await
            .unwrap(),
        ImageBuilder::oci(93)
            .shared_layer(shared)
            .build()
            .unwrap()
            .push(reg, &format!("{ns}/web"), &["x"])
            .await
            .unwrap(),
        multi_arch_oci(94, &[10_000], &[])
            .unwrap()
            .push(reg, &format!("{ns}/multi"), &["v1"])
            .await
            .unwrap(),
    ]
}

async fn back_up(stack: &Stack, source: &Source, ns: &str) -> Vault {
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let b = backup(
        source,
        &vault,
        &BackupOptions {
            filters: only_ns(ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(b.failures.is_empty(), "{:#?}", b.failures);
    assert!(b.complete);
    vault
}

async fn restore_into(vault: &Vault, target: &RegistryClient, ns: &str) -> RestoreReport {
    let target = Source::Registry {
        registry: target.clone(),
    };
    let r = restore(vault, &target, &request(ns), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    r
}

/// skopeo sees every tag of every image with the digest pushed at the start.
async fn assert_byte_exact(target: &Registry, pushed: &[PushedImage]) {
    for p in pushed {
        for t in &p.tags {
            let got = skopeo_digest(target, &format!("{}:{t}", p.repo))
                .await
                .unwrap();
            assert_eq!(got, p.digest, "{}:{t}", p.repo);
        }
    }
}

fn assert_moved_nothing(again: &RestoreReport) {
    assert_eq!(again.bytes_pushed, 0);
    assert_eq!(again.blobs_pushed + again.blobs_mounted, 0);
    assert_eq!(again.manifests_pushed + again.tags_pushed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_registries_round_trip_byte_exact_with_cross_repository_mounts() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("tok");
    let (src, dst) = tokio::join!(
        token_registry(Duration::from_secs(60), None),
        token_registry(Duration::from_secs(60), None)
    );
    let pushed = push_sharing(&src, &ns).await;
    let vault = back_up(
        stack,
        &Source::Registry {
            registry: registry_client(&src).unwrap(),
        },
        &ns,
    )
    .await;

    let target = registry_client(&dst).unwrap();
    let r = restore_into(&vault, &target, &ns).await;
    // The shared layer goes up once and is mounted into the two other repositories.
    assert!(r.blobs_mounted >= 2, "{r:#?}");
    assert_byte_exact(&dst, &pushed).await;
    // Each mount was authorised by one token for push on the target and pull on the source.
    let mount_tokens = dst
        .token_server()
        .unwrap()
        .issued()
        .into_iter()
        .filter(|t| t.scopes.len() == 2 && t.scopes.iter().all(|s| s.contains(&ns)))
        .count();
    assert!(mount_tokens >= 2, "no token carried both mount scopes");

    let again = restore_into(&vault, &target, &ns).await;
    assert_moved_nothing(&again);
}

/// Docker Hub, GHCR and Quay do not serve `/v2/_catalog`: the token server here never grants
/// its scope. A glob cannot be expanded there, and the run says how to name repositories;
/// named repositories are backed up without the catalog and restore byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_without_a_catalog_is_backed_up_by_naming_its_repositories() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("nocat");
    let src = token_registry(Duration::from_secs(60), None).await;
    src.token_server().unwrap().deny_catalog();
    let pushed = push_sharing(&src, &ns).await;
    let source = Source::Registry {
        registry: registry_client(&src).unwrap(),
    };
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let run = |filters: Filters| {
        let (source, vault) = (&source, &vault);
        async move {
            let opts = BackupOptions {
                filters,
                ..Default::default()
            };
            backup(source, vault, &opts, Arc::new(NoProgress))
                .await
                .unwrap()
        }
    };

    let globbed = run(only_ns(&ns)).await;
    assert_eq!(globbed.counts.images_copied, 0);
    let why = &globbed
        .failures
        .first()
        .expect("a glob without a catalog passed")
        .error;
    assert!(why.contains("--repository NAME"), "{why}");

    // A named repository that does not exist is absent, not a failure, and the run says so.
    let absent = format!("{ns}/never-pushed");
    let mut names: Vec<String> = pushed.iter().map(|p| p.repo.clone()).collect();
    names.push(absent.clone());
    let named = Filters::new(FilterSpec {
        repositories: names,
        ..Default::default()
    })
    .unwrap();
    let b = run(named).await;
    assert!(b.failures.is_empty(), "{:#?}", b.failures);
    assert!(b.complete);
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains(&absent) && w.contains("not found")),
        "{:#?}",
        b.warnings
    );
    assert_eq!(b.counts.images_copied, pushed.len() as u64);
    let dst = Registry::start().await.unwrap();
    restore_into(&vault, &registry_client(&dst).unwrap(), &ns).await;
    assert_byte_exact(&dst, &pushed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backed_registries_redirect_blob_gets_and_round_trip_byte_exact() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("s3r");
    // Source like ECR (Basic auth, blobs redirected to S3); target with token auth as well.
    let s3 = strict_s3(stack).await;
    let (src_storage, dst_storage) = tokio::join!(s3_storage(stack, &s3), s3_storage(stack, &s3));
    let (src, dst) = tokio::join!(
        async {
            Registry::start_with(RegistryOptions {
                s3: Some(src_storage),
                ..RegistryOptions::default()
            })
            .await
            .unwrap()
        },
        token_registry(Duration::from_secs(60), Some(dst_storage))
    );
    let pushed = push_sharing(&src, &ns).await;

    // A blob GET answers 307 to a presigned URL on the S3 server, which serves the bytes to
    // a request without our credentials and (like AWS) refuses one that carries them.
    let (layer, size) = pushed[0].blobs.iter().max_by_key(|(_, s)| *s).unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let (user, password) = src.credentials().unwrap();
    let resp = no_redirects
        .get(format!("{}/v2/{}/blobs/{layer}", src.url(), pushed[0].repo))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 307);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&s3.proxy.url()) && location.contains("X-Amz-Signature"),
        "{location}"
    );
    let presigned = no_redirects.get(&location).send().await.unwrap();
    assert_eq!(presigned.status().as_u16(), 200);
    assert_eq!(presigned.bytes().await.unwrap().len() as u64, *size);
    let with_creds = no_redirects
        .get(&location)
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(with_creds.status().as_u16(), 400);
    assert_eq!(s3.proxy.rule_stats(s3.two_auths).triggered, 1);
    let redirected_before = s3.proxy.rule_stats(s3.presigned_gets).matches;

    // So a backup that reads every blob through those redirects proves the header stayed home.
    let vault = back_up(
        stack,
        &Source::Registry {
            registry: registry_client(&src).unwrap(),
        },
        &ns,
    )
    .await;
    let blobs: std::collections::BTreeSet<_> = pushed
        .iter()
        .flat_map(|p| p.blobs.iter().map(|b| &b.0))
        .collect();
    assert!(
        s3.proxy.rule_stats(s3.presigned_gets).matches - redirected_before >= blobs.len() as u64,
        "the backup did not read its blobs through the redirect"
    );
    assert_eq!(
        s3.proxy.rule_stats(s3.two_auths).triggered,
        1,
        "our client sent its Authorization header to S3"
    );
    let target = registry_client(&dst).unwrap();
    let r = restore_into(&vault, &target, &ns).await;
    assert!(r.blobs_mounted >= 2, "{r:#?}");
    assert_byte_exact(&dst, &pushed).await;

    // Restore back into a wiped S3-backed source: redirects on both sides, nothing left out.
    for p in &pushed {
        src.delete_manifest(&p.repo, &p.digest).await.unwrap();
    }
    let back = restore_into(&vault, &registry_client(&src).unwrap(), &ns).await;
    assert!(back.manifests_pushed > 0);
    assert_byte_exact(&src, &pushed).await;

    let again = restore_into(&vault, &target, &ns).await;
    assert_moved_nothing(&again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_expire_during_a_restore_are_renewed_before_they_are_used() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("ttl");
    let lifetime = Duration::from_secs(5);
    let (src, dst) = tokio::join!(
        token_registry(lifetime, None),
        token_registry(lifetime, None)
    );
    let pushed = push_sharing(&src, &ns).await;
    let vault = back_up(
        stack,
        &Source::Registry {
            registry: registry_client(&src).unwrap(),
        },
        &ns,
    )
    .await;

    // The restore goes through a proxy that holds the first tag PUT of the two-tag image
    // until every token the run holds has outlived its lifetime: its second tag, at least,
    // has to go up with a renewed token.
    let proxy = FaultProxy::start(&dst.url()).await.unwrap();
    let gate = Gate::new();
    let held = proxy.add_rule(
        Rule::new(
            &format!("/v2/{ns}/team/api/manifests/*"),
            Fault::Hold(gate.clone()),
        )
        .method("PUT")
        .nth(1),
    );
    let target = client_at(&dst, &proxy.url());
    let ts = dst.token_server().unwrap();
    let run = {
        let (vault, target, ns) = (vault, target.clone(), ns.clone());
        tokio::spawn(async move { restore_into(&vault, &target, &ns).await })
    };
    proxy
        .wait_triggered(held, 1, Duration::from_secs(60))
        .await
        .unwrap();
    let before = ts.issued();
    let newest = before.iter().map(|t| t.at).max().unwrap();
    poll_until(
        "every token issued so far has expired",
        lifetime * 3,
        || Instant::now() > newest + lifetime,
    )
    .await
    .unwrap();
    let released = Instant::now();
    gate.open();
    let r = run.await.unwrap();
    assert!(r.manifests_pushed > 0);
    assert_byte_exact(&dst, &pushed).await;

    // distribution accepts a token up to 60 s after `exp`, so the proof is at the realm:
    // scopes the run already had tokens for were asked for again after the hold.
    let renewed: Vec<_> = ts
        .issued()
        .into_iter()
        .filter(|t| t.at > released && before.iter().any(|b| b.scopes == t.scopes))
        .collect();
    assert!(!renewed.is_empty(), "no token was renewed after expiry");
    // And none of the registry's answers after the hold was a refusal.
    let refused_after = proxy
        .requests()
        .iter()
        .skip_while(|q| q.fault != Some(held))
        .filter(|q| q.status == Some(401))
        .count();
    assert_eq!(refused_after, 0, "a request went out with an expired token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_rate_limits_slow_the_backup_down_instead_of_failing_it() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("rl");
    let src = token_registry(Duration::from_secs(60), None).await;
    let pushed = push_sharing(&src, &ns).await;
    // Every GET of the shared layer is refused as Docker Hub refuses a pull over the limit,
    // more times in a row than a request has retry attempts.
    let proxy = FaultProxy::start(&src.url()).await.unwrap();
    let (layer, _) = pushed[0].blobs.iter().max_by_key(|(_, s)| *s).unwrap();
    let refusals = u64::from(ecr_vault_registry::Backoff::default().attempts) + 1;
    let limited = proxy.add_rule(
        Rule::new(
            &format!("/v2/*/blobs/{layer}"),
            Fault::Status {
                status: 429,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("retry-after".into(), "1".into()),
                    ("ratelimit-limit".into(), "100;w=21600".into()),
                    ("ratelimit-remaining".into(), "0;w=21600".into()),
                ],
                body: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#.into(),
            },
        )
        .method("GET")
        .times(refusals),
    );
    let source = client_at(&src, &proxy.url());
    let start = Instant::now();
    let vault = back_up(
        stack,
        &Source::Registry {
            registry: source.clone(),
        },
        &ns,
    )
    .await;
    assert_eq!(proxy.rule_stats(limited).triggered, refusals);
    assert!(
        start.elapsed() >= Duration::from_secs(refusals),
        "Retry-After was not honoured"
    );
    assert!(
        source
            .limits()
            .snapshot()
            .iter()
            .any(|(_, a, _, t)| *a == "blob-get" && *t >= 1),
        "the throttle did not cut blob concurrency"
    );
    // What was captured is whole: it restores byte-exact.
    let dst = token_registry(Duration::from_secs(60), None).await;
    restore_into(&vault, &registry_client(&dst).unwrap(), &ns).await;
    assert_byte_exact(&dst, &pushed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_the_login_may_not_push_to_fails_only_its_image() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("deny");
    let src = token_registry(Duration::from_secs(60), None).await;
    let pushed = push_sharing(&src, &ns).await;
    let vault = back_up(
        stack,
        &Source::Registry {
            registry: registry_client(&src).unwrap(),
        },
        &ns,
    )
    .await;
    // The realm leaves push on `<ns>/web` out of every token, as a registry does for a
    // repository this login may only read.
    let dst = token_registry(Duration::from_secs(60), None).await;
    dst.token_server()
        .unwrap()
        .deny(&format!("{ns}/web"), "push");
    let r = restore(
        &vault,
        &Source::Registry {
            registry: registry_client(&dst).unwrap(),
        },
        &request(&ns),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.failures.len(), 1, "{:#?}", r.failures);
    let failure = format!("{:?}", r.failures[0]);
    assert!(
        failure.contains(&format!("{ns}/web")) && failure.contains("401"),
        "{failure}"
    );
    let others: Vec<_> = pushed
        .iter()
        .filter(|p| p.repo != format!("{ns}/web"))
        .cloned()
        .collect();
    assert_byte_exact(&dst, &others).await;
    assert!(
        !dst.manifest_exists(&format!("{ns}/web"), "x")
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_found_through_the_oci_api_are_captured_and_restored_after_their_subject() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("refs");
    let repo = format!("{ns}/app");
    let (src_reg, dst_reg) = tokio::join!(Registry::start(), Registry::start());
    let (src_reg, dst_reg) = (src_reg.unwrap(), dst_reg.unwrap());
    let src = ReferrersFront::start(&src_reg.url()).await.unwrap();
    let dst = ReferrersFront::start(&dst_reg.url()).await.unwrap();
    let through_src = Registry::external(&src.url(), src_reg.credentials()).unwrap();
    let app = ImageBuilder::oci(95).layers(&[5000]).build().unwrap();
    let pushed = app.push(&through_src, &repo, &["v1"]).await.unwrap();
    // Pushed by digest only: no tag, no tag-schema index; the API is the only way to find it.
    let sbom = fixtures::referrer(96, &app, fixtures::media::SPDX_JSON).unwrap();
    sbom.push(&through_src, &repo, &[]).await.unwrap();

    let source = client_at(&src_reg, &src.url());
    let found = source
        .referrers(
            &RepoName::parse(&repo).unwrap(),
            &Digest::parse(&app.digest).unwrap(),
        )
        .await
        .unwrap();
    assert!(!found.via_tag_schema);
    assert_eq!(found.manifests.len(), 1);
    assert_eq!(found.manifests[0].digest.to_string(), sbom.digest);

    let vault = back_up(stack, &Source::Registry { registry: source }, &ns).await;
    let target = client_at(&dst_reg, &dst.url());
    let r = restore_into(&vault, &target, &ns).await;
    assert_eq!(r.manifests_pushed, 2, "{r:#?}");
    assert_byte_exact(&dst_reg, &[pushed]).await;
    assert_eq!(
        skopeo_digest(&dst_reg, &format!("{repo}@{}", sbom.digest))
            .await
            .unwrap(),
        sbom.digest
    );
    // The target's referrers API names it: it went up after its subject, as a referrer.
    let listed = target
        .referrers(
            &RepoName::parse(&repo).unwrap(),
            &Digest::parse(&app.digest).unwrap(),
        )
        .await
        .unwrap();
    assert!(!listed.via_tag_schema);
    assert_eq!(listed.manifests.len(), 1);
    assert_eq!(listed.manifests[0].digest.to_string(), sbom.digest);
}

/// A signature pushed onto an image that did not change since the last run: the image is
/// carried without a copy, and its new referrer is still found (through the referrers API),
/// captured, and restored after its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_on_an_unchanged_image_is_captured_by_the_next_run_and_restored() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("late-sig");
    let repo = format!("{ns}/app");
    let (src_reg, dst_reg) = tokio::join!(Registry::start(), Registry::start());
    let (src_reg, dst_reg) = (src_reg.unwrap(), dst_reg.unwrap());
    let src = ReferrersFront::start(&src_reg.url()).await.unwrap();
    let dst = ReferrersFront::start(&dst_reg.url()).await.unwrap();
    let through_src = Registry::external(&src.url(), src_reg.credentials()).unwrap();
    let app = ImageBuilder::oci(97).layers(&[5000]).build().unwrap();
    let pushed = app.push(&through_src, &repo, &["v1"]).await.unwrap();
    let source = Source::Registry {
        registry: client_at(&src_reg, &src.url()),
    };
    let vault = back_up(stack, &source, &ns).await;

    // Signed afterwards, by digest only: no tag moves, the image itself is unchanged.
    let sig =
        fixtures::referrer(98, &app, "application/vnd.dev.sigstore.bundle.v0.3+json").unwrap();
    sig.push(&through_src, &repo, &[]).await.unwrap();
    let second = backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(second.complete, "{second:#?}");
    assert_eq!(second.counts.images_unchanged, 1, "{second:#?}");
    let snap = vault
        .get_snapshot(second.snapshot.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        snap.images
            .iter()
            .any(|r| r.digest.to_string() == sig.digest
                && r.subject.as_ref().map(|s| s.to_string()) == Some(app.digest.clone())),
        "{:#?}",
        snap.images
    );

    let target = client_at(&dst_reg, &dst.url());
    restore_into(&vault, &target, &ns).await;
    assert_byte_exact(&dst_reg, &[pushed]).await;
    assert_eq!(
        skopeo_digest(&dst_reg, &format!("{repo}@{}", sig.digest))
            .await
            .unwrap(),
        sig.digest
    );
    let listed = target
        .referrers(
            &RepoName::parse(&repo).unwrap(),
            &Digest::parse(&app.digest).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(listed.manifests.len(), 1);
    assert_eq!(listed.manifests[0].digest.to_string(), sig.digest);
}
