//! Manifests and indexes: kept as the registry's raw bytes, read through oci-spec.
//!
//! The vault stores and restores the exact bytes (re-serializing changes the digest), so parsing
//! here only extracts what the copy needs: the kind, the descriptors of everything the manifest
//! references, and its subject. Docker schema2 and OCI media types are handled alike; Docker
//! schema1 is refused with a clear error because it cannot be pulled by digest reliably.

use std::collections::HashMap;

use bytes::Bytes;
use oci_spec::image::{ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::RegistryError;

/// Manifests above this size are refused (the distribution spec's recommended limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest blob size a descriptor may declare: ECR's 52,000 MiB layer limit, with headroom.
/// Bigger (or "negative", i.e. wrapped) sizes are treated as hostile.
pub const MAX_BLOB_BYTES: u64 = 64 * 1024 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Every manifest type we can back up, for the `Accept` header.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Whether a manifest names other manifests (an index) or blobs (an image or artifact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    Image,
    Index,
}

/// Kind of a manifest media type, or `None` if it is not one we can copy.
pub fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// A platform, as recorded in an index descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A validated content descriptor: the digest parses, the size is within bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl Descriptor {
    fn from_oci(d: &oci_spec::image::Descriptor, what: &str) -> Result<Self, RegistryError> {
        let digest = Digest::parse(d.digest().as_ref())?;
        if d.size() > MAX_BLOB_BYTES {
            return Err(RegistryError::TooLarge {
                what: format!(
                    "descriptor {digest} in {what} (declared {} bytes)",
                    d.size()
                ),
                limit: MAX_BLOB_BYTES,
            });
        }
        Ok(Descriptor {
            media_type: d.media_type().to_string(),
            digest,
            size: d.size(),
            platform: d.platform().as_ref().map(|p| Platform {
                os: p.os().to_string(),
                architecture: p.architecture().to_string(),
                variant: p.variant().clone(),
            }),
            artifact_type: d.artifact_type().as_ref().map(|a| a.to_string()),
            urls: d.urls().clone().unwrap_or_default(),
            annotations: d.annotations().clone().unwrap_or_default(),
        })
    }

    /// Non-distributable ("foreign") layers may be absent from the registry by design.
    pub fn is_non_distributable(&self) -> bool {
        self.media_type.contains("nondistributable") || self.media_type.contains(".foreign.")
    }
}

/// A manifest exactly as the registry served it, plus what parsing found in it.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub kind: ManifestKind,
    pub bytes: Bytes,
    /// For an image: config first, then layers. For an index: the child manifests.
    pub references: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
}

