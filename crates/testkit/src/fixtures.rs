//! Test images, generated in the test (no network), byte-exact and deterministic.
//!
//! - Layer bytes come from a seed (`rand::rngs::SmallRng`, fixed by `Cargo.lock`), wrapped as a
//!   valid gzip stream of *stored* deflate blocks, so tools that sniff compression (skopeo)
//!   see gzip and leave the blob alone, while generation costs no compression CPU. The content
//!   is random bytes, not a tar: no tool here unpacks layers. Requested sizes are exact (the
//!   minimum is [`MIN_LAYER_SIZE`] bytes).
//! - Manifests are serialized by the harness with sorted keys and pretty-printing, i.e. *not*
//!   the way `oci-spec` would re-serialize them: a product bug that re-serializes a manifest
//!   changes its digest and fails the test.
//! - [`Generated`] holds a manifest and everything it references in memory; `push` sends it
//!   over plain HTTP (exact bytes), `push_with_skopeo` writes an OCI layout and runs
//!   `skopeo copy --preserve-digests`. Both return a [`PushedImage`].
//! - [`push_streamed_layer`] pushes a layer of any size (GiBs) as one chunked PATCH that is
//!   generated and hashed while it streams: nothing is held on disk or in memory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::registry::{Registry, sha256_digest};

/// Media types used by the fixtures.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
    pub const SPDX_JSON: &str = "application/spdx+json";
}

/// gzip header (10) + trailer (8) + one stored-block header (5).
pub const MIN_LAYER_SIZE: u64 = 23;

const BLOCK: u64 = 65535;

