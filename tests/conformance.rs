//! Request conformance: every S3 request the product's code really sends is allowed by the
//! policies we ship, and every harmful request is denied, naming the statement that denies it
//! (issue 13, docs/decisions/0008).
//!
//! - **Recorded, not listed.** A realistic run on the real stack (SeaweedFS with Object Lock,
//!   moto as ECR's API, registries as ECR's data plane) goes through the fault proxy, one set
//!   of proxies per role, which records each request's method, key and the headers S3
//!   authorizes writes by (lock mode and date, `If-None-Match`, checksum) or the ECR operation
//!   (`X-Amz-Target`): a backup from ECR whose multipart upload is cut at its deadline and
//!   resumed by the next run (staging record, CreateMultipartUpload/UploadPart/Complete), a
//!   restore into ECR under new names (CreateRepository, layer uploads, PutImage), and GC with
//!   apply deleting an expired orphan version. Both lock modes: the code runs with the mode the
//!   policy is deployed with. ECR calls are judged against the role's own policy (ECR of its
//!   account), API calls on a repository of the account (the name is in the body, not kept).
//! - **Judged by one evaluator** (`ecr_vault_testkit::iam`, shared with `template_policy.rs`):
//!   each request as the role it runs as, against that role's policy from `template.yaml` and
//!   the bucket policy of `template.yaml` (same account) and of `templates/vault-account.yaml`
//!   (backup and restore from a source account, GC as the vault account's maintenance role).
//!   No local server evaluates bucket policies or S3 condition keys (moto ignores both), hence
//!   the evaluator.
//! - The harmful-request matrix is judged the same way, for each role and an account
//!   administrator (`Allow * on *` in the vault's account), in each template and lock mode.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_engine::fanout::{
    Attempt, FanoutInput, FanoutOptions, fan_out, read_manifest_cached, work,
};
use ecr_vault_engine::gc::{GcOptions, gc};
use ecr_vault_engine::{
    BackupOptions, FilterSpec, Filters, Mapping, NoProgress, RestoreRequest, SnapshotSel, backup,
    restore,
};
use ecr_vault_registry::Digest;
use ecr_vault_testkit::Moto;
use ecr_vault_testkit::faultproxy::RequestRecord;
use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::iam::{
    Decision, Policy, Renderer, Request, bucket_policy, decide_request, load_template, role_policy,
};
use ecr_vault_testkit::s3::s3_client;
use ecr_vault_testkit::{Fault, FaultProxy, Registry, Rule, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{ecr_source, sqs_client, work_queues};
use ecr_vault_vault::{LockMode, LockPolicy, Vault, VaultLocation, VaultOptions};
use serde_json::json;

const MIB: u64 = 1024 * 1024;
const PREFIX: &str = "ecr";
/// The account of `template.yaml`'s stack (and of the vault in the single-account setup).
const APP_ACCOUNT: &str = "111111111111";
/// The vault account of `templates/vault-account.yaml`.
const VAULT_ACCOUNT: &str = "222222222222";
const ROLES: [&str; 3] = ["BackupRole", "RestoreRole", "GcRole"];

fn role_arn(account: &str, role: &str) -> String {
    format!("arn:aws:iam::{account}:role/ecr-vault/{role}")
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Compliance => "COMPLIANCE",
        LockMode::Governance => "GOVERNANCE",
    }
}

// ------------------------------------------------------------------------------------------
// Recording a realistic run
// ------------------------------------------------------------------------------------------

/// One recorded request and the role that sent it.
struct Sent {
    role: &'static str,
    rec: RequestRecord,
}

