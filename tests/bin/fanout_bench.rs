//! The fan-out path at benchmark scale (bench/scale.py), driven through the engine's own entry
//! points the way the backup function drives them, without the Lambda runtime:
//!
//! - `queue --name N [--max-receives 5] [--visibility 120]`: creates the work queue and its
//!   dead-letter queue (redrive after `max-receives`) on the SQS endpoint
//!   (`AWS_ENDPOINT_URL_SQS`); prints `{"queue_url": ...}`.
//! - `schedule --registry URL --vault S3URI --queue-url Q --repository GLOB
//!   [--threshold 50]`: one scheduled invocation, `trigger::scheduled` with the work queue,
//!   as the function's `scheduled()` calls it; prints the fan-out report and its wall time.
//! - `worker --registry URL --vault S3URI --queue-url Q --out FILE [--batch 4]
//!   [--timeout-s 900] [--max-receives 5] [--idle-s 15] [--until EPOCH_S]`: one warm worker
//!   container. It receives up to `batch` messages, decodes them, calls `trigger::queued`
//!   (the function's SQS path) with the invocation deadline `timeout-s` ahead, deletes the
//!   messages that were not reported as failed (as the event-source mapping does with
//!   `batchItemFailures`), and appends one JSON line per invocation to FILE: wall time,
//!   items, done, retried, whether it finalised, and the process's peak RSS so far (VmHWM; a
//!   warm Lambda container reports its peak the same way). It stops after `idle-s` without a
//!   message, or at `until`.
//! - `probe --vault S3URI --run RUN`: what each worker invocation pays for the run's shared
//!   documents: the run manifest's GET + parse (bytes, seconds) and the LIST of the run's
//!   markers (keys, seconds).
//!
//! The S3 and SQS endpoints and credentials come from the usual `AWS_*` variables.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use ecr_vault_engine::fanout::FanoutOptions;
use ecr_vault_engine::trigger::{self, Batch, Delivery, Queue, ScheduledRun};
use ecr_vault_engine::{BackupOptions, Filters, RegistryConfig, Source, VaultConfig};
use ecr_vault_vault::{LockMode, LockPolicy, SnapshotId, Vault};
use serde_json::json;

fn usage() -> ! {
    eprintln!(
        "usage: ecr-vault-fanout-bench queue|schedule|worker|probe [--flag value]... \
         (see the file's header)"
    );
    std::process::exit(2)
}

/// `--name value` pairs after the mode.
struct Flags(BTreeMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags> {
        let mut m = BTreeMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                bail!("unexpected argument {k}");
            };
            let v = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            m.insert(name.to_owned(), v.clone());
        }
        Ok(Flags(m))
    }

    fn req(&self, k: &str) -> Result<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .with_context(|| format!("--{k} is required"))
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T> {
        match self.0.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{k}: not a number: {v}")),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        usage()
    };
    let f = Flags::parse(rest)?;
    let sdk = ecr_vault_engine::aws_config().await;
    let c = Clients {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        vault: match f.0.get("vault") {
            Some(uri) => Some(ecr_vault_engine::open_vault(&sdk, &vault_config(uri))?),
            None => None,
        },
        source: match f.0.get("registry") {
            Some(url) => {
                let cfg = RegistryConfig::Oci {
                    url: url.clone(),
                    username: None,
                    password: None,
                };
                Some(ecr_vault_engine::open_source(&sdk, &cfg).await?)
            }
            None => None,
        },
    };
    match mode.as_str() {
        "queue" => queue(&c, &f).await,
        "schedule" => schedule(&c, &f).await,
        "worker" => worker(&c, &f).await,
        "probe" => probe(&c, &f).await,
        _ => usage(),
    }
}

struct Clients {
    sqs: aws_sdk_sqs::Client,
    vault: Option<Vault>,
    source: Option<Source>,
}

impl Clients {
    fn vault(&self) -> Result<&Vault> {
        self.vault.as_ref().context("--vault is required")
    }

    fn source(&self) -> Result<&Source> {
        self.source.as_ref().context("--registry is required")
    }
}

/// The vault as the bench's CLI runs write it (governance, 3 + 2 days), so it can be purged.
fn vault_config(uri: &str) -> VaultConfig {
    VaultConfig {
        uri: uri.to_owned(),
        lock: LockPolicy {
            mode: LockMode::Governance,
            retention_days: 3,
            slack_days: 2,
            ..LockPolicy::default()
        },
        ..VaultConfig::default()
    }
}

