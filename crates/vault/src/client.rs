//! The S3 side of a vault built from configuration, so no other crate names the S3 SDK.

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::types::StorageClass;

use crate::error::VaultError;

/// The S3 client for the vault, from the shared AWS configuration (`&SdkConfig`).
/// Path-style addressing when an endpoint override is set (S3-compatible servers), and no
/// SDK-computed checksums: every write carries one we computed, so a write that forgot it
/// fails loudly under Object Lock instead of silently getting a trailer some servers refuse
/// (docs/decisions/0002).
pub fn s3_client<C>(sdk: C) -> aws_sdk_s3::Client
where
    aws_sdk_s3::config::Builder: From<C>,
{
    let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(custom_endpoint)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The storage class for blobs, from its name (any case; empty means the bucket's default).
/// Only classes that restore without a thaw are accepted.
pub fn blob_storage_class(name: Option<&str>) -> Result<Option<StorageClass>, VaultError> {
    let Some(s) = name.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match StorageClass::from(s.to_ascii_uppercase().as_str()) {
        sc @ (StorageClass::Standard
        | StorageClass::StandardIa
        | StorageClass::IntelligentTiering
        | StorageClass::GlacierIr) => Ok(Some(sc)),
        _ => Err(VaultError::Config(format!(
            "storage class {s:?} is not one that restores without a thaw \
             (STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR)"
        ))),
    }
}