/// Runs backup (cut and resumed), restore and GC with `mode` against a fresh vault, each role
/// through its own recording proxy. Returns the bucket and every request, in order.
async fn record_run(stack: &Stack, mode: LockMode) -> (String, Vec<Sent>) {
    let bucket = unique_name("conform");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
    let loc = VaultLocation::parse(&format!("s3://{bucket}/{PREFIX}")).unwrap();
    let lock = LockPolicy {
        mode,
        retention_days: 2,
        slack_days: 2,
        ..LockPolicy::default()
    };
    let endpoint = stack.s3.endpoint();
    let proxy = || FaultProxy::start(&endpoint);
    let (backup_proxy, restore_proxy, gc_proxy) =
        tokio::try_join!(proxy(), proxy(), proxy()).unwrap();
    let vault_via = |p: &FaultProxy, lock: LockPolicy| {
        Vault::new(
            s3_client(&p.url(), &stack.s3.access_key, &stack.s3.secret_key),
            loc.clone(),
            VaultOptions {
                lock,
                part_size: 5 * MIB as usize,
                parts_in_flight: 1,
                blob_storage_class: None,
            },
        )
        .unwrap()
    };

    // Backup: a small image (single PUTs) and one 15 MiB layer (three 5 MiB parts), the
    // upload cut at the deadline while part 2 is held, then resumed by the next run.
    let ns = unique_name("conform");
    let small = ImageBuilder::oci(801)
        .layers(&[3_000, 9_000])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/small"), &["v1"])
        .await
        .unwrap();
    let big = ImageBuilder::oci(802)
        .layers(&[3 * 5 * MIB])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/big"), &["v1"])
        .await
        .unwrap();
    // Backed up from ECR (moto's API, the stack's registry as data plane) and restored into
    // ECR (moto, a fresh registry), each through recording proxies of the role's own.
    for p in [&small, &big] {
        stack.moto.register_pushed(p).await.unwrap();
    }
    let moto = stack.moto.endpoint();
    let fresh = Registry::start().await.unwrap();
    let (source_url, fresh_url) = (stack.registry.url(), fresh.url());
    let (ecr_backup, reg_backup, ecr_restore, reg_restore) = tokio::try_join!(
        FaultProxy::start(&moto),
        FaultProxy::start(&source_url),
        FaultProxy::start(&moto),
        FaultProxy::start(&fresh_url),
    )
    .unwrap();
    let ecr_via = |api: &FaultProxy, data: &FaultProxy| {
        ecr_source(
            Moto::external(&api.url()).ecr_client(),
            &Registry::external(&data.url(), None).unwrap(),
        )
        .unwrap()
    };
    let source = ecr_via(&ecr_backup, &reg_backup);
    let backup_vault = vault_via(&backup_proxy, lock);
    let opts = BackupOptions {
        filters: Filters::new(FilterSpec {
            repositories: vec![format!("{ns}/**")],
            ..Default::default()
        })
        .unwrap(),
        referrers: false,
        ..BackupOptions::default()
    };
    let hold = backup_proxy.add_rule(
        Rule::new("*", Fault::Delay(Duration::from_secs(8)))
            .method("PUT")
            .query("partNumber")
            .nth(2),
    );
    let margin = Duration::from_secs(60);
    let first = backup(
        &source,
        &backup_vault,
        &BackupOptions {
            deadline: Some(Instant::now() + margin + Duration::from_secs(3)),
            deadline_margin: margin,
            ..opts.clone()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(backup_proxy.rule_stats(hold).triggered, 1);
    assert!(first.failures.is_empty(), "{:#?}", first.failures);
    assert_eq!(
        first.deferred.len(),
        1,
        "the big layer was not cut: {first:#?}"
    );
    let second = backup(&source, &backup_vault, &opts, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(second.complete && second.failures.is_empty(), "{second:#?}");

    // The same images fanned out, as a scheduled run above its threshold and its workers do
    // (the backup role's requests too): the run manifest, each image's done marker, the
    // shallow LISTs of its repository's markers, the repository's complete marker, the
    // LIST of complete markers and the snapshot.
    let sqs = sqs_client(stack);
    let q = work_queues(&sqs, &unique_name("conform"), 3, 30)
        .await
        .unwrap();
    let listing = source.list(&opts.filters, 4).await;
    let images = listing.images.clone();
    let fan = FanoutOptions::new(q.work.clone(), 0, Duration::from_secs(600));
    let fanned = fan_out(
        &source,
        &backup_vault,
        &sqs,
        FanoutInput::from(listing),
        &opts,
        &fan,
    )
    .await
    .unwrap();
    assert_eq!(fanned.queued, 2, "{fanned:#?}");
    let manifest = read_manifest_cached(&backup_vault, &fanned.run)
        .await
        .unwrap()
        .expect("the run manifest");
    let mut finalised = None;
    for image in images {
        let attempt = Attempt {
            image,
            last_attempt: false,
        };
        let w = work(
            &source,
            &backup_vault,
            &manifest,
            vec![attempt],
            vec![],
            &opts,
        )
        .await
        .unwrap();
        finalised = finalised.or(w.finalised);
    }
    assert!(
        finalised.is_some_and(|f| f.complete && f.written),
        "the fanned-out run was not finalised"
    );

    // Restore everything into ECR under new names (so the repositories are created).
    let report = restore(
        &vault_via(&restore_proxy, lock),
        &ecr_via(&ecr_restore, &reg_restore),
        &RestoreRequest {
            snapshot: SnapshotSel::Latest,
            filters: opts.filters.clone(),
            digests: Vec::new(),
            mapping: Mapping {
                renames: vec![(format!("{ns}/"), format!("restored/{ns}/"))],
                ..Mapping::default()
            },
            dry_run: false,
            concurrency: 2,
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.images, 2, "{report:#?}");
    for p in [&small, &big] {
        let reference = format!("restored/{}:v1", p.repo);
        assert_eq!(skopeo_digest(&fresh, &reference).await.unwrap(), p.digest);
    }

    // GC with apply: an unreferenced blob whose short lock (written directly, not recorded)
    // has expired is deleted by version id.
    let direct = Vault::new(
        stack.s3.client(),
        loc.clone(),
        VaultOptions {
            lock: LockPolicy::seconds(mode, 2, 0),
            ..VaultOptions::default()
        },
    )
    .unwrap();
    let orphan = b"conformance: unreferenced, locked for 2 seconds";
    let orphan_key = loc.blob_key(&Digest::of(orphan));
    direct
        .put_document(
            &orphan_key,
            Bytes::from_static(orphan),
            "application/octet-stream",
            Utc::now(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, until) = direct.retention(&orphan_key).await.unwrap().unwrap();
        if until < Utc::now() {
            break;
        }
        assert!(Instant::now() < deadline, "orphan still locked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gc_report = gc(
        &vault_via(&gc_proxy, lock),
        &GcOptions {
            keep_last: 5,
            keep_daily_days: 0,
            keep_monthly_months: 0,
            abandoned_upload_age: Duration::from_secs(7 * 24 * 3600),
            bypass_governance: false,
            ..GcOptions::default()
        },
        true,
    )
    .await
    .unwrap();
    assert!(gc_report.errors.is_empty(), "{:#?}", gc_report.errors);
    assert!(gc_report.deleted >= 1, "{gc_report:#?}");

    let mut sent = Vec::new();
    for (role, p) in [
        ("BackupRole", &backup_proxy),
        ("BackupRole", &ecr_backup),
        ("BackupRole", &reg_backup),
        ("RestoreRole", &restore_proxy),
        ("RestoreRole", &ecr_restore),
        ("RestoreRole", &reg_restore),
        ("GcRole", &gc_proxy),
    ] {
        sent.extend(p.requests().into_iter().map(|rec| Sent { role, rec }));
    }
    (bucket, sent)
}

// ------------------------------------------------------------------------------------------
// From HTTP to IAM
// ------------------------------------------------------------------------------------------

/// A recorded request as IAM sees it.
#[derive(Clone, Debug)]
struct Call {
    role: &'static str,
    /// The S3 operation (`PutObject`, `UploadPart`, ...), for the table.
    op: String,
    action: String,
    /// Object key, or `None` for a bucket-level request.
    key: Option<String>,
    /// For ECR: the resource ARN (a repository, or `*`).
    ecr_resource: Option<String>,
    /// Condition keys: `Some(v)` present, `None` known absent.
    keys: BTreeMap<String, Option<String>>,
    checksum: String,
}

impl Call {
    /// What makes two calls the same for the policies: role, action, kind of key and the
    /// headers that conditions look at (retention days are judged per call, not here).
    fn signature(&self) -> String {
        let cond = |k: &str| match self.keys.get(k) {
            Some(Some(v)) => v.clone(),
            Some(None) => "-".into(),
            None => "?".into(),
        };
        format!(
            "{:<11} {:<23} {:<36} {:<22} mode={:<10} if-none-match={:<2} creation={:<5} checksum={}",
            self.role,
            self.op,
            self.action,
            match (&self.ecr_resource, self.key.as_deref()) {
                (Some(r), _) if r == "*" => "*".to_owned(),
                (Some(_), _) => "(repository)".to_owned(),
                (None, k) => k.map_or("(bucket)".into(), key_class),
            },
            cond("s3:object-lock-mode"),
            cond("s3:if-none-match"),
            cond("s3:ObjectCreationOperation"),
            self.checksum,
        )
    }
}

/// `ecr/blobs/sha256/<hex>` → `blobs/sha256/*`: the part of a key a policy can tell apart.
fn key_class(key: &str) -> String {
    let rel = key.strip_prefix(&format!("{PREFIX}/")).unwrap_or(key);
    let segs: Vec<&str> = rel.split('/').collect();
    match segs.as_slice() {
        [one] => (*one).to_string(),
        ["blobs", alg, _] => format!("blobs/{alg}/*"),
        ["staging", kind, ..] => format!("staging/{kind}/*"),
        [dir, ..] => format!("{dir}/*"),
        [] => String::new(),
    }
}

fn query_pairs(q: Option<&str>) -> BTreeMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", q.unwrap_or("")))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The IAM action and condition keys of a recorded S3 request (path-style: `/bucket/key`).
/// PutObjectRetention carries its mode and date in the body, which the proxy does not keep:
/// those come from the object's retention after the run (`retention_of`).
fn to_call(
    s: &Sent,
    now: DateTime<Utc>,
    retention_of: &BTreeMap<String, (String, DateTime<Utc>)>,
) -> Option<Call> {
    let r = &s.rec;
    if r.headers.contains_key("x-amz-target") || r.path.starts_with("/v2") {
        return ecr_call(s);
    }
    let q = query_pairs(r.query.as_deref());
    let has = |k: &str| q.contains_key(k);
    let path = r.path.trim_start_matches('/');
    let key = path
        .split_once('/')
        .map(|(_, k)| {
            reqwest::Url::parse(&format!("http://x/{k}"))
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_owned()
        })
        .filter(|k| !k.is_empty());
    let key = key.map(|k| {
        // Percent-decoding of the path, segment by segment.
        k.split('/')
            .map(|seg| {
                let url = reqwest::Url::parse(&format!("http://x/?v={seg}")).unwrap();
                url.query_pairs()
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("/")
    });
    let h = |name: &str| r.headers.get(name).cloned();
    let mut keys: BTreeMap<String, Option<String>> = BTreeMap::new();
    let days = |until: DateTime<Utc>| {
        let secs = (until - now).num_seconds().max(0);
        ((secs + 86_399) / 86_400).to_string()
    };
    let m = r.method.as_str();
    let action = match (m, &key) {
        ("GET", None) if has("versions") => "s3:ListBucketVersions",
        ("GET", None) if has("uploads") => "s3:ListBucketMultipartUploads",
        ("GET", None) if has("object-lock") => "s3:GetBucketObjectLockConfiguration",
        ("GET", None) if has("versioning") => "s3:GetBucketVersioning",
        ("GET", None) => "s3:ListBucket",
        ("HEAD", None) => "s3:ListBucket",
        ("GET" | "HEAD", Some(_)) if has("retention") => "s3:GetObjectRetention",
        ("GET", Some(_)) if has("uploadId") => "s3:ListMultipartUploadParts",
        ("GET" | "HEAD", Some(_)) if has("versionId") => "s3:GetObjectVersion",
        ("GET" | "HEAD", Some(_)) => "s3:GetObject",
        ("PUT", Some(_)) if has("retention") => "s3:PutObjectRetention",
        ("PUT" | "POST", Some(_)) => "s3:PutObject",
        ("DELETE", Some(_)) if has("uploadId") => "s3:AbortMultipartUpload",
        ("DELETE", Some(_)) if has("versionId") => "s3:DeleteObjectVersion",
        ("DELETE", Some(_)) => "s3:DeleteObject",
        _ => panic!("unmapped S3 request {} {} {:?}", r.method, r.path, r.query),
    };
    if action.starts_with("s3:List") && key.is_none() {
        keys.insert("s3:prefix".into(), q.get("prefix").cloned());
    }
    if action == "s3:PutObject" {
        // CreateMultipartUpload and UploadPart create nothing yet (S3's
        // s3:ObjectCreationOperation); PutObject and CompleteMultipartUpload do.
        let creation = !(has("uploads") || has("partNumber"));
        keys.insert(
            "s3:ObjectCreationOperation".into(),
            Some(creation.to_string()),
        );
        keys.insert("s3:if-none-match".into(), h("if-none-match"));
        keys.insert("s3:object-lock-mode".into(), h("x-amz-object-lock-mode"));
        let until = h("x-amz-object-lock-retain-until-date").map(|d| {
            DateTime::parse_from_rfc3339(&d)
                .unwrap_or_else(|e| panic!("retain-until {d:?}: {e}"))
                .with_timezone(&Utc)
        });
        keys.insert(
            "s3:object-lock-remaining-retention-days".into(),
            until.map(days),
        );
    }
    if action == "s3:PutObjectRetention" {
        let k = key.clone().unwrap();
        let (mode, until) = retention_of
            .get(&k)
            .unwrap_or_else(|| panic!("no retention read for {k}"));
        keys.insert("s3:object-lock-mode".into(), Some(mode.clone()));
        keys.insert(
            "s3:object-lock-remaining-retention-days".into(),
            Some(days(*until)),
        );
    }
    let op = match (m, action) {
        ("POST", "s3:PutObject") if has("uploads") => "CreateMultipartUpload",
        ("POST", "s3:PutObject") => "CompleteMultipartUpload",
        ("PUT", "s3:PutObject") if has("partNumber") => "UploadPart",
        ("PUT", "s3:PutObject") => "PutObject",
        ("HEAD", _) => "HeadObject",
        ("GET", "s3:ListBucket") => "ListObjectsV2",
        ("GET", "s3:ListBucketMultipartUploads") => "ListMultipartUploads",
        ("GET", "s3:ListMultipartUploadParts") => "ListParts",
        ("GET", "s3:ListBucketVersions") => "ListObjectVersions",
        ("GET", "s3:GetObjectVersion") => "GetObject(version)",
        (_, a) => a.trim_start_matches("s3:"),
    };
    let checksum = h("x-amz-sdk-checksum-algorithm")
        .or_else(|| h("x-amz-checksum-algorithm"))
        .or_else(|| {
            r.headers
                .keys()
                .filter(|k| *k != "x-amz-checksum-mode")
                .find_map(|k| k.strip_prefix("x-amz-checksum-").map(str::to_uppercase))
        })
        .unwrap_or_else(|| "-".into());
    Some(Call {
        role: s.role,
        op: op.to_owned(),
        action: action.to_owned(),
        key,
        ecr_resource: None,
        keys,
        checksum,
    })
}

/// An ECR API call (by its `X-Amz-Target`) or an ECR data-plane request (the registry API,
/// as ECR authorizes it), as IAM sees it; `None` for what IAM does not authorize (`/v2/`).
/// The repository of an API call sits in its JSON body, which the proxy does not keep: API
/// calls are judged on a repository of the account, data-plane calls on their own.
fn ecr_call(s: &Sent) -> Option<Call> {
    let r = &s.rec;
    let repo_arn = |name: &str| format!("arn:aws:ecr:us-east-1:{APP_ACCOUNT}:repository/{name}");
    let (op, resource) = if let Some(target) = r.headers.get("x-amz-target") {
        let op = target.rsplit('.').next().unwrap_or_default().to_owned();
        let resource = if op == "GetAuthorizationToken" {
            "*".to_owned()
        } else {
            repo_arn("recorded/repository")
        };
        (op, resource)
    } else {
        let rest = r.path.trim_start_matches("/v2/");
        if rest.is_empty() || r.path == "/v2" {
            return None;
        }
        let (name, op) = [
            ("/manifests/", "manifest"),
            ("/blobs/uploads", "upload"),
            ("/blobs/", "blob"),
            ("/tags/list", "tags"),
            ("/referrers/", "referrers"),
        ]
        .iter()
        .find_map(|(sep, what)| rest.find(sep).map(|i| (&rest[..i], *what)))
        .unwrap_or_else(|| panic!("unmapped registry request {} {}", r.method, r.path));
        let action = match (r.method.as_str(), op) {
            ("GET" | "HEAD", "manifest" | "referrers") => "BatchGetImage",
            ("PUT", "manifest") => "PutImage",
            ("HEAD", "blob") => "BatchCheckLayerAvailability",
            ("GET", "blob") => "GetDownloadUrlForLayer",
            ("POST", "upload") => "InitiateLayerUpload",
            ("PATCH", "upload") => "UploadLayerPart",
            ("PUT", "upload") => "CompleteLayerUpload",
            ("GET", "upload") => "UploadLayerPart",
            ("GET", "tags") => "ListImages",
            ("DELETE", _) => "BatchDeleteImage",
            _ => panic!("unmapped registry request {} {}", r.method, r.path),
        };
        (action.to_owned(), repo_arn(name))
    };
    Some(Call {
        role: s.role,
        op: format!("ecr {op}"),
        action: format!("ecr:{op}"),
        key: None,
        ecr_resource: Some(resource),
        keys: BTreeMap::new(),
        checksum: "-".into(),
    })
}

// ------------------------------------------------------------------------------------------
// The two deployments
// ------------------------------------------------------------------------------------------

/// One template deployed with one lock mode: the policies and who is who.
struct Deployment {
    name: String,
    bucket: String,
    bucket_account: &'static str,
    roles: BTreeMap<&'static str, (Policy, String, &'static str)>,
    bucket_policy: Policy,
    admin: (Policy, String, &'static str),
    max_retention_days: u64,
}

impl Deployment {
    fn bucket_arn(&self) -> String {
        format!("arn:aws:s3:::{}", self.bucket)
    }

    fn request(&self, principal: &str, call: &Call) -> Request {
        let (_, arn, account) = self.principal(principal);
        let resource = match (&call.ecr_resource, &call.key) {
            (Some(r), _) => r.clone(),
            (None, Some(k)) => format!("{}/{k}", self.bucket_arn()),
            (None, None) => self.bucket_arn(),
        };
        let mut req = Request::new(&call.action, &resource).by(arn, account);
        for (k, v) in &call.keys {
            req = req.with_key(k, v.as_deref());
        }
        req
    }

    fn principal(&self, who: &str) -> (&Policy, &String, &'static str) {
        if who == "admin" {
            (&self.admin.0, &self.admin.1, self.admin.2)
        } else {
            let (p, arn, acct) = &self.roles[who];
            (p, arn, acct)
        }
    }

    fn judge(&self, who: &str, call: &Call) -> (Decision, String) {
        let req = self.request(who, call);
        if call.action.starts_with("ecr:") {
            // ECR in the role's own account: its identity policy alone decides.
            let p = self.principal(who).0;
            let sid = p.denying_sid(&req).unwrap_or_else(|| "no Allow".into());
            return (p.decide(&req), format!("{}/{sid}", p.name));
        }
        decide_request(
            self.principal(who).0,
            &self.bucket_policy,
            &req,
            self.bucket_account,
        )
    }
}

fn admin_policy() -> Policy {
    Policy::from_json(
        "AdministratorAccess",
        &json!({"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
}

fn deployments(bucket: &str, mode: LockMode) -> Vec<Deployment> {
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let prefix = format!("{PREFIX}/");
    let app_t = load_template("template.yaml");
    let vault_t = load_template("templates/vault-account.yaml");
    let mode = mode_name(mode);
    let mut out = Vec::new();

    // Single account: the stack creates the bucket; scheduled GC on; a break-glass role named.
    let gc_arn = role_arn(APP_ACCOUNT, "GcRole");
    let break_glass = format!("arn:aws:iam::{APP_ACCOUNT}:role/break-glass");
    let app_subs: Vec<(&str, &str)> = vec![
        ("AWS::AccountId", APP_ACCOUNT),
        ("VaultBucket", bucket),
        ("VaultBucketName", bucket),
        ("VaultBucket.Arn", &bucket_arn),
        ("VaultPrefix", &prefix),
        ("LockMode", mode),
        ("GcRole.Arn", &gc_arn),
        ("BreakGlassPrincipalArn", &break_glass),
    ];
    let app_conditions = [
        ("CreateBucket", true),
        ("ScheduledGcEnabled", true),
        ("HasMaintenancePrincipal", false),
        ("HasBreakGlassPrincipal", true),
        ("HasKmsKey", false),
        ("HasRestoreSecrets", false),
    ];
    let r = Renderer::new(&app_t, &app_subs).with_conditions(&app_conditions);
    out.push(Deployment {
        name: format!("template.yaml/{mode}"),
        bucket: bucket.to_owned(),
        bucket_account: APP_ACCOUNT,
        roles: ROLES
            .iter()
            .map(|role| {
                (
                    *role,
                    (
                        role_policy(&app_t, &r, role),
                        role_arn(APP_ACCOUNT, role),
                        APP_ACCOUNT,
                    ),
                )
            })
            .collect(),
        bucket_policy: bucket_policy(&app_t, &r, "VaultBucketPolicy"),
        admin: (
            admin_policy(),
            format!("arn:aws:iam::{APP_ACCOUNT}:role/admin"),
            APP_ACCOUNT,
        ),
        max_retention_days: app_t["Parameters"]["MaxRetentionDays"]["Default"]
            .as_u64()
            .unwrap(),
    });

    // Separate vault account with its own KMS key: backup and restore roles from the source
    // account, GC as the vault account's maintenance role (docs/deploy.md), a break-glass role
    // there.
    let backup_arn = role_arn(APP_ACCOUNT, "BackupRole");
    let restore_arn = role_arn(APP_ACCOUNT, "RestoreRole");
    let maint_arn = role_arn(VAULT_ACCOUNT, "GcRole");
    let vault_break_glass = format!("arn:aws:iam::{VAULT_ACCOUNT}:role/break-glass");
    let vault_subs: Vec<(&str, &str)> = vec![
        ("AWS::AccountId", VAULT_ACCOUNT),
        ("VaultBucket", bucket),
        ("VaultBucket.Arn", &bucket_arn),
        ("VaultPrefix", &prefix),
        ("LockMode", mode),
        ("BackupPrincipalArn", &backup_arn),
        ("RestorePrincipalArn", &restore_arn),
        ("MaintenancePrincipalArn", &maint_arn),
        ("BreakGlassPrincipalArn", &vault_break_glass),
        (
            "VaultKey.Arn",
            "arn:aws:kms:us-east-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
    ];
    let vr = Renderer::new(&vault_t, &vault_subs).with_conditions(&[
        ("HasRestorePrincipal", true),
        ("HasMaintenancePrincipal", true),
        ("HasBreakGlassPrincipal", true),
        ("ConditionalBlobWrites", true),
        // With the vault's own key: its bucket guards must admit the code's writes too.
        ("CreateKey", true),
        ("HasKmsKey", false),
        ("UseKms", true),
    ]);
    // The source stack's roles point at the existing bucket.
    let mut src_conditions = app_conditions.to_vec();
    src_conditions[0] = ("CreateBucket", false);
    let src = Renderer::new(&app_t, &app_subs).with_conditions(&src_conditions);
    let vault_gc = Renderer::new(
        &app_t,
        &[
            ("AWS::AccountId", VAULT_ACCOUNT),
            ("VaultBucketName", bucket),
            ("VaultPrefix", &prefix),
        ],
    )
    .with_conditions(&src_conditions);
    let mut roles = BTreeMap::new();
    roles.insert(
        "BackupRole",
        (
            role_policy(&app_t, &src, "BackupRole"),
            backup_arn,
            APP_ACCOUNT,
        ),
    );
    roles.insert(
        "RestoreRole",
        (
            role_policy(&app_t, &src, "RestoreRole"),
            restore_arn,
            APP_ACCOUNT,
        ),
    );
    roles.insert(
        "GcRole",
        (
            role_policy(&app_t, &vault_gc, "GcRole"),
            maint_arn,
            VAULT_ACCOUNT,
        ),
    );
    out.push(Deployment {
        name: format!("vault-account.yaml/{mode}"),
        bucket: bucket.to_owned(),
        bucket_account: VAULT_ACCOUNT,
        roles,
        bucket_policy: bucket_policy(&vault_t, &vr, "VaultBucketPolicy"),
        admin: (
            admin_policy(),
            format!("arn:aws:iam::{VAULT_ACCOUNT}:role/admin"),
            VAULT_ACCOUNT,
        ),
        max_retention_days: vault_t["Parameters"]["MaxRetentionDays"]["Default"]
            .as_u64()
            .unwrap(),
    });
    out
}

// ------------------------------------------------------------------------------------------
// Harmful requests
// ------------------------------------------------------------------------------------------

/// What an attacker (or a mistake) would send, as calls any principal may try.
fn harmful(mode: LockMode, max_days: u64) -> Vec<(String, Call)> {
    let pinned = mode_name(mode);
    let other = match mode {
        LockMode::Compliance => "GOVERNANCE",
        LockMode::Governance => "COMPLIANCE",
    };
    let blob = format!("{PREFIX}/blobs/sha256/{}", "ab".repeat(32));
    let call = |action: &str, key: Option<&str>, keys: &[(&str, Option<&str>)]| Call {
        role: "",
        op: action.trim_start_matches("s3:").to_owned(),
        action: action.to_owned(),
        key: key.map(str::to_owned),
        keys: keys
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect(),
        checksum: "SHA256".into(),
        ecr_resource: None,
    };
    let write = |key: &str, mode: &str, inm: Option<&str>, days: &str| {
        call(
            "s3:PutObject",
            Some(key),
            &[
                ("s3:ObjectCreationOperation", Some("true")),
                ("s3:if-none-match", inm),
                ("s3:object-lock-mode", Some(mode)),
                ("s3:object-lock-remaining-retention-days", Some(days)),
            ],
        )
    };
    let too_long = (max_days + 1).to_string();
    let mut out = vec![
        (
            "delete a version".to_owned(),
            call("s3:DeleteObjectVersion", Some(&blob), &[]),
        ),
        (
            "shorten a lock (governance bypass)".to_owned(),
            call("s3:BypassGovernanceRetention", Some(&blob), &[]),
        ),
        (
            "retain beyond the maximum".to_owned(),
            call(
                "s3:PutObjectRetention",
                Some(&blob),
                &[
                    ("s3:object-lock-mode", Some(pinned)),
                    ("s3:object-lock-remaining-retention-days", Some(&too_long)),
                ],
            ),
        ),
        (
            format!("write with lock mode {other}"),
            write(&blob, other, Some("*"), "5"),
        ),
    ];
    for rel in [
        "blobs/sha256/00",
        "snapshots/2026-12-06T00-00-00Z.json",
        "events/x.json",
        "oci-layout",
    ] {
        out.push((
            format!("overwrite {rel} without If-None-Match"),
            write(&format!("{PREFIX}/{rel}"), pinned, None, "5"),
        ));
    }
    let mut sse_c = write(&blob, pinned, Some("*"), "5");
    sse_c.keys.insert(
        "s3:x-amz-server-side-encryption-customer-algorithm".into(),
        Some("AES256".into()),
    );
    out.push((
        "write with a customer-provided key (SSE-C)".to_owned(),
        sse_c,
    ));
    for action in [
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutEncryptionConfiguration",
        "s3:PutReplicationConfiguration",
        "s3:PutBucketVersioning",
    ] {
        out.push((format!("bucket change {action}"), call(action, None, &[])));
    }
    out
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_code_sends_is_allowed_and_every_harmful_one_is_denied() {
    let stack = Stack::shared().await.unwrap();
    let mut distinct_per_mode: Vec<usize> = Vec::new();
    let mut checks = 0usize;
    let mut failures: Vec<String> = Vec::new();
    let mut matrix: Vec<String> = Vec::new();
    for mode in [LockMode::Compliance, LockMode::Governance] {
        let (bucket, sent) = record_run(stack, mode).await;
        // Mode and date of every PutObjectRetention target, read back from S3.
        let mut retention_of = BTreeMap::new();
        let reader = Vault::new(
            stack.s3.client(),
            VaultLocation::parse(&format!("s3://{bucket}")).unwrap(),
            VaultOptions::default(),
        )
        .unwrap();
        for s in &sent {
            if s.rec.method == "PUT"
                && query_pairs(s.rec.query.as_deref()).contains_key("retention")
            {
                let key = s
                    .rec
                    .path
                    .trim_start_matches('/')
                    .split_once('/')
                    .unwrap()
                    .1;
                if let Some((m, until)) = reader.retention(key).await.unwrap() {
                    let m = mode_name(m).to_owned();
                    retention_of.insert(key.to_owned(), (m, until));
                }
            }
        }
        let now = Utc::now();
        let calls: Vec<Call> = sent
            .iter()
            .filter_map(|s| to_call(s, now, &retention_of))
            .collect();
        // The code writes in the configured mode, always with a checksum, and every write
        // outside staging/ is conditional.
        for c in calls.iter().filter(|c| c.action == "s3:PutObject") {
            let key = c.key.as_deref().unwrap_or_default();
            if let Some(Some(m)) = c.keys.get("s3:object-lock-mode") {
                assert_eq!(m, mode_name(mode), "{}", c.signature());
            }
            // A body always carries a checksum; CompleteMultipartUpload's are its parts'.
            if c.op != "CompleteMultipartUpload" {
                assert_ne!(
                    c.checksum,
                    "-",
                    "write without a checksum: {}",
                    c.signature()
                );
            }
            let creation = c.keys["s3:ObjectCreationOperation"].as_deref() == Some("true");
            if creation && !key_class(key).starts_with("staging/") {
                assert!(
                    c.keys["s3:if-none-match"].is_some(),
                    "unconditional write: {}",
                    c.signature()
                );
            }
        }
        // Multipart uploads check their parts and the whole object with CRC64NVME, not a
        // second SHA-256 (decision 0011), and restore streams blobs without asking S3 for the
        // checksum the SDK would re-hash (restore hashes them itself).
        let multipart = [
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
        ];
        for op in multipart {
            assert!(calls.iter().any(|c| c.op == op), "no {op} recorded");
        }
        for c in calls.iter().filter(|c| multipart.contains(&c.op.as_str())) {
            assert_eq!(c.checksum, "CRC64NVME", "{}", c.signature());
        }
        assert!(
            sent.iter().any(|s| s.role == "RestoreRole"
                && s.rec.method == "GET"
                && s.rec.path.contains("/blobs/sha256/")
                && !s.rec.headers.contains_key("x-amz-checksum-mode")),
            "every restore GET asked for a checksum the SDK would re-hash"
        );
        // Listings name the vault prefix (the grants' s3:prefix condition relies on it).
        for c in calls
            .iter()
            .filter(|c| ["s3:ListBucket", "s3:ListBucketVersions"].contains(&c.action.as_str()))
        {
            let prefix = c.keys["s3:prefix"].clone().unwrap_or_default();
            assert!(
                prefix.starts_with(&format!("{PREFIX}/")),
                "listing outside the prefix ({prefix:?}): {}",
                c.signature()
            );
        }
        let mut distinct: BTreeMap<String, Vec<&Call>> = BTreeMap::new();
        for c in &calls {
            distinct.entry(c.signature()).or_default().push(c);
        }
        distinct_per_mode.push(distinct.len());
        println!(
            "\n== {} recorded requests, {} distinct ({} run)",
            calls.len(),
            distinct.len(),
            mode_name(mode)
        );
        for d in deployments(&bucket, mode) {
            for (sig, group) in &distinct {
                checks += 1;
                // Every call of the group, so the largest retention of a kind is judged too.
                let mut verdict = (Decision::Allowed, String::new());
                for c in group {
                    let v = d.judge(c.role, c);
                    if v.0 != Decision::Allowed {
                        verdict = v;
                        break;
                    }
                }
                let tolerated = tolerated_denial(group[0]);
                match (verdict.0, tolerated) {
                    (Decision::Allowed, None) => {}
                    (Decision::Allowed, Some(why)) => failures.push(format!(
                        "{}: {sig}: allowed, but listed as a tolerated denial ({why})",
                        d.name
                    )),
                    (_, Some(why)) => println!(
                        "   {}: tolerated denial ({}): {sig} ({why})",
                        d.name, verdict.1
                    ),
                    (v, None) => {
                        failures.push(format!("{}: {sig}: {v:?} by {}", d.name, verdict.1))
                    }
                }
            }
            for sig in distinct.keys() {
                if d.name.starts_with("template.yaml") {
                    println!("   {sig}");
                }
            }
            // The harmful matrix, for every role and the account's administrator.
            for (what, call) in harmful(mode, d.max_retention_days) {
                let mut row = format!("{:<26} {:<52}", d.name, what);
                for who in ["BackupRole", "RestoreRole", "GcRole", "admin"] {
                    let (v, sid) = d.judge(who, &call);
                    let expected_exception =
                        who == "GcRole" && call.action == "s3:DeleteObjectVersion";
                    let cell = match (v, expected_exception) {
                        (Decision::ExplicitlyDenied, false) => sid,
                        (Decision::Allowed, true) => {
                            "allowed: GC's one power; Object Lock refuses locked versions (tests/gc.rs)"
                                .to_owned()
                        }
                        (v, _) => {
                            failures.push(format!("{}: {what} by {who}: {v:?} {sid}", d.name));
                            format!("NOT DENIED ({v:?})")
                        }
                    };
                    row.push_str(&format!(" | {who}: {cell}"));
                }
                matrix.push(row);
            }
        }
    }
    println!(
        "\nconformance: distinct requests {distinct_per_mode:?} (COMPLIANCE run, GOVERNANCE run) \
         x 2 templates = {checks} checks, each run judged against policies pinned to its mode"
    );
    println!("\nharmful-request matrix (denying statement per principal):");
    for row in &matrix {
        println!("{row}");
    }
    println!(
        "restore to a non-approved target: refused by the restore function before any \
         connection (crates/engine/src/egress.rs; tests/restore_egress.rs)"
    );
    assert!(
        failures.is_empty(),
        "failures:\n  {}",
        failures.join("\n  ")
    );
}

/// Requests the code sends knowing a deployed policy refuses them, and tolerates: the backup
/// role removing a finished staging record (best effort, docs in crates/vault/src/staging.rs).
fn tolerated_denial(c: &Call) -> Option<&'static str> {
    let staging = c
        .key
        .as_deref()
        .is_some_and(|k| key_class(k) == "staging/uploads/*");
    (c.role == "BackupRole" && c.action == "s3:DeleteObject" && staging)
        .then_some("staging record removal is best effort; the record expires in a day")
}