fn options(f: &Flags, trigger: &str, deadline: Option<Instant>) -> Result<BackupOptions> {
    let filters = match f.0.get("repository") {
        Some(glob) => Filters::new(ecr_vault_engine::FilterSpec {
            repositories: vec![glob.clone()],
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("--repository: {e}"))?,
        None => Filters::all(),
    };
    Ok(BackupOptions {
        filters,
        // The template's ImageConcurrency default.
        image_concurrency: f.num("image-concurrency", 4)?,
        trigger: trigger.to_owned(),
        deadline,
        // The distribution registry has no referrers API; the CLI runs use --no-referrers too.
        referrers: false,
        ..BackupOptions::default()
    })
}

async fn queue(c: &Clients, f: &Flags) -> Result<()> {
    let q = ecr_vault_tests::work_queues(
        &c.sqs,
        f.req("name")?,
        f.num("max-receives", 5u32)?,
        f.num("visibility", 120u32)?,
    )
    .await?;
    println!("{}", json!({"queue_url": q.work, "dlq_url": q.dlq}));
    Ok(())
}

async fn schedule(c: &Clients, f: &Flags) -> Result<()> {
    let started = Instant::now();
    let (source, vault) = (c.source()?, c.vault()?);
    let queue = Queue {
        sqs: &c.sqs,
        options: FanoutOptions {
            queue_url: f.req("queue-url")?.to_owned(),
            threshold_images: f.num("threshold", 50)?,
            run_timeout: Duration::from_secs(43_200),
            lookback: Duration::from_secs(7 * 86_400),
        },
    };
    let deadline = Instant::now() + Duration::from_secs(f.num("timeout-s", 900)?);
    let opts = options(f, trigger::SCHEDULED, Some(deadline))?;
    let report = trigger::scheduled(source, vault, &opts, Some(&queue)).await?;
    let wall = started.elapsed().as_secs_f64();
    let mut out = match &report.run {
        ScheduledRun::FannedOut(r) => json!({
            "fanned_out": true,
            "run": r.run.as_str(),
            "manifest_key": r.manifest_key,
            "queued": r.queued,
            "carried": r.carried,
            "not_queued": r.not_queued.len(),
            "failures": r.failures.len(),
        }),
        ScheduledRun::Inline(r) => json!({
            "fanned_out": false,
            "images": r.counts.images,
            "snapshot": r.snapshot_key,
        }),
    };
    out["wall_s"] = json!(wall);
    out["vmhwm_kib"] = json!(vmhwm_kib());
    println!("{out}");
    Ok(())
}

async fn worker(c: &Clients, f: &Flags) -> Result<()> {
    use std::io::Write as _;
    let (source, vault, sqs) = (c.source()?, c.vault()?, &c.sqs);
    let queue_url = f.req("queue-url")?.to_owned();
    let batch: i32 = f.num("batch", 4)?;
    let timeout = Duration::from_secs(f.num("timeout-s", 900)?);
    let max_receives: u32 = f.num("max-receives", 5)?;
    let idle = Duration::from_secs(f.num("idle-s", 15)?);
    let until: u64 = f.num("until", u64::MAX)?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(f.req("out")?)?;
    let mut last_message = Instant::now();
    loop {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now_s >= until || last_message.elapsed() >= idle {
            return Ok(());
        }
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(batch)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        last_message = Instant::now();
        let started = Instant::now();
        let deadline = started + timeout;
        let mut handles = BTreeMap::new();
        let mut deliveries = Vec::new();
        for m in messages {
            let id = m.message_id.clone().unwrap_or_default();
            if let Some(h) = m.receipt_handle.clone() {
                handles.insert(id.clone(), h);
            }
            let receives = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                message_id: id,
                receives,
                body: m.body.clone(),
            });
        }
        let n = deliveries.len();
        let batch = Batch::decode(deliveries);
        let opts = options(f, trigger::WORK_ITEM, Some(deadline))?;
        // `failed` names refused bodies as well as failed images.
        let report = trigger::queued(source, vault, batch, &opts, max_receives).await;
        let wall = started.elapsed().as_secs_f64();
        let failed = report.failed.clone();
        let entries: Vec<DeleteMessageBatchRequestEntry> = handles
            .iter()
            .filter(|(id, _)| !failed.contains(id))
            .filter_map(|(id, h)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(id.replace(|c: char| !c.is_ascii_alphanumeric(), ""))
                    .receipt_handle(h)
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty() {
            sqs.delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
        let done: usize = report.runs.iter().map(|(_, w)| w.done.len()).sum();
        let finalised = report
            .runs
            .iter()
            .find_map(|(_, w)| w.finalised.as_ref())
            .map(|f| {
                json!({"snapshot": f.snapshot_key, "complete": f.complete,
                            "written": f.written, "images": f.images})
            });
        let line = json!({
            "t": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            "wall_s": wall,
            "deadline_s": timeout.as_secs(),
            "items": n,
            "done": done,
            "failed": failed.len(),
            "finalised": finalised,
            "vmhwm_kib": vmhwm_kib(),
        });
        writeln!(out, "{line}")?;
    }
}

async fn probe(c: &Clients, f: &Flags) -> Result<()> {
    let vault = c.vault()?;
    let run = SnapshotId::parse(f.req("run")?).map_err(|e| anyhow::anyhow!("--run: {e}"))?;
    let t = Instant::now();
    let manifest = ecr_vault_engine::fanout::read_manifest(vault, &run)
        .await?
        .context("the run has no manifest")?;
    let manifest_s = t.elapsed().as_secs_f64();
    let key = vault.location().run_manifest_key(&run);
    let bytes = vault.head(&key).await?.map(|s| s.size);
    let t = Instant::now();
    let markers = vault.list_keys(&vault.location().run_prefix(&run)).await?;
    let list_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "manifest_bytes": bytes,
            "manifest_expected": manifest.expected.len(),
            "manifest_get_parse_s": manifest_s,
            "markers": markers.len(),
            "markers_list_s": list_s,
            "vmhwm_kib": vmhwm_kib(),
        })
    );
    Ok(())
}

/// The process's peak resident set so far, from /proc/self/status.
fn vmhwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
