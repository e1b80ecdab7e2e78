//! The S3 vault: OCI image layout keys, verified streaming blob writes, Object Lock retention, snapshots.