impl Manifest {
    /// Checks `bytes` against `expected` (digest and size bound) and parses it. The
    /// `content_type` is the registry's header, used when the document omits `mediaType`.
    pub fn parse(
        expected: &Digest,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<Self, RegistryError> {
        let what = expected.to_string();
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge {
                what: format!("manifest {what}"),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let actual = Digest::of(&bytes);
        if &actual != expected {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {what}"),
                expected: what,
                actual: actual.to_string(),
            });
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            config: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Malformed {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        if probe.schema_version == Some(1) {
            return Err(RegistryError::UnsupportedMediaType {
                what: format!("manifest {what}"),
                media_type: DOCKER_SCHEMA1.to_owned(),
            });
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
            .filter(|c| kind_of(c).is_some());
        let media_type = match (probe.media_type, header) {
            (Some(m), _) => m,
            (None, Some(h)) => h,
            (None, None) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) if probe.config.is_some() => OCI_MANIFEST.to_owned(),
            (None, None) => {
                return Err(RegistryError::Malformed {
                    what,
                    reason: "neither mediaType nor manifests/config present".into(),
                });
            }
        };
        let Some(kind) = kind_of(&media_type) else {
            return Err(RegistryError::UnsupportedMediaType {
                what: format!("manifest {what}"),
                media_type,
            });
        };
        // oci-spec's own message is only "serde failed"; the reason is in its source.
        let malformed = |e: oci_spec::OciSpecError| RegistryError::Malformed {
            what: what.clone(),
            reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        };
        let (references, subject, artifact_type) = match kind {
            ManifestKind::Image => {
                let m = ImageManifest::from_reader(&bytes[..]).map_err(malformed)?;
                let mut refs = Vec::with_capacity(m.layers().len() + 1);
                refs.push(Descriptor::from_oci(m.config(), &what)?);
                for l in m.layers() {
                    refs.push(Descriptor::from_oci(l, &what)?);
                }
                let subject = m
                    .subject()
                    .as_ref()
                    .map(|s| Descriptor::from_oci(s, &what))
                    .transpose()?;
                let artifact_type = m
                    .artifact_type()
                    .as_ref()
                    .map(|a| a.to_string())
                    .or_else(|| Some(m.config().media_type().to_string()));
                (refs, subject, artifact_type)
            }
            ManifestKind::Index => {
                let ix = ImageIndex::from_reader(&bytes[..]).map_err(malformed)?;
                let refs = ix
                    .manifests()
                    .iter()
                    .map(|d| Descriptor::from_oci(d, &what))
                    .collect::<Result<Vec<_>, _>>()?;
                for child in &refs {
                    if &child.digest == expected {
                        return Err(RegistryError::Malformed {
                            what,
                            reason: "index lists itself".into(),
                        });
                    }
                    if kind_of(&child.media_type).is_none() {
                        return Err(RegistryError::UnsupportedMediaType {
                            what: format!("child {} of index {what}", child.digest),
                            media_type: child.media_type.clone(),
                        });
                    }
                }
                let subject = ix
                    .subject()
                    .as_ref()
                    .map(|s| Descriptor::from_oci(s, &what))
                    .transpose()?;
                (
                    refs,
                    subject,
                    ix.artifact_type().as_ref().map(|a| a.to_string()),
                )
            }
        };
        Ok(Manifest {
            digest: actual,
            media_type,
            kind,
            bytes,
            references,
            subject,
            artifact_type,
        })
    }

    /// A descriptor pointing at this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            platform: None,
            artifact_type: None,
            urls: Vec::new(),
            annotations: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: char) -> String {
        format!("sha256:{}", n.to_string().repeat(64))
    }

    fn parse(json: &str) -> Result<Manifest, RegistryError> {
        let bytes = Bytes::from(json.to_owned());
        Manifest::parse(&Digest::of(&bytes), None, bytes)
    }

    #[test]
    fn parses_docker_schema2_and_keeps_bytes() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{}"}}]}}"#,
            d('a'),
            d('b')
        );
        let m = parse(&json).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        assert_eq!(m.references.len(), 2);
        assert_eq!(&m.bytes[..], json.as_bytes());
    }

    #[test]
    fn parses_oci_index_without_media_type_field() {
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","size":3,"digest":"{}","platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            d('c')
        );
        let m = parse(&json).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(
            m.references[0].platform.as_ref().unwrap().architecture,
            "arm64"
        );
    }

    #[test]
    fn refuses_bad_manifests_with_clear_errors() {
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(
            parse(schema1),
            Err(RegistryError::UnsupportedMediaType { .. })
        ));
        let unknown = r#"{"schemaVersion":2,"mediaType":"application/x-weird","config":{}}"#;
        assert!(matches!(
            parse(unknown),
            Err(RegistryError::UnsupportedMediaType { .. })
        ));
        let neg = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","size":-1,"digest":"{}"}},"layers":[]}}"#,
            d('a')
        );
        assert!(matches!(parse(&neg), Err(RegistryError::Malformed { .. })));
        let huge = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","size":18446744073709551615,"digest":"{}"}},"layers":[]}}"#,
            d('a')
        );
        assert!(matches!(parse(&huge), Err(RegistryError::TooLarge { .. })));
        let sha512 = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","size":1,"digest":"sha512:{}"}},"layers":[]}}"#,
            "a".repeat(128)
        );
        assert!(parse(&sha512).is_err());
        assert!(matches!(
            parse("not json"),
            Err(RegistryError::Malformed { .. })
        ));
    }

    /// Found by the hostile-input corpus: oci-spec's own message for a descriptor digest it
    /// refuses is only "serde failed"; the error must say what was wrong.
    #[test]
    fn malformed_descriptors_say_why() {
        for digest in ["garbage", "sha256:../../../../etc/passwd"] {
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","size":1,"digest":"{digest}"}},"layers":[]}}"#
            );
            let e = parse(&json).unwrap_err().to_string();
            assert!(e.starts_with("malformed manifest"), "{e}");
            assert!(!e.ends_with("serde failed"), "{e}");
        }
    }

    #[test]
    fn refuses_wrong_digest_and_oversize() {
        let bytes = Bytes::from_static(b"{}");
        let wrong = Digest::of(b"other");
        assert!(matches!(
            Manifest::parse(&wrong, None, bytes),
            Err(RegistryError::DigestMismatch { .. })
        ));
        let big = Bytes::from(vec![b' '; MAX_MANIFEST_BYTES as usize + 1]);
        assert!(matches!(
            Manifest::parse(&Digest::of(&big), None, big),
            Err(RegistryError::TooLarge { .. })
        ));
    }
}
