//! `ecr-vault`: back up ECR (or any OCI registry) into an Object Lock S3 vault, from a laptop
//! or CI, with the same engine the Lambda functions run.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ecr_vault_engine::{
    BackupOptions, FilterSpec, Filters, Mapping, Progress, RegistryConfig, RestoreRequest,
    SnapshotSel, VaultConfig, aws_config, open_source, open_vault, open_vault_at,
};
use ecr_vault_vault::{LockMode, LockPolicy};

mod progress;

#[derive(Parser)]
#[command(
    name = "ecr-vault",
    version,
    about = "Immutable, verified backups of container registries into S3 Object Lock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ECR_VAULT_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Back up every image the filters select into the vault and write a snapshot.
    Backup(BackupArgs),
    /// Show what the next backup would do: new, unchanged and gone images, bytes expected and
    /// lock extensions due. Reads the listing and the latest snapshot; writes nothing.
    Plan(PlanArgs),
    /// List the snapshots in a vault.
    Snapshots(SnapshotsArgs),
    /// Restore images from the vault into ECR or any OCI registry.
    Restore(RestoreArgs),
    /// Show a snapshot's contents, or the capture history of repository:tag.
    Show(ShowArgs),
    /// Check that snapshots are complete and locked; with --deep, re-hash every byte.
    Verify(VerifyArgs),
    /// Expire snapshots by policy and delete what no live snapshot references and no lock
    /// holds. A dry run unless --apply.
    Gc(GcArgs),
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    vault: VaultArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Snapshot id, or `latest`.
    #[arg(long)]
    snapshot: Option<String>,
    /// Restore each repository:tag as it was at this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    as_of: Option<String>,
    /// Only these image digests (repeatable).
    #[arg(long = "digest", value_name = "DIGEST")]
    digests: Vec<String>,
    /// Rename repositories: FROM=TO (FROM and everything under it), or PREFIX/=NEWPREFIX/.
    #[arg(long = "rename", value_name = "FROM=TO")]
    renames: Vec<String>,
    /// Rename tags: FROM=TO.
    #[arg(long = "retag", value_name = "FROM=TO")]
    retags: Vec<String>,
    /// Push manifests by digest only, no tags.
    #[arg(long)]
    digest_only: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Images restored at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// A snapshot id, `latest`, or repository:tag for its capture history.
    what: String,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Snapshot id or `latest`; default: every snapshot.
    #[arg(long)]
    snapshot: Option<String>,
    /// Re-hash every blob and report overwritten keys.
    #[arg(long)]
    deep: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args, Clone)]
struct RegistryArgs {
    /// `ecr` (listing through the ECR API) or a registry URL such as https://registry.example.
    #[arg(long, env = "ECR_VAULT_REGISTRY")]
    registry: String,
    /// For `--registry ecr`: registry endpoint to use instead of the one ECR reports.
    #[arg(long, env = "ECR_VAULT_REGISTRY_URL")]
    registry_url: Option<String>,
    /// For `--registry ecr`: the account (registry id), when not the caller's.
    #[arg(long, env = "ECR_VAULT_REGISTRY_ID")]
    registry_id: Option<String>,
    /// Username for a plain OCI registry.
    #[arg(long, env = "ECR_VAULT_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Password for a plain OCI registry (prefer the environment variable).
    #[arg(long, env = "ECR_VAULT_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl RegistryArgs {
    fn config(&self) -> RegistryConfig {
        let mut cfg = RegistryConfig::parse(
            &self.registry,
            self.registry_url.clone(),
            self.username.clone(),
            self.password.clone(),
        );
        if let RegistryConfig::Ecr { registry_id, .. } = &mut cfg {
            registry_id.clone_from(&self.registry_id);
        }
        cfg
    }
}

#[derive(Args, Clone)]
struct VaultArgs {
    /// The vault: s3://bucket[/prefix]
    #[arg(long, env = "ECR_VAULT_URI")]
    vault: String,
}

#[derive(Args, Clone)]
struct FilterArgs {
    /// Repository glob to include (repeatable; `*` stays in one path segment, `**` crosses).
    #[arg(long = "repository", value_name = "GLOB")]
    repositories: Vec<String>,
    /// Repository glob to exclude (repeatable).
    #[arg(long = "exclude-repository", value_name = "GLOB")]
    exclude_repositories: Vec<String>,
    /// Tag glob to include (repeatable). Without it untagged images are included too.
    #[arg(long = "tag", value_name = "GLOB")]
    tags: Vec<String>,
    /// Tag glob to exclude (repeatable).
    #[arg(long = "exclude-tag", value_name = "GLOB")]
    exclude_tags: Vec<String>,
}

