//! What the commands print, and how they end: `--output json` prints the engine's report as it
//! is; text output is written here, one function per report. Exit codes are documented in
//! `ecr-vault --help` and the README.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use ecr_vault_engine::gc::GcReport;
use ecr_vault_engine::select::{Capture, LatestView, SnapshotSummary};
use ecr_vault_engine::{BackupReport, Plan, RestoreReport, VerifyReport};
use ecr_vault_vault::{ImageRecord, ScopeKind, Snapshot};
use serde::Serialize;

use crate::args::Output;

/// Prints a line to stdout, like `println!`, but a reader that went away (`ecr-vault … | head`)
/// only ends the printing: the command still finishes its work and exits with its own code.
macro_rules! say {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Set once stdout is closed: nothing more is written.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// What [`say!`] writes. Any other write error is reported once on stderr, as `println!`
/// would have panicked on it.
pub fn line(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: writing to stdout: {e}");
        }
    }
}

/// Finished, but some images failed or problems were found.
pub const EXIT_FAILURES: u8 = 1;
/// Invalid configuration: a flag or variable the user set is wrong; nothing was done.
pub const EXIT_CONFIG: u8 = 3;
/// The run could not start or stopped: registry or vault unreachable, access denied.
pub const EXIT_RUN: u8 = 4;

/// An invalid value the user gave; ends the command with [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The exit code for an error that stopped a command.
pub fn error_code(e: &anyhow::Error) -> u8 {
    let invalid = e.chain().any(|c| {
        c.is::<Invalid>()
            || c.is::<ecr_vault_engine::config::ConfigError>()
            || matches!(
                c.downcast_ref::<ecr_vault_engine::EngineError>(),
                Some(ecr_vault_engine::EngineError::Config(_))
            )
    });
    if invalid { EXIT_CONFIG } else { EXIT_RUN }
}

/// 0 when nothing failed, else [`EXIT_FAILURES`].
pub fn finished(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(EXIT_FAILURES)
    } else {
        ExitCode::SUCCESS
    }
}

/// The report as pretty JSON, or as `text` prints it.
pub fn print<T: Serialize + ?Sized>(
    output: Output,
    report: &T,
    text: impl FnOnce(&T),
) -> anyhow::Result<()> {
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(report)?),
        Output::Text => text(report),
    }
    Ok(())
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn failures(list: &[ecr_vault_vault::Failure]) {
    for f in list {
        say!("FAILED {} {}: {}", f.repository, f.reference, f.error);
    }
}

fn skipped_and_warnings(skipped: &[ecr_vault_vault::Failure], warnings: &[String]) {
    for s in skipped {
        say!("skipped {}@{}: {}", s.repository, s.reference, s.error);
    }
    for w in warnings {
        say!("warning: {w}");
    }
}

pub fn backup(r: &BackupReport) {
    let c = &r.counts;
    let id = r
        .snapshot
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let state = if r.complete { "complete" } else { "INCOMPLETE" };
    say!("snapshot {id} ({state})");
    say!(
        "images: {} ({} copied, {} unchanged, {} failed, {} skipped)",
        c.images,
        c.images_copied,
        c.images_unchanged,
        c.images_failed,
        c.images_skipped
    );
    say!(
        "blobs: {} written, {} already in the vault; {} bytes written; {} lock extensions; {:.1}s",
        c.blobs_written,
        c.blobs_existing,
        c.bytes_written,
        c.lock_extensions,
        secs(r.duration_ms)
    );
    let ph = &r.phases;
    say!(
        "time: list {:.1}s, plan {:.1}s, copy {:.1}s, snapshot {:.1}s ({} scope)",
        secs(ph.list_ms),
        secs(ph.plan_ms),
        secs(ph.copy_ms),
        secs(ph.snapshot_ms),
        r.scope
    );
    if let Some(cost) = &r.cost {
        say!("estimated cost: {cost} ({})", cost.prices);
    }
    skipped_and_warnings(&r.skipped, &r.warnings);
    failures(&r.failures);
}

pub fn plan(p: &Plan, verbose: bool) {
    let base = p
        .base_snapshot
        .as_ref()
        .map_or("none (everything is new)".to_owned(), |s| s.to_string());
    say!("base snapshot: {base}");
    let bytes = match p.bytes_expected {
        Some(b) => {
            let basis = serde_json::to_value(p.bytes_basis).unwrap_or_default();
            format!("{b} bytes ({basis})")
        }
        None => "unknown (use --sizes to fetch the new manifests)".to_owned(),
    };
    say!("new: {} images, {bytes} expected at most", p.new.len());
    say!(
        "unchanged: {} images ({} lock extensions due, {} to check with one HEAD)",
        p.unchanged.len(),
        p.lock_extensions_due,
        p.lock_unknown
    );
    say!("gone since the base snapshot: {} images", p.gone.len());
    match &p.cost {
        Some(c) => say!("storage cost estimate: {c}"),
        None => say!("storage cost estimate: not available"),
    }
    if verbose {
        for n in &p.new {
            let i = &n.image;
            say!("new       {}@{} {:?}", i.repo, i.digest, i.tags);
        }
        for u in &p.unchanged {
            say!(
                "unchanged {}@{} lock {:?}",
                u.image.repo,
                u.image.digest,
                u.lock
            );
        }
        for g in &p.gone {
            say!("gone      {}@{}", g.repository, g.digest);
        }
    }
    skipped_and_warnings(&p.skipped, &p.warnings);
    failures(&p.failures);
}

