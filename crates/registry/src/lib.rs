//! OCI Distribution client for ecr-vault: references, digests, manifests, blobs, tags,
//! referrers and auth, on reqwest and oci-spec.
//!
//! Manifests are kept as the registry's raw bytes and blobs as streams, so callers can move
//! content without re-serializing it or holding it whole (see docs/decisions/0001).

pub mod auth;
pub mod client;
pub mod digest;
pub mod error;
pub mod limit;
pub mod manifest;
pub mod reference;
pub mod retry;

pub use auth::{CredentialProvider, Credentials, StaticCredentials};
pub use client::{BlobStream, ClientOptions, ManifestHead, Referrers, RegistryClient, UploadStart};
pub use digest::{Digest, DigestWriter};
pub use error::{InvalidInput, RegistryError};
pub use limit::{Aimd, AimdConfig, AimdPermit, Limits};
pub use manifest::{Descriptor, Manifest, ManifestKind, Platform};
pub use reference::{ImageRef, Reference, RepoName, Tag};
pub use retry::Backoff;