impl FilterArgs {
    fn filters(&self) -> anyhow::Result<Filters> {
        Filters::new(FilterSpec {
            repositories: self.repositories.clone(),
            exclude_repositories: self.exclude_repositories.clone(),
            tags: self.tags.clone(),
            exclude_tags: self.exclude_tags.clone(),
        })
        .map_err(anyhow::Error::msg)
    }
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    vault: VaultArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Days every captured object stays locked.
    #[arg(long, default_value_t = 35, env = "ECR_VAULT_RETENTION_DAYS")]
    retention_days: u32,
    /// Extra days added when locking or extending, so most runs need no extension call.
    #[arg(long, default_value_t = 7, env = "ECR_VAULT_LOCK_SLACK_DAYS")]
    lock_slack_days: u32,
    /// COMPLIANCE (nobody can shorten) or GOVERNANCE (bypass permission can).
    #[arg(long, default_value = "compliance", env = "ECR_VAULT_LOCK_MODE")]
    lock_mode: LockMode,
    /// Images copied at once.
    #[arg(long, default_value_t = 4, env = "ECR_VAULT_IMAGE_CONCURRENCY")]
    image_concurrency: usize,
    /// Blob transfers at once.
    #[arg(long, default_value_t = 8)]
    blob_concurrency: usize,
    /// Multipart part size in MiB (also the largest single PUT).
    #[arg(long, default_value_t = 16, env = "ECR_VAULT_PART_SIZE_MIB")]
    part_size_mib: usize,
    /// Part buffers in memory at once; peak buffer memory is part size × this.
    #[arg(long, default_value_t = 6, env = "ECR_VAULT_PARTS_IN_FLIGHT")]
    parts_in_flight: usize,
    /// Storage class for blobs: STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR.
    #[arg(long, env = "ECR_VAULT_STORAGE_CLASS")]
    storage_class: Option<String>,
    /// Do not look up OCI referrers (signatures, SBOMs) of new images.
    #[arg(long)]
    no_referrers: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    vault: VaultArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Days the next snapshot's content must stay locked (as for `backup`).
    #[arg(long, default_value_t = 35, env = "ECR_VAULT_RETENTION_DAYS")]
    retention_days: u32,
    /// Extra days added when locking or extending (as for `backup`).
    #[arg(long, default_value_t = 7, env = "ECR_VAULT_LOCK_SLACK_DAYS")]
    lock_slack_days: u32,
    /// For a plain OCI registry: fetch the new images' manifests to estimate their bytes.
    /// (ECR reports image sizes in its listing, so this costs nothing extra there.)
    #[arg(long)]
    sizes: bool,
    /// Listing requests at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// List every image, not only the totals (text output).
    #[arg(long)]
    verbose: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args)]
struct SnapshotsArgs {
    #[command(flatten)]
    vault: VaultArgs,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Progress bars on an interactive terminal with text output; nothing otherwise.
fn progress_for(output: Output) -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() && output == Output::Text {
        Arc::new(progress::Bars::new())
    } else {
        Arc::new(ecr_vault_engine::NoProgress)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Backup(a) => backup(a).await,
        Command::Plan(a) => plan(a).await,
        Command::Snapshots(a) => snapshots(a).await,
        Command::Restore(a) => restore(a).await,
        Command::Show(a) => show(a).await,
        Command::Verify(a) => verify(a).await,
        Command::Gc(a) => gc(a).await,
    }
}

async fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault(
        &sdk,
        &VaultConfig {
            uri: a.vault.vault.clone(),
            lock: LockPolicy {
                mode: a.lock_mode,
                retention_days: a.retention_days,
                slack_days: a.lock_slack_days,
                ..LockPolicy::default()
            },
            part_size_mib: a.part_size_mib,
            parts_in_flight: a.parts_in_flight,
            storage_class: a.storage_class.clone(),
        },
    )?;
    let source = open_source(&sdk, &a.registry.config())
        .await
        .context("connecting to the source registry")?;
    let opts = BackupOptions {
        filters: a.filters.filters()?,
        image_concurrency: a.image_concurrency,
        blob_concurrency: a.blob_concurrency,
        trigger: "manual".into(),
        referrers: !a.no_referrers,
        ..BackupOptions::default()
    };
    let bar = progress_for(a.output);
    let report = ecr_vault_engine::backup(&source, &vault, &opts, bar.clone()).await?;
    drop(bar);
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            let c = &report.counts;
            println!(
                "snapshot {} ({})",
                report
                    .snapshot
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                if report.complete {
                    "complete"
                } else {
                    "INCOMPLETE"
                }
            );
            println!(
                "images: {} ({} copied, {} unchanged, {} failed, {} skipped)",
                c.images, c.images_copied, c.images_unchanged, c.images_failed, c.images_skipped
            );
            println!(
                "blobs: {} written, {} already in the vault; {} bytes written; {} lock extensions; {:.1}s",
                c.blobs_written,
                c.blobs_existing,
                c.bytes_written,
                c.lock_extensions,
                report.duration_ms as f64 / 1000.0
            );
            let ph = &report.phases;
            println!(
                "time: list {:.1}s, plan {:.1}s, copy {:.1}s, snapshot {:.1}s ({} scope)",
                ph.list_ms as f64 / 1000.0,
                ph.plan_ms as f64 / 1000.0,
                ph.copy_ms as f64 / 1000.0,
                ph.snapshot_ms as f64 / 1000.0,
                report.scope
            );
            if let Some(cost) = &report.cost {
                println!("estimated cost: {cost} ({})", cost.prices);
            }
            for s in &report.skipped {
                println!("skipped {}@{}: {}", s.repository, s.reference, s.error);
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            for f in &report.failures {
                println!("FAILED {} {}: {}", f.repository, f.reference, f.error);
            }
        }
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn plan(a: PlanArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault(
        &sdk,
        &VaultConfig {
            uri: a.vault.vault.clone(),
            lock: LockPolicy {
                retention_days: a.retention_days,
                slack_days: a.lock_slack_days,
                ..LockPolicy::default()
            },
            ..VaultConfig::default()
        },
    )?;
    let source = open_source(&sdk, &a.registry.config())
        .await
        .context("connecting to the source registry")?;
    let opts = ecr_vault_engine::PlanOptions {
        filters: a.filters.filters()?,
        concurrency: a.concurrency,
        fetch_sizes: a.sizes,
        lease: None,
    };
    let p = ecr_vault_engine::plan(&source, &vault, &opts).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
        Output::Text => {
            println!(
                "base snapshot: {}",
                p.base_snapshot
                    .as_ref()
                    .map_or("none (everything is new)".to_owned(), |s| s.to_string())
            );
            let bytes = match p.bytes_expected {
                Some(b) => format!("{b} bytes ({})", serde_json::to_value(p.bytes_basis)?),
                None => "unknown (use --sizes to fetch the new manifests)".to_owned(),
            };
            println!("new: {} images, {bytes} expected at most", p.new.len());
            println!(
                "unchanged: {} images ({} lock extensions due, {} to check with one HEAD)",
                p.unchanged.len(),
                p.lock_extensions_due,
                p.lock_unknown
            );
            println!("gone since the base snapshot: {} images", p.gone.len());
            match &p.cost {
                Some(c) => println!("storage cost estimate: {c}"),
                None => println!("storage cost estimate: not available"),
            }
            if a.verbose {
                for n in &p.new {
                    println!(
                        "new       {}@{} {:?}",
                        n.image.repo, n.image.digest, n.image.tags
                    );
                }
                for u in &p.unchanged {
                    println!(
                        "unchanged {}@{} lock {:?}",
                        u.image.repo, u.image.digest, u.lock
                    );
                }
                for g in &p.gone {
                    println!("gone      {}@{}", g.repository, g.digest);
                }
            }
            for s in &p.skipped {
                println!("skipped {}@{}: {}", s.repository, s.reference, s.error);
            }
            for w in &p.warnings {
                println!("warning: {w}");
            }
            for f in &p.failures {
                println!("FAILED {} {}: {}", f.repository, f.reference, f.error);
            }
        }
    }
    Ok(if p.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn snapshots(a: SnapshotsArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault_at(&sdk, &a.vault.vault)?;
    let rows = ecr_vault_engine::select::summaries(&vault).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            println!(
                "{:<28} {:<26} {:<10} {:<8} {:>7} {:>14} {:<10} LATEST",
                "ID", "CREATED", "TRIGGER", "SCOPE", "IMAGES", "BYTES", "STATUS"
            );
            for r in rows {
                let scope = if r.scope == ecr_vault_vault::ScopeKind::Full && r.filtered {
                    "filtered".to_owned()
                } else {
                    r.scope.to_string()
                };
                println!(
                    "{:<28} {:<26} {:<10} {:<8} {:>7} {:>14} {:<10} {}",
                    r.id.as_str(),
                    r.created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                    r.trigger,
                    scope,
                    r.images,
                    r.bytes_written,
                    if r.complete { "complete" } else { "incomplete" },
                    if r.in_latest { "*" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault_at(&sdk, &a.vault.vault)?;
    let target = open_source(&sdk, &a.registry.config())
        .await
        .context("connecting to the target registry")?;
    let digests = a
        .digests
        .iter()
        .map(|d| ecr_vault_registry::Digest::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let req = RestoreRequest {
        snapshot: SnapshotSel::parse(a.snapshot.as_deref(), a.as_of.as_deref())?,
        filters: a.filters.filters()?,
        digests,
        mapping: Mapping {
            renames: Mapping::parse_pairs(&a.renames, "--rename")?,
            retags: Mapping::parse_pairs(&a.retags, "--retag")?,
            digest_only: a.digest_only,
        },
        dry_run: a.dry_run,
        concurrency: a.concurrency,
    };
    let bar = progress_for(a.output);
    let report = ecr_vault_engine::restore(&vault, &target, &req, bar.clone()).await?;
    drop(bar);
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            let verb = if report.dry_run { "would" } else { "did" };
            println!(
                "restore from {} ({})",
                report.snapshots.join(", "),
                if report.dry_run {
                    "dry run: nothing changed"
                } else {
                    "applied"
                }
            );
            for r in &report.repositories_created {
                println!("{verb} create repository {r}");
            }
            for p in &report.plan {
                println!(
                    "{} → {}@{} tags [{}]: {} blobs, {} bytes to push",
                    p.source,
                    p.target,
                    p.digest,
                    p.tags.join(", "),
                    p.blobs_to_push,
                    p.bytes_to_push
                );
            }
            println!(
                "images {}; blobs {} pushed, {} mounted, {} present; {} bytes; manifests {} pushed, {} present; tags {} pushed, {} unchanged; {:.1}s",
                report.images,
                report.blobs_pushed,
                report.blobs_mounted,
                report.blobs_present,
                report.bytes_pushed,
                report.manifests_pushed,
                report.manifests_present,
                report.tags_pushed,
                report.tags_unchanged,
                report.duration_ms as f64 / 1000.0
            );
            for w in &report.warnings {
                println!("warning: {w}");
            }
            for f in &report.failures {
                println!("FAILED {} {}: {}", f.repository, f.reference, f.error);
            }
        }
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_records(records: &[ecr_vault_vault::ImageRecord]) {
    for i in records {
        let name = match &i.tag {
            Some(t) => format!("{}:{t}", i.repository),
            None => i.repository.to_string(),
        };
        println!("{name:<50} {} {:?} {}", i.digest, i.role, i.media_type);
    }
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault_at(&sdk, &a.vault.vault)?;
    if a.what == "latest" {
        let latest = ecr_vault_engine::latest(&vault)
            .await?
            .with_context(|| format!("no snapshots in {}", vault.location()))?;
        let records = latest.records();
        match a.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "base": latest.base.id,
                    "overlays": latest.overlays.iter().map(|s| &s.id).collect::<Vec<_>>(),
                    "images": records,
                }))?
            ),
            Output::Text => {
                println!(
                    "latest: snapshot {} ({}) overlaid by {} newer snapshot(s)",
                    latest.base.id,
                    latest.base.run.trigger,
                    latest.overlays.len()
                );
                print_records(&records);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ecr_vault_vault::SnapshotId::parse(&a.what).is_ok() {
        let sel = SnapshotSel::parse(Some(&a.what), None)?;
        let snap = match sel {
            SnapshotSel::Id(id) => vault.get_snapshot(&id).await?,
            _ => None,
        }
        .with_context(|| format!("no snapshot {}", a.what))?;
        match a.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "id": snap.id, "created": snap.created, "run": snap.run, "images": snap.images,
                }))?
            ),
            Output::Text => {
                println!(
                    "snapshot {} created {} ({}, {})",
                    snap.id,
                    snap.created,
                    snap.run.trigger,
                    if snap.run.complete {
                        "complete"
                    } else {
                        "incomplete"
                    }
                );
                print_records(&snap.images);
                for f in &snap.run.failures {
                    println!("FAILED {} {}: {}", f.repository, f.reference, f.error);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // repository:tag → its capture history across snapshots.
    let image = ecr_vault_registry::ImageRef::parse(&a.what)?;
    let mut rows = Vec::new();
    for id in vault.list_snapshots().await? {
        if let Some(s) = vault.get_snapshot(&id).await? {
            for i in s.images {
                if i.repository == image.repo && (image.tag.is_none() || i.tag == image.tag) {
                    rows.push(serde_json::json!({
                        "snapshot": s.id, "created": s.created, "tag": i.tag,
                        "digest": i.digest, "pushedAt": i.pushed_at,
                    }));
                }
            }
        }
    }
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            for r in rows {
                println!(
                    "{} {} {} {}",
                    r["created"].as_str().unwrap_or_default(),
                    r["snapshot"].as_str().unwrap_or_default(),
                    r["tag"].as_str().unwrap_or("-"),
                    r["digest"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault_at(&sdk, &a.vault.vault)?;
    let sel = a
        .snapshot
        .as_deref()
        .map(|s| SnapshotSel::parse(Some(s), None))
        .transpose()?;
    let report = ecr_vault_engine::verify(&vault, sel.as_ref(), a.deep).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            println!(
                "verified {} snapshot(s): {} objects, {} bytes re-hashed, {} problem(s)",
                report.snapshots.len(),
                report.objects_checked,
                report.bytes_rehashed,
                report.problems.len()
            );
            for p in &report.problems {
                println!("PROBLEM {}: {}", p.key, p.problem);
            }
        }
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Args)]
struct GcArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Keep the newest N snapshots (the latest is always kept).
    #[arg(long, default_value_t = 30, env = "ECR_VAULT_GC_KEEP_LAST")]
    keep_last: usize,
    /// Keep the newest snapshot of each day for this many days.
    #[arg(long, default_value_t = 35, env = "ECR_VAULT_GC_KEEP_DAILY")]
    keep_daily: u32,
    /// Keep the newest snapshot of each month for this many months.
    #[arg(long, default_value_t = 12, env = "ECR_VAULT_GC_KEEP_MONTHLY")]
    keep_monthly: u32,
    /// Abort multipart uploads started more than this many days ago (unless a recent staging
    /// record names them).
    #[arg(long, default_value_t = 7, env = "ECR_VAULT_GC_UPLOAD_DAYS")]
    abandoned_upload_days: u32,
    /// Delete what the plan lists. Without it, gc only prints the plan.
    #[arg(long)]
    apply: bool,
    /// Delete unreferenced GOVERNANCE-locked versions before their lock expires (needs
    /// s3:BypassGovernanceRetention). COMPLIANCE locks are never bypassed.
    #[arg(long)]
    bypass_governance: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

async fn gc(a: GcArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault_at(&sdk, &a.vault.vault)?;
    let opts = ecr_vault_engine::gc::GcOptions {
        keep_last: a.keep_last,
        keep_daily_days: a.keep_daily,
        keep_monthly_months: a.keep_monthly,
        abandoned_upload_age: std::time::Duration::from_secs(
            u64::from(a.abandoned_upload_days) * 24 * 3600,
        ),
        bypass_governance: a.bypass_governance,
        ..ecr_vault_engine::gc::GcOptions::default()
    };
    let report = ecr_vault_engine::gc::gc(&vault, &opts, a.apply).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            let p = &report.plan;
            let verb = if report.applied {
                "deleted"
            } else {
                "would delete"
            };
            println!(
                "snapshots: {} kept, {} expired by policy",
                p.snapshots_kept.len(),
                p.snapshots_expired.len()
            );
            for e in &p.snapshots_expired {
                match e.locked_until {
                    Some(t) => println!("  {} expired, record locked until {t}", e.id),
                    None => println!("  {} expired", e.id),
                }
            }
            for d in &p.delete {
                let bypass = if d.bypass_until.is_some() {
                    " (governance bypass)"
                } else {
                    ""
                };
                println!("{verb} {} {} ({} bytes){bypass}", d.kind, d.key, d.size);
            }
            for u in &p.uploads_to_abort {
                println!(
                    "{} upload {} {}",
                    if report.applied {
                        "aborted"
                    } else {
                        "would abort"
                    },
                    u.key,
                    u.upload_id
                );
            }
            println!(
                "{} objects referenced by live snapshots; {} unreferenced still locked ({} bytes); {} resumable uploads kept",
                p.referenced_objects,
                p.held.len(),
                p.held.iter().map(|h| h.size).sum::<u64>(),
                p.uploads_resumable
            );
            println!(
                "{verb}: {} versions, {} bytes; storage {} -> {} (${:.2} -> ${:.2}/month, {})",
                p.delete.len(),
                p.bytes_reclaimed,
                p.cost_before.by_class.iter().map(|c| c.bytes).sum::<u64>(),
                p.cost_after.by_class.iter().map(|c| c.bytes).sum::<u64>(),
                p.cost_before.monthly_usd,
                p.cost_after.monthly_usd,
                p.cost_before.prices
            );
            for s in &report.skipped {
                println!("skipped {}: {}", s.key, s.reason);
            }
            for w in &p.warnings {
                println!("warning: {w}");
            }
            for e in &report.errors {
                println!("ERROR {}: {}", e.key, e.reason);
            }
        }
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
