//! Manifests from a registry, or from the vault: parse or refuse, never panic. The digest is
//! the input's own, so parsing gets past the digest check to the JSON and descriptor rules.
#![no_main]

use bytes::Bytes;
use ecr_vault_registry::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, MAX_BLOB_BYTES, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
use ecr_vault_registry::{Digest, Manifest, ManifestKind};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_LIST),
    Some("text/plain; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the Content-Type header the registry would have sent.
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[sel as usize % CONTENT_TYPES.len()];
    let bytes = Bytes::copy_from_slice(body);
    let digest = Digest::of(&bytes);
    if let Ok(m) = Manifest::parse(&digest, content_type, bytes.clone()) {
        // Stored byte for byte, never re-serialized.
        assert_eq!(m.bytes, bytes);
        assert_eq!(m.digest, digest);
        assert!(bytes.len() as u64 <= MAX_MANIFEST_BYTES);
        for r in m.references.iter().chain(m.subject.iter()) {
            assert!(r.size <= MAX_BLOB_BYTES);
        }
        if m.kind == ManifestKind::Index {
            assert!(m.references.iter().all(|c| c.digest != digest));
        }
        assert_eq!(m.descriptor().size, body.len() as u64);
    }
    // The same bytes under another digest are always refused.
    let other = Digest::of(b"not the manifest");
    if other != digest {
        assert!(Manifest::parse(&other, content_type, bytes).is_err());
    }
});
