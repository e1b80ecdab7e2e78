//! OCI Distribution client: references, digests, manifests, blobs, tags, referrers, auth.
