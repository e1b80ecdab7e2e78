//! Test harness for ecr-vault: starts the **real** local stack on 127.0.0.1 and generates test
//! images, so integration tests exercise real HTTP, real S3 semantics and real tools.
//!
//! Install the tools once with `bash scripts/setup.sh`. Tools are looked up in
//! `<repo>/.venv/bin` first, then `PATH` (see [`paths`]).
//!
//! | Server | What | Use |
//! |---|---|---|
//! | [`Registry`] | CNCF distribution 2.8 (`docker-registry`) | the source/target OCI registry (ECR data plane stand-in) |
//! | [`S3`] | SeaweedFS 4.48 `weed mini` | the vault: versioning, Object Lock, conditional writes |
//! | [`Moto`] | moto 5.2.5 `moto_server` | ECR control plane (and a strict S3 for the checksum rule) |
//! | [`Registry`] with [`RegistryOptions::token`] | `docker-registry` `auth: token` + [`TokenServer`] (in-process realm) | Docker token auth: short-lived RS256 JWTs with an `x5c` chain, per-repository scopes, GET and OAuth2 POST |
//! | [`Registry`] with [`RegistryOptions::s3`] | `docker-registry` S3 driver on [`S3`] | blob GETs answer 307 to presigned URLs, like ECR |
//! | [`ReferrersFront`] | hyper, in front of a [`Registry`] | the OCI 1.1 referrers API, which distribution 2.8 lacks |
//!
//! Every server gets free loopback ports, its own temp dir (data + `server.log`), readiness
//! polling against its real endpoint with a 60 s deadline (the error carries the log tail),
//! and is killed on drop. A watchdog also kills it if the test process dies without unwinding.
//!
//! # Gotchas found while building this
//! - **Registry auth for ECR tests.** moto's `GetAuthorizationToken` gives
//!   `AWS:123456789012-auth-token` and a `proxyEndpoint` of
//!   `https://123456789012.dkr.ecr.us-east-1.amazonaws.com` that does not exist. The harness
//!   registry accepts that user/password, so point the product's data plane at
//!   [`Registry::url`] (an endpoint override) and ECR auth works end to end. The token's
//!   `expiresAt` is 2015-01-01: already expired.
//! - **Registry deletes** are by digest only (`DELETE /v2/<repo>/manifests/<digest>`); the
//!   repository stays in `/v2/_catalog`. Distribution 2.8 has no referrers API: put a
//!   [`ReferrersFront`] in front of it, or use the tag schema (or ECR/moto).
//! - **Token auth**: distribution accepts a token up to 60 s after its `exp`, so a test of
//!   token renewal watches [`TokenServer::issued`], not the registry's 401s.
//! - **The Debian package** may run a system registry on :5000; the harness ignores it.
//! - **SeaweedFS** accepts Object Lock writes without any checksum; AWS and moto refuse them.
//!   Everything else we rely on (412 on `If-None-Match: *`, lock headers on HEAD, retention
//!   extension, SHA-256 multipart parts) behaves like AWS; details in [`s3`].
//! - **SeaweedFS ports**: `weed mini` needs ~10 ports and derives the admin gRPC port as
//!   admin port + 10000; all are set explicitly. Socket files go to the server's own TMPDIR.
//! - **moto** keeps state in memory: each [`Moto`] starts empty. The harness always passes
//!   `imageDigest` to `PutImage`. Its S3 wants `x-amz-sdk-checksum-algorithm` (or
//!   Content-MD5) on locked writes: `.checksum_sha256(v)` alone is refused, so set
//!   `.checksum_algorithm(Sha256)` too. Its `GetBucketVersioning` reply does not parse in the
//!   Rust SDK, and its lock enforcement is weak (see [`moto`]): test lock semantics on
//!   SeaweedFS.
//! - **skopeo 1.9** pushes byte-exact with `--preserve-digests`; it compresses non-gzip
//!   layers otherwise, which is why fixture layers are real (stored) gzip streams.
//! - **Servers see a scrubbed environment**: `AWS_*`, `REGISTRY_*`, `S3_*`, `MOTO_*`,
//!   `WEED_*` from the test process are removed.

//! # Typical use
//! ```ignore
//! use ecr_vault_testkit::{fixtures, skopeo_digest, unique_name, Stack};
//!
//! #[tokio::test]
//! async fn backup_then_restore() -> anyhow::Result<()> {
//!     let stack = Stack::shared().await?; // one stack per test binary
//!     let bucket = unique_name("vault");
//!     stack.s3.create_locked_bucket(&bucket).await?;
//!     let repo = format!("{}/app", unique_name("t"));
//!     let img = fixtures::multi_arch_oci(7, &[4096, 8192], &[])?
//!         .push_with_skopeo(&stack.registry, &repo, &["v1"])
//!         .await?;
//!     stack.moto.register_pushed(&img).await?; // ECR control plane knows it too
//!     // ... run the product (library, or the CLI with `stack.env()`) ...
//!     let target = ecr_vault_testkit::Registry::start().await?; // fresh restore target
//!     // ... restore into `target`, then judge with an independent tool:
//!     assert_eq!(skopeo_digest(&target, &format!("{repo}:v1")).await?, img.digest);
//!     Ok(())
//! }
//! ```
//!
//! Generated images: [`fixtures`] (OCI and Docker images and indexes, referrers, cosign
//! signature tags, many-layer images, shared layers, streamed multi-GiB layers). Checks that
//! do not go through product code: [`Registry`] raw HTTP calls and [`skopeo`].
//!
//! The `ecr-vault-stack` binary runs the same stack for demos and benchmarks
//! (`ecr-vault-stack up --dir DIR --seed`, then `. DIR/env`).

pub mod faultproxy;
pub mod fixtures;
pub mod iam;
pub mod moto;
pub mod paths;
pub mod process;
pub mod referrers;
pub mod registry;
pub mod s3;
pub mod skopeo;
pub mod stack;
pub mod token;

pub use faultproxy::{Fault, FaultProxy, Gate, Offset, Rule};
pub use fixtures::{Generated, ImageBuilder, Platform, PushedImage};
pub use moto::Moto;
pub use referrers::ReferrersFront;
pub use registry::{Registry, RegistryOptions, S3Storage};
pub use s3::S3;
pub use skopeo::{skopeo_digest, skopeo_raw_manifest};
pub use stack::{Stack, unique_name};
pub use token::TokenServer;