pub fn snapshots(rows: &[SnapshotSummary]) {
    let header = [
        "ID", "CREATED", "TRIGGER", "SCOPE", "IMAGES", "BYTES", "STATUS",
    ];
    let [id, created, trigger, scope, images, bytes, status] = header;
    say!(
        "{id:<28} {created:<26} {trigger:<10} {scope:<8} {images:>7} {bytes:>14} {status:<10} LATEST"
    );
    for r in rows {
        let scope = if r.scope == ScopeKind::Full && r.filtered {
            "filtered".to_owned()
        } else {
            r.scope.to_string()
        };
        say!(
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

pub fn restore(r: &RestoreReport) {
    let verb = if r.dry_run { "would" } else { "did" };
    let mode = if r.dry_run {
        "dry run: nothing changed"
    } else {
        "applied"
    };
    say!("restore from {} ({mode})", r.snapshots.join(", "));
    for repo in &r.repositories_created {
        say!("{verb} create repository {repo}");
    }
    for p in &r.plan {
        say!(
            "{} → {}@{} tags [{}]: {} blobs, {} bytes to push",
            p.source,
            p.target,
            p.digest,
            p.tags.join(", "),
            p.blobs_to_push,
            p.bytes_to_push
        );
    }
    say!(
        "images {}; blobs {} pushed, {} mounted, {} present; {} bytes; manifests {} pushed, {} present; tags {} pushed, {} unchanged; {:.1}s",
        r.images,
        r.blobs_pushed,
        r.blobs_mounted,
        r.blobs_present,
        r.bytes_pushed,
        r.manifests_pushed,
        r.manifests_present,
        r.tags_pushed,
        r.tags_unchanged,
        secs(r.duration_ms)
    );
    skipped_and_warnings(&[], &r.warnings);
    failures(&r.failures);
}

fn records(records: &[ImageRecord]) {
    for i in records {
        let name = match &i.tag {
            Some(t) => format!("{}:{t}", i.repository),
            None => i.repository.to_string(),
        };
        say!("{name:<50} {} {:?} {}", i.digest, i.role, i.media_type);
    }
}

pub fn latest(l: &LatestView, trigger: &str) {
    say!(
        "latest: snapshot {} ({trigger}) overlaid by {} newer snapshot(s)",
        l.base,
        l.overlays.len()
    );
    records(&l.images);
}

pub fn snapshot(s: &Snapshot) {
    let state = if s.run.complete {
        "complete"
    } else {
        "incomplete"
    };
    say!(
        "snapshot {} created {} ({}, {state})",
        s.id,
        s.created,
        s.run.trigger
    );
    records(&s.images);
    failures(&s.run.failures);
}

pub fn history(rows: &[Capture]) {
    for r in rows {
        let created = r
            .created
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let tag = r.tag.as_ref().map_or("-", |t| t.as_str());
        say!("{created} {} {tag} {}", r.snapshot, r.digest);
    }
}

pub fn verify(r: &VerifyReport) {
    say!(
        "verified {} snapshot(s): {} objects, {} bytes re-hashed, {} problem(s)",
        r.snapshots.len(),
        r.objects_checked,
        r.bytes_rehashed,
        r.problems.len()
    );
    for p in &r.problems {
        say!("PROBLEM {}: {}", p.key, p.problem);
    }
}

pub fn gc(r: &GcReport) {
    let p = &r.plan;
    let verb = if r.applied { "deleted" } else { "would delete" };
    say!(
        "snapshots: {} kept, {} expired by policy",
        p.snapshots_kept.len(),
        p.snapshots_expired.len()
    );
    for e in &p.snapshots_expired {
        match e.locked_until {
            Some(t) => say!("  {} expired, record locked until {t}", e.id),
            None => say!("  {} expired", e.id),
        }
    }
    for d in &p.delete {
        let bypass = if d.bypass_until.is_some() {
            " (governance bypass)"
        } else {
            ""
        };
        say!("{verb} {} {} ({} bytes){bypass}", d.kind, d.key, d.size);
    }
    let abort = if r.applied { "aborted" } else { "would abort" };
    for u in &p.uploads_to_abort {
        say!("{abort} upload {} {}", u.key, u.upload_id);
    }
    say!(
        "{} objects referenced by live snapshots; {} unreferenced still locked ({} bytes); {} resumable uploads kept",
        p.referenced_objects,
        p.held.len(),
        p.held.iter().map(|h| h.size).sum::<u64>(),
        p.uploads_resumable
    );
    say!(
        "{verb}: {} versions, {} bytes; storage {} -> {} (${:.2} -> ${:.2}/month, {})",
        p.delete.len(),
        p.bytes_reclaimed,
        p.cost_before.by_class.iter().map(|c| c.bytes).sum::<u64>(),
        p.cost_after.by_class.iter().map(|c| c.bytes).sum::<u64>(),
        p.cost_before.monthly_usd,
        p.cost_after.monthly_usd,
        p.cost_before.prices
    );
    for s in &r.skipped {
        say!("skipped {}: {}", s.key, s.reason);
    }
    for w in &p.warnings {
        say!("warning: {w}");
    }
    for e in &r.errors {
        say!("ERROR {}: {}", e.key, e.reason);
    }
}
