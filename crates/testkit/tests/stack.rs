//! The harness checks itself: every fixture lands in a real registry byte-exact (judged by
//! skopeo), ECR auth via moto works against the harness registry, and moto records images.

use base64::Engine as _;
use ecr_vault_testkit::fixtures::{self, Format, ImageBuilder, Platform, media};
use ecr_vault_testkit::registry::{ECR_USER, sha256_digest};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, skopeo_raw_manifest, unique_name};
use reqwest::Method;

async fn assert_in_registry(reg: &Registry, img: &fixtures::PushedImage) {
    for tag in &img.tags {
        let reference = format!("{}:{tag}", img.repo);
        assert_eq!(
            skopeo_digest(reg, &reference)
                .await
                .expect("registry check"),
            img.digest,
            "{reference}"
        );
        let (bytes, mt) = reg
            .get_manifest(&img.repo, tag)
            .await
            .expect("registry check");
        assert_eq!(bytes, img.manifest);
        assert_eq!(mt, img.media_type);
    }
    assert_eq!(
        skopeo_raw_manifest(reg, &img.by_digest())
            .await
            .expect("registry check"),
        img.manifest
    );
    for (digest, _) in &img.child_manifests {
        assert!(
            reg.manifest_exists(&img.repo, digest)
                .await
                .expect("registry check")
        );
    }
    for (digest, size) in &img.blobs {
        assert!(
            reg.blob_exists(&img.repo, digest)
                .await
                .expect("registry check"),
            "{digest}"
        );
        assert!(*size >= 2);
    }
}

#[tokio::test]
async fn fixtures_land_byte_exact() {
    let stack = Stack::shared().await.expect("stack");
    let reg = &stack.registry;
    let ns = unique_name("fx");

    // Multi-arch OCI index via skopeo.
    let idx = fixtures::multi_arch_oci(11, &[1000, 70_000], &[Platform::linux("s390x")]).unwrap();
    assert_eq!(idx.children.len(), 3);
    let pushed = idx
        .push_with_skopeo(reg, &format!("{ns}/multi"), &["v1", "v2"])
        .await
        .unwrap();
    assert_eq!(pushed.child_manifests.len(), 3);
    assert_eq!(pushed.blobs.len(), 9);
    assert_in_registry(reg, &pushed).await;

    // Docker schema 2 image and manifest list via HTTP.
    let docker = ImageBuilder::docker(12)
        .layers(&[5000, 6000])
        .build()
        .unwrap();
    assert_eq!(docker.media_type, media::DOCKER_MANIFEST);
    let pushed = docker
        .push(reg, &format!("{ns}/docker"), &["1"])
        .await
        .unwrap();
    assert_in_registry(reg, &pushed).await;
    let list = fixtures::docker_manifest_list(13, &[3000]).unwrap();
    let pushed = list
        .push(reg, &format!("{ns}/dlist"), &["1"])
        .await
        .unwrap();
    assert_eq!(pushed.media_type, media::DOCKER_LIST);
    assert_in_registry(reg, &pushed).await;

    // Nested repository, shared layer across repositories, referrer and cosign signature.
    let base = fixtures::oci_layer(99, 10_000);
    let a = ImageBuilder::oci(14)
        .shared_layer(base.clone())
        .layers(&[100])
        .build()
        .unwrap();
    let b = ImageBuilder::oci(15)
        .shared_layer(base.clone())
        .layers(&[200])
        .build()
        .unwrap();
    let api = format!("{ns}/team/app/api");
    let pa = a.push_with_skopeo(reg, &api, &["v1"]).await.unwrap();
    let pb = b
        .push(reg, &format!("{ns}/team/app/web"), &["v1"])
        .await
        .unwrap();
    assert!(pa.blobs.iter().any(|(d, _)| *d == base.digest));
    assert!(pb.blobs.iter().any(|(d, _)| *d == base.digest));
    assert_in_registry(reg, &pa).await;
    assert_in_registry(reg, &pb).await;

    let sbom = fixtures::referrer(16, &a, media::SPDX_JSON).unwrap();
    let ps = sbom.push(reg, &api, &[]).await.unwrap();
    let (raw, _) = reg.get_manifest(&api, &ps.digest).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["subject"]["digest"], a.digest.as_str());
    assert_eq!(v["artifactType"], media::SPDX_JSON);

    let sig = fixtures::cosign_signature(17, &a.digest).unwrap();
    let tag = fixtures::cosign_tag(&a.digest);
    assert!(tag.starts_with("sha256-") && tag.ends_with(".sig"));
    let psig = sig.push(reg, &api, &[tag.as_str()]).await.unwrap();
    assert_in_registry(reg, &psig).await;
    let mut tags = reg.tags(&api).await.unwrap();
    tags.sort();
    assert_eq!(tags, vec![tag.clone(), "v1".to_string()]);

    // Many small layers.
    let many = fixtures::many_layers(18, 50, 512).unwrap();
    let pm = many
        .push_with_skopeo(reg, &format!("{ns}/many"), &["v1"])
        .await
        .unwrap();
    assert_eq!(pm.blobs.len(), 51);
    assert_in_registry(reg, &pm).await;

    // Delete wipes the manifest (and its tags).
    reg.delete_manifest(&pb.repo, &pb.digest).await.unwrap();
    assert!(!reg.manifest_exists(&pb.repo, &pb.digest).await.unwrap());
    assert!(!reg.manifest_exists(&pb.repo, "v1").await.unwrap());
}