/// Mixes a seed with an index, so related blobs (layer i of image s) differ.
pub fn mix_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` deterministic pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut buf);
    buf
}

/// Generates a gzip stream of exactly `size` bytes (stored deflate blocks of seeded random
/// data), piece by piece, tracking the uncompressed sha256 (the layer's diff_id).
pub struct LayerGenerator {
    rng: SmallRng,
    header_done: bool,
    blocks_left: u64,
    payload_left: u64,
    crc: crc32fast::Hasher,
    isize: u64,
    diff: Sha256,
    done: bool,
}

impl LayerGenerator {
    /// A generator for a layer of exactly `size` bytes (at least [`MIN_LAYER_SIZE`]).
    pub fn new(seed: u64, size: u64) -> Self {
        let size = size.max(MIN_LAYER_SIZE);
        let mut blocks = 1u64;
        loop {
            let payload = size - 18 - 5 * blocks;
            let need = payload.div_ceil(BLOCK).max(1);
            if need <= blocks {
                break;
            }
            blocks = need;
        }
        LayerGenerator {
            rng: SmallRng::seed_from_u64(seed),
            header_done: false,
            blocks_left: blocks,
            payload_left: size - 18 - 5 * blocks,
            crc: crc32fast::Hasher::new(),
            isize: 0,
            diff: Sha256::new(),
            done: false,
        }
    }

    /// Appends whole blocks to `out` until it holds at least `target` bytes or the stream
    /// ends. Returns false once everything has been produced.
    pub fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> bool {
        if self.done {
            return false;
        }
        if !self.header_done {
            // magic, CM=deflate, FLG=0, MTIME=0, XFL=0, OS=255 (unknown)
            out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
            self.header_done = true;
        }
        while self.blocks_left > 0 && out.len() < target {
            self.blocks_left -= 1;
            let len = self.payload_left.min(BLOCK);
            self.payload_left -= len;
            let len16 = len as u16;
            let last = u8::from(self.blocks_left == 0);
            out.push(last);
            out.extend_from_slice(&len16.to_le_bytes());
            out.extend_from_slice(&(!len16).to_le_bytes());
            let start = out.len();
            out.resize(start + len as usize, 0);
            let payload = &mut out[start..];
            self.rng.fill_bytes(payload);
            self.crc.update(payload);
            self.diff.update(&*payload);
            self.isize += len;
        }
        if self.blocks_left == 0 {
            let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(self.isize as u32).to_le_bytes());
            self.done = true;
        }
        true
    }

    /// `sha256:<hex>` of the uncompressed payload; valid once generation is complete.
    pub fn diff_id(&self) -> String {
        format!("sha256:{}", hex::encode(self.diff.clone().finalize()))
    }
}

/// A blob in memory with its descriptor fields.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub data: Bytes,
    /// sha256 of the uncompressed content, for layers.
    pub diff_id: Option<String>,
}

impl Blob {
    /// A blob from bytes.
    pub fn new(media_type: &str, data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            size: data.len() as u64,
            data,
            diff_id: None,
        }
    }

    /// The OCI descriptor of this blob.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A deterministic gzip layer of exactly `size` bytes (≥ [`MIN_LAYER_SIZE`]).
pub fn layer(seed: u64, size: u64, media_type: &str) -> Blob {
    let mut g = LayerGenerator::new(seed, size);
    let mut out = Vec::with_capacity(size.max(MIN_LAYER_SIZE) as usize);
    while g.fill(&mut out, usize::MAX) {}
    let mut b = Blob::new(media_type, out);
    b.diff_id = Some(g.diff_id());
    b
}

/// An OCI layer, see [`layer`].
pub fn oci_layer(seed: u64, size: u64) -> Blob {
    layer(seed, size, media::OCI_LAYER_GZIP)
}

/// os / architecture / variant of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(arch: &str) -> Self {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        }
    }

    /// `linux/arm64/v8`.
    pub fn linux_arm64() -> Self {
        Platform {
            variant: Some("v8".into()),
            ..Platform::linux("arm64")
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({"os": self.os, "architecture": self.architecture});
        if let Some(var) = &self.variant {
            v["variant"] = json!(var);
        }
        v
    }
}

/// Manifest flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

/// A generated manifest (image, index or artifact) with everything it references.
#[derive(Clone, Debug)]
pub struct Generated {
    pub media_type: String,
    /// The exact manifest bytes.
    pub manifest: Bytes,
    pub digest: String,
    /// Blobs this manifest references directly (config first, then layers); empty for an
    /// index.
    pub blobs: Vec<Blob>,
    /// Child manifests (for an index), in order.
    pub children: Vec<Generated>,
    /// Platform (images only), used when the image goes into an index.
    pub platform: Option<Platform>,
}

impl Generated {
    fn from_json(media_type: &str, v: &Value, blobs: Vec<Blob>) -> Result<Self> {
        let manifest = Bytes::from(pretty(v)?);
        Ok(Generated {
            media_type: media_type.to_string(),
            digest: sha256_digest(&manifest),
            manifest,
            blobs,
            children: Vec::new(),
            platform: None,
        })
    }

    /// Size of the manifest bytes.
    pub fn size(&self) -> u64 {
        self.manifest.len() as u64
    }

    /// The descriptor other manifests use to point at this one.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size()})
    }

    /// Every blob (config and layers) in the closure, children included, deduplicated, in
    /// first-seen order.
    pub fn closure_blobs(&self) -> Vec<&Blob> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        self.walk(&mut |g| {
            for b in &g.blobs {
                if seen.insert(b.digest.clone()) {
                    out.push(b);
                }
            }
        });
        out
    }

    /// Every manifest in the closure, children first, this one last.
    pub fn closure_manifests(&self) -> Vec<&Generated> {
        let mut out = Vec::new();
        self.walk(&mut |g| out.push(g));
        out
    }

    fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Generated)) {
        for c in &self.children {
            c.walk(f);
        }
        f(self);
    }

    fn pushed(&self, repo: &str, tags: &[&str]) -> PushedImage {
        PushedImage {
            repo: repo.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digest: self.digest.clone(),
            manifest: self.manifest.clone(),
            media_type: self.media_type.clone(),
            blobs: self
                .closure_blobs()
                .iter()
                .map(|b| (b.digest.clone(), b.size))
                .collect(),
            child_manifests: self
                .closure_manifests()
                .iter()
                .filter(|g| g.digest != self.digest)
                .map(|g| (g.digest.clone(), g.size()))
                .collect(),
        }
    }

    /// Pushes over plain HTTP, byte-exact: blobs, then child manifests by digest, then this
    /// manifest under each tag (or by digest if `tags` is empty).
    pub async fn push(
        &self,
        registry: &Registry,
        repo: &str,
        tags: &[&str],
    ) -> Result<PushedImage> {
        for b in self.closure_blobs() {
            registry.push_blob(repo, b.data.clone()).await?;
        }
        for m in self.closure_manifests() {
            if m.digest != self.digest {
                registry
                    .push_manifest(repo, &m.digest, &m.manifest, &m.media_type)
                    .await?;
            }
        }
        if tags.is_empty() {
            registry
                .push_manifest(repo, &self.digest, &self.manifest, &self.media_type)
                .await?;
        }
        for tag in tags {
            registry
                .push_manifest(repo, tag, &self.manifest, &self.media_type)
                .await?;
        }
        Ok(self.pushed(repo, tags))
    }

    /// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) whose
    /// `index.json` names this manifest `ref_name`.
    pub fn write_oci_layout(&self, dir: &Path, ref_name: &str) -> Result<()> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)?;
        let write = |digest: &str, data: &[u8]| -> Result<()> {
            let hex = digest.strip_prefix("sha256:").context("digest")?;
            std::fs::write(blobs.join(hex), data)?;
            Ok(())
        };
        for b in self.closure_blobs() {
            write(&b.digest, &b.data)?;
        }
        for m in self.closure_manifests() {
            write(&m.digest, &m.manifest)?;
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut desc = self.descriptor();
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
        let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [desc]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }

    /// Pushes with `skopeo copy --preserve-digests` (and `--multi-arch all` for an index) from
    /// an OCI layout written to a temp dir, once per tag. Checks that the registry then serves
    /// exactly these bytes. With no tags, falls back to [`Generated::push`] by digest.
    pub async fn push_with_skopeo(
        &self,
        registry: &Registry,
        repo: &str,
        tags: &[&str],
    ) -> Result<PushedImage> {
        if tags.is_empty() {
            return self.push(registry, repo, tags).await;
        }
        let dir = tempfile::Builder::new()
            .prefix("ecr-vault-oci-layout-")
            .tempdir()?;
        self.write_oci_layout(dir.path(), "image")?;
        for tag in tags {
            let src = format!("oci:{}:image", dir.path().display());
            let dst = format!("docker://{}/{repo}:{tag}", registry.host());
            crate::skopeo::copy(
                &src,
                &dst,
                None,
                registry.credentials(),
                !self.children.is_empty(),
            )
            .await?;
            let (got, _) = registry.get_manifest(repo, tag).await?;
            ensure!(
                got == self.manifest,
                "skopeo changed the manifest of {repo}:{tag}: pushed {}, registry has {}",
                self.digest,
                sha256_digest(&got)
            );
        }
        Ok(self.pushed(repo, tags))
    }
}

/// What a push left in a registry, for assertions.
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub repo: String,
    pub tags: Vec<String>,
    /// Digest of the top manifest.
    pub digest: String,
    /// Exact bytes of the top manifest.
    pub manifest: Bytes,
    pub media_type: String,
    /// (digest, size) of every config and layer in the closure (children included).
    pub blobs: Vec<(String, u64)>,
    /// (digest, size) of every child manifest (index members), not the top one.
    pub child_manifests: Vec<(String, u64)>,
}

impl PushedImage {
    /// `repo:tag` of the first tag, or `repo@digest` if untagged.
    pub fn reference(&self) -> String {
        match self.tags.first() {
            Some(t) => format!("{}:{t}", self.repo),
            None => format!("{}@{}", self.repo, self.digest),
        }
    }

    /// `repo@digest`.
    pub fn by_digest(&self) -> String {
        format!("{}@{}", self.repo, self.digest)
    }

    /// Sum of blob sizes plus manifest sizes: the bytes a full copy moves.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum::<u64>()
            + self.child_manifests.iter().map(|(_, s)| s).sum::<u64>()
            + self.manifest.len() as u64
    }
}

/// Builds single-platform images (OCI or Docker schema 2).
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    seed: u64,
    format: Format,
    layer_sizes: Vec<u64>,
    shared_layers: Vec<Blob>,
    platform: Platform,
    annotations: Vec<(String, String)>,
}

impl ImageBuilder {
    /// An OCI image (linux/amd64, one 4 KiB layer unless told otherwise).
    pub fn oci(seed: u64) -> Self {
        ImageBuilder {
            seed,
            format: Format::Oci,
            layer_sizes: Vec::new(),
            shared_layers: Vec::new(),
            platform: Platform::linux("amd64"),
            annotations: Vec::new(),
        }
    }

    /// A Docker schema 2 image.
    pub fn docker(seed: u64) -> Self {
        ImageBuilder {
            format: Format::Docker,
            ..Self::oci(seed)
        }
    }

    /// Generated layers of these exact sizes (after any shared layers).
    pub fn layers(mut self, sizes: &[u64]) -> Self {
        self.layer_sizes = sizes.to_vec();
        self
    }

    /// Prepends an existing layer (e.g. from another image), for cross-repository and
    /// cross-image dedup tests.
    pub fn shared_layer(mut self, layer: Blob) -> Self {
        self.shared_layers.push(layer);
        self
    }

    /// Sets the platform.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Adds a manifest annotation (OCI only).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// Generates config, layers and manifest.
    pub fn build(&self) -> Result<Generated> {
        let layer_type = match self.format {
            Format::Oci => media::OCI_LAYER_GZIP,
            Format::Docker => media::DOCKER_LAYER_GZIP,
        };
        let sizes: &[u64] = if self.layer_sizes.is_empty() && self.shared_layers.is_empty() {
            &[4096]
        } else {
            &self.layer_sizes
        };
        let mut layers: Vec<Blob> = self
            .shared_layers
            .iter()
            .map(|l| Blob {
                media_type: layer_type.to_string(),
                ..l.clone()
            })
            .collect();
        for (i, size) in sizes.iter().enumerate() {
            layers.push(layer(mix_seed(self.seed, i as u64 + 1), *size, layer_type));
        }
        build_image(
            self.seed,
            self.format,
            &self.platform,
            layers,
            &self.annotations,
        )
    }
}

/// Config + manifest for the given layers.
fn build_image(
    seed: u64,
    format: Format,
    platform: &Platform,
    layers: Vec<Blob>,
    annotations: &[(String, String)],
) -> Result<Generated> {
    let (manifest_type, config_type) = match format {
        Format::Oci => (media::OCI_MANIFEST, media::OCI_CONFIG),
        Format::Docker => (media::DOCKER_MANIFEST, media::DOCKER_CONFIG),
    };
    let diff_ids: Vec<Value> = layers
        .iter()
        .map(|l| json!(l.diff_id.clone().unwrap_or_else(|| l.digest.clone())))
        .collect();
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Labels": {"dev.ecr-vault.test.seed": seed.to_string()}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    let config = Blob::new(config_type, serde_json::to_vec(&config)?);
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    if !annotations.is_empty() {
        m["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let mut blobs = vec![config];
    blobs.extend(layers);
    let mut g = Generated::from_json(manifest_type, &m, blobs)?;
    g.platform = Some(platform.clone());
    Ok(g)
}

/// An index (OCI image index or Docker manifest list, by `format`) over `children`, each with
/// its platform.
pub fn index(format: Format, children: Vec<Generated>) -> Result<Generated> {
    let media_type = match format {
        Format::Oci => media::OCI_INDEX,
        Format::Docker => media::DOCKER_LIST,
    };
    let manifests = children
        .iter()
        .map(|c| {
            let mut d = c.descriptor();
            if let Some(p) = &c.platform {
                d["platform"] = p.json();
            }
            d
        })
        .collect::<Vec<_>>();
    let v = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    let mut g = Generated::from_json(media_type, &v, Vec::new())?;
    g.children = children;
    Ok(g)
}

/// A multi-arch OCI index: linux/amd64 and linux/arm64/v8 images (plus `extra` platforms),
/// each with `layer_sizes`.
pub fn multi_arch_oci(seed: u64, layer_sizes: &[u64], extra: &[Platform]) -> Result<Generated> {
    multi_arch(Format::Oci, seed, layer_sizes, extra)
}

/// A Docker manifest list over linux/amd64 and linux/arm64/v8 schema 2 images.
pub fn docker_manifest_list(seed: u64, layer_sizes: &[u64]) -> Result<Generated> {
    multi_arch(Format::Docker, seed, layer_sizes, &[])
}

fn multi_arch(format: Format, seed: u64, sizes: &[u64], extra: &[Platform]) -> Result<Generated> {
    let mut platforms = vec![Platform::linux("amd64"), Platform::linux_arm64()];
    platforms.extend_from_slice(extra);
    let children = platforms
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let b = match format {
                Format::Oci => ImageBuilder::oci(mix_seed(seed, 1000 + i as u64)),
                Format::Docker => ImageBuilder::docker(mix_seed(seed, 1000 + i as u64)),
            };
            b.layers(sizes).platform(p).build()
        })
        .collect::<Result<Vec<_>>>()?;
    index(format, children)
}

/// An image of `n` small layers of `size` bytes each.
pub fn many_layers(seed: u64, n: usize, size: u64) -> Result<Generated> {
    ImageBuilder::oci(seed).layers(&vec![size; n]).build()
}

/// The OCI 1.1 empty config descriptor's blob (`{}`).
pub fn empty_config() -> Blob {
    Blob::new(media::OCI_EMPTY, &b"{}"[..])
}

/// An OCI 1.1 artifact (image manifest with `artifactType` and `subject`) attached to
/// `subject`, e.g. an SBOM: empty config, one seeded payload layer of `payload_type`.
pub fn referrer(seed: u64, subject: &Generated, artifact_type: &str) -> Result<Generated> {
    let payload = Blob::new(
        artifact_type,
        serde_json::to_vec(&json!({
            "spdxVersion": "SPDX-2.3",
            "name": format!("sbom-{seed}"),
            "noise": hex::encode(random_bytes(seed, 32)),
        }))?,
    );
    let config = empty_config();
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.descriptor(),
        "layers": [payload.descriptor()],
        "subject": subject.descriptor(),
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    });
    Generated::from_json(media::OCI_MANIFEST, &v, vec![config, payload])
}

/// The cosign signature tag for a manifest digest: `sha256-<hex>.sig`.
pub fn cosign_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// A cosign-style signature manifest for `subject_digest` (push it under
/// [`cosign_tag`]): OCI manifest, small config, one simplesigning layer with a
/// `dev.cosignproject.cosign/signature` annotation.
pub fn cosign_signature(seed: u64, subject_digest: &str) -> Result<Generated> {
    use base64::Engine as _;
    let payload = Blob::new(
        media::COSIGN_SIMPLESIGNING,
        serde_json::to_vec(&json!({
            "critical": {
                "identity": {"docker-reference": "example/app"},
                "image": {"docker-manifest-digest": subject_digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))?,
    );
    let config = Blob::new(
        media::OCI_CONFIG,
        serde_json::to_vec(&json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [payload.digest]}
        }))?,
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(random_bytes(seed, 64));
    let mut layer_desc = payload.descriptor();
    layer_desc["annotations"] = json!({"dev.cosignproject.cosign/signature": sig});
    let v = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer_desc],
    });
    Generated::from_json(media::OCI_MANIFEST, &v, vec![config, payload])
}

/// Pushes a deterministic gzip layer of exactly `size` bytes as one chunked upload
/// (POST, one streaming PATCH, then `PUT ?digest=` with an empty body), generating and hashing
/// the bytes as they go: memory stays at one 1 MiB chunk whatever the size. Returns the layer
/// as a [`Blob`] with empty `data` (digest, size, diff_id set).
pub async fn push_streamed_layer(
    registry: &Registry,
    repo: &str,
    seed: u64,
    size: u64,
) -> Result<Blob> {
    const CHUNK: usize = 1 << 20;
    struct State {
        g: LayerGenerator,
        sha: Sha256,
        sent: u64,
    }
    let shared = Arc::new(Mutex::new(State {
        g: LayerGenerator::new(seed, size),
        sha: Sha256::new(),
        sent: 0,
    }));
    let stream_state = shared.clone();
    let stream = futures::stream::unfold(stream_state, |st| async move {
        let chunk = {
            let mut guard = match st.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let mut buf = Vec::with_capacity(CHUNK + 70_000);
            if !guard.g.fill(&mut buf, CHUNK) {
                return None;
            }
            guard.sha.update(&buf);
            guard.sent += buf.len() as u64;
            Bytes::from(buf)
        };
        Some((Ok::<_, std::io::Error>(chunk), st))
    });
    let url = registry.start_upload(repo).await?;
    let resp = registry
        .request(Method::PATCH, url.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .context("streaming PATCH")?;
    let status = resp.status();
    if status != StatusCode::ACCEPTED {
        bail!(
            "PATCH blob upload {repo}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .context("PATCH response without Location")?
        .to_str()?
        .to_string();
    let (digest, sent, diff_id) = {
        let st = match shared.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (
            format!("sha256:{}", hex::encode(st.sha.clone().finalize())),
            st.sent,
            st.g.diff_id(),
        )
    };
    ensure!(
        sent == size.max(MIN_LAYER_SIZE),
        "streamed {sent} bytes, wanted {size}"
    );
    let mut url = reqwest::Url::parse(&registry.url())?.join(&loc)?;
    url.query_pairs_mut().append_pair("digest", &digest);
    let resp = registry
        .request(Method::PUT, url.as_str())
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await?;
    let status = resp.status();
    if status != StatusCode::CREATED {
        bail!(
            "PUT blob upload {repo}@{digest}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(Blob {
        media_type: media::OCI_LAYER_GZIP.to_string(),
        digest,
        size: sent,
        data: Bytes::new(),
        diff_id: Some(diff_id),
    })
}

/// An OCI image with one big layer of `size` bytes, streamed (see [`push_streamed_layer`]),
/// plus its config and manifest, pushed under `tag`.
pub async fn push_big_image(
    registry: &Registry,
    repo: &str,
    tag: &str,
    seed: u64,
    size: u64,
) -> Result<PushedImage> {
    let big = push_streamed_layer(registry, repo, seed, size).await?;
    let g = build_image(
        seed,
        Format::Oci,
        &Platform::linux("amd64"),
        vec![big.clone()],
        &[],
    )?;
    // The layer is already there; push the config and the manifest.
    registry.push_blob(repo, g.blobs[0].data.clone()).await?;
    registry
        .push_manifest(repo, tag, &g.manifest, &g.media_type)
        .await?;
    Ok(g.pushed(repo, &[tag]))
}

fn pretty(v: &Value) -> Result<Vec<u8>> {
    // Three-space indentation, as Docker writes manifests; differs from any serde default.
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser)?;
    Ok(out)
}

/// A demo set for `ecr-vault-stack seed` and smoke tests: a multi-arch OCI index, a Docker
/// image, a nested repository `team/app/api`, an SBOM referrer and a cosign signature tag.
pub async fn push_demo_set(registry: &Registry) -> Result<Vec<PushedImage>> {
    let mut out = Vec::new();
    let index = multi_arch_oci(1, &[8192, 16384], &[])?;
    out.push(
        index
            .push_with_skopeo(registry, "demo/multiarch", &["v1", "latest"])
            .await?,
    );
    let docker = ImageBuilder::docker(2).layers(&[4096, 4096]).build()?;
    out.push(docker.push(registry, "demo/docker", &["1.0"]).await?);
    let api = ImageBuilder::oci(3).layers(&[2048]).build()?;
    out.push(
        api.push_with_skopeo(registry, "team/app/api", &["v1"])
            .await?,
    );
    let sbom = referrer(4, &api, media::SPDX_JSON)?;
    out.push(sbom.push(registry, "team/app/api", &[]).await?);
    let sig = cosign_signature(5, &api.digest)?;
    let tag = cosign_tag(&api.digest);
    out.push(sig.push(registry, "team/app/api", &[tag.as_str()]).await?);
    Ok(out)
}
