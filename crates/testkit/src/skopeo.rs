//! skopeo, as an independent judge of what a registry holds and as the stock tool for the
//! break-glass path (OCI layout → registry). Always plain HTTP to loopback
//! (`--tls-verify=false`) and `--insecure-policy` (no signature policy in tests).

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;

use crate::paths::find_tool;
use crate::registry::{Registry, sha256_digest};

/// Runs skopeo with `args`, returning stdout; a failure includes stderr.
pub async fn run(args: &[&str]) -> Result<Vec<u8>> {
    let skopeo = find_tool(&["skopeo"])?;
    let out = tokio::process::Command::new(&skopeo)
        .args(args)
        .output()
        .await
        .context("running skopeo")?;
    ensure!(
        out.status.success(),
        "skopeo {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

fn creds_arg(flag: &str, creds: Option<(&str, &str)>) -> Vec<String> {
    match creds {
        Some((u, p)) => vec![flag.to_string(), format!("{u}:{p}")],
        None => Vec::new(),
    }
}

/// `skopeo copy --preserve-digests` from `src` to `dst` (full transport references, e.g.
/// `oci:/dir:ref`, `docker://127.0.0.1:5000/repo:tag`), with `--multi-arch all` when `all`.
pub async fn copy(
    src: &str,
    dst: &str,
    src_creds: Option<(&str, &str)>,
    dst_creds: Option<(&str, &str)>,
    all: bool,
) -> Result<()> {
    let mut args: Vec<String> = vec![
        "copy".into(),
        "--insecure-policy".into(),
        "--quiet".into(),
        "--preserve-digests".into(),
        "--src-tls-verify=false".into(),
        "--dest-tls-verify=false".into(),
    ];
    if all {
        args.push("--multi-arch=all".into());
    }
    args.extend(creds_arg("--src-creds", src_creds));
    args.extend(creds_arg("--dest-creds", dst_creds));
    args.push(src.into());
    args.push(dst.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args).await?;
    Ok(())
}

/// The raw manifest bytes skopeo reads for `reference` (`repo:tag` or `repo@digest`) in
/// `registry`.
pub async fn skopeo_raw_manifest(registry: &Registry, reference: &str) -> Result<Bytes> {
    let image = format!("docker://{}/{reference}", registry.host());
    let mut args: Vec<String> = vec![
        "inspect".into(),
        "--raw".into(),
        "--tls-verify=false".into(),
    ];
    args.extend(creds_arg("--creds", registry.credentials()));
    args.push(image);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(Bytes::from(run(&args).await?))
}

/// The manifest digest of `reference` as skopeo sees it: sha256 of `skopeo inspect --raw`
/// (exact for indexes too, unlike `{{.Digest}}` of a platform-resolved inspect).
pub async fn skopeo_digest(registry: &Registry, reference: &str) -> Result<String> {
    Ok(sha256_digest(
        &skopeo_raw_manifest(registry, reference).await?,
    ))
}

/// Copies `reference` from `registry` into an OCI layout at `dir` (ref name `ref_name`), all
/// platforms, digests preserved. OCI media types only: skopeo 1.9 cannot write a Docker
/// schema 2 manifest into an OCI layout without converting it.
pub async fn copy_to_oci_layout(
    registry: &Registry,
    reference: &str,
    dir: &std::path::Path,
    ref_name: &str,
) -> Result<()> {
    let src = format!("docker://{}/{reference}", registry.host());
    let dst = format!("oci:{}:{ref_name}", dir.display());
    copy(&src, &dst, registry.credentials(), None, true).await
}

/// Copies an OCI layout image (`dir`, `ref_name`) into `registry` as `reference`
/// (`repo:tag`): the break-glass restore path with a stock tool.
pub async fn copy_from_oci_layout(
    dir: &std::path::Path,
    ref_name: &str,
    registry: &Registry,
    reference: &str,
) -> Result<()> {
    let src = format!("oci:{}:{ref_name}", dir.display());
    let dst = format!("docker://{}/{reference}", registry.host());
    copy(&src, &dst, None, registry.credentials(), true).await
}