#[test]
fn layers_are_exact_sized_gzip_and_deterministic() {
    for size in [
        23u64,
        24,
        100,
        65_535 + 23,
        65_535 + 28,
        65_535 * 3 + 40,
        1 << 20,
    ] {
        let l = fixtures::oci_layer(5, size);
        assert_eq!(l.size, size);
        assert_eq!(l.data.len() as u64, size);
        assert_eq!(&l.data[..2], &[0x1f, 0x8b]);
        assert_eq!(fixtures::oci_layer(5, size).digest, l.digest);
    }
    assert_ne!(
        fixtures::oci_layer(5, 1000).digest,
        fixtures::oci_layer(6, 1000).digest
    );
    // Same builder, same bytes; different format, different bytes.
    let a = ImageBuilder::oci(1).build().unwrap();
    let b = ImageBuilder::oci(1).build().unwrap();
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.digest, sha256_digest(&a.manifest));
    let idx = fixtures::index(Format::Oci, vec![a.clone()]).unwrap();
    assert_eq!(idx.closure_manifests().len(), 2);
}

#[tokio::test]
async fn streamed_layer_is_pushed_without_buffering() {
    let stack = Stack::shared().await.expect("stack");
    let size: u64 = std::env::var("ECR_VAULT_BIG_LAYER_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24 << 20);
    let repo = unique_name("big");
    let img = fixtures::push_big_image(&stack.registry, &repo, "v1", 21, size)
        .await
        .unwrap();
    let (layer_digest, layer_size) = img.blobs[1].clone();
    assert_eq!(layer_size, size);
    // Independent check: fetch and hash what the registry stored.
    let data = stack.registry.get_blob(&repo, &layer_digest).await.unwrap();
    assert_eq!(data.len() as u64, size);
    assert_eq!(sha256_digest(&data), layer_digest);
    // The streamed bytes equal the in-memory generator's.
    assert_eq!(fixtures::oci_layer(21, size).digest, layer_digest);
    assert_eq!(
        skopeo_digest(&stack.registry, &format!("{repo}:v1"))
            .await
            .unwrap(),
        img.digest
    );
}

/// The full-size variant (1 GiB): `cargo test -p ecr-vault-testkit -- --ignored`.
#[tokio::test]
#[ignore = "pushes 1 GiB"]
async fn streamed_layer_one_gib() {
    let stack = Stack::shared().await.expect("stack");
    let repo = unique_name("huge");
    let img = fixtures::push_big_image(&stack.registry, &repo, "v1", 22, 1 << 30)
        .await
        .unwrap();
    assert_eq!(img.blobs[1].1, 1 << 30);
    let resp = stack
        .registry
        .request(
            Method::HEAD,
            &format!("/v2/{repo}/blobs/{}", img.blobs[1].0),
        )
        .send()
        .await
        .unwrap();
    let len = resp.headers()[reqwest::header::CONTENT_LENGTH]
        .to_str()
        .unwrap();
    assert_eq!(len, (1u64 << 30).to_string());
}

#[tokio::test]
async fn ecr_auth_from_moto_works_on_the_registry() {
    let stack = Stack::shared().await.expect("stack");
    let ecr = stack.moto.ecr_client();
    let auth = ecr.get_authorization_token().send().await.unwrap();
    let data = &auth.authorization_data()[0];
    assert_eq!(
        data.proxy_endpoint(),
        Some("https://123456789012.dkr.ecr.us-east-1.amazonaws.com")
    );
    // moto's token is already expired (2015-01-01).
    assert!(data.expires_at().unwrap().secs() < 1_500_000_000);
    let token = base64::engine::general_purpose::STANDARD
        .decode(data.authorization_token().unwrap())
        .unwrap();
    let token = String::from_utf8(token).unwrap();
    let (user, password) = token.split_once(':').unwrap();
    assert_eq!(user, ECR_USER);
    assert_eq!(password, "123456789012-auth-token");
    let http = reqwest::Client::new();
    let ok = http
        .get(format!("{}/v2/", stack.registry.url()))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = http
        .get(format!("{}/v2/", stack.registry.url()))
        .basic_auth(user, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    // moto records an image with its tags; bytes come back unchanged.
    let repo = format!("{}/svc", unique_name("ecr"));
    let idx = fixtures::multi_arch_oci(31, &[100], &[]).unwrap();
    let pushed = idx
        .push(&stack.registry, &repo, &["v1", "prod"])
        .await
        .unwrap();
    stack.moto.register_pushed(&pushed).await.unwrap();
    let untagged = ImageBuilder::oci(32).build().unwrap();
    stack
        .moto
        .register_image(
            &repo,
            &untagged.manifest,
            &untagged.media_type,
            &untagged.digest,
            &[],
        )
        .await
        .unwrap();
    let described = ecr
        .describe_images()
        .repository_name(&repo)
        .send()
        .await
        .unwrap();
    let details = described.image_details();
    assert_eq!(details.len(), 2);
    let tagged = details
        .iter()
        .find(|d| d.image_digest() == Some(pushed.digest.as_str()))
        .unwrap();
    let mut tags = tagged.image_tags().to_vec();
    tags.sort();
    assert_eq!(tags, vec!["prod".to_string(), "v1".to_string()]);
    assert_eq!(tagged.image_manifest_media_type(), Some(media::OCI_INDEX));
    let got = ecr
        .batch_get_image()
        .repository_name(&repo)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(&pushed.digest)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.images()[0].image_manifest().unwrap().as_bytes(),
        &pushed.manifest[..]
    );
}

#[tokio::test]
async fn registries_without_auth_and_side_by_side() {
    let open = Registry::start_without_auth().await.unwrap();
    let second = Registry::start().await.unwrap();
    assert_ne!(open.port(), second.port());
    assert!(open.credentials().is_none());
    let resp = reqwest::get(format!("{}/v2/", open.url())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = reqwest::get(format!("{}/v2/", second.url())).await.unwrap();
    assert_eq!(resp.status(), 401);
    let img = ImageBuilder::oci(41).build().unwrap();
    let p = img.push_with_skopeo(&open, "a/b", &["t"]).await.unwrap();
    assert_eq!(skopeo_digest(&open, "a/b:t").await.unwrap(), p.digest);
    assert!(second.catalog().await.unwrap().is_empty());
    let log = open.process().unwrap().log_path().to_path_buf();
    let pid = open.process().unwrap().pid();
    drop(open);
    assert!(!log.exists(), "data dir removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process reaped on drop"
    );
}

#[tokio::test]
async fn stack_env_names_every_endpoint() {
    let stack = Stack::shared().await.expect("stack");
    let env: std::collections::HashMap<_, _> = stack.env().into_iter().collect();
    assert_eq!(env["AWS_ENDPOINT_URL_S3"], stack.s3.endpoint());
    assert_eq!(env["AWS_ENDPOINT_URL_ECR"], stack.moto.endpoint());
    assert_eq!(env["AWS_ACCESS_KEY_ID"], stack.s3.access_key);
    assert_eq!(env["ECR_VAULT_TEST_REGISTRY_URL"], stack.registry.url());
    let bucket = unique_name("vault");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
}
