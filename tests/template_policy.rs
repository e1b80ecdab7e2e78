//! Least-privilege checks on the IAM in `template.yaml` and `templates/vault-account.yaml`,
//! with the evaluator in `ecr_vault_testkit::iam` (its doc says how it judges).
//!
//! Besides the decision table, two lints catch drift: an Allow may never name a forbidden
//! action (even if a Deny currently masks it), and a role may not be allowed any action outside
//! its expected list. The negative tests inject a bad statement in memory and expect a report.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use ecr_vault_testkit::iam::*;
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;

// ------------------------------------------------------------------------------------------
// The expectations
// ------------------------------------------------------------------------------------------

const VAULT: &str = "vault-bucket";
const BUCKET_ARN: &str = "arn:aws:s3:::vault-bucket";
const BLOB_ARN: &str = "arn:aws:s3:::vault-bucket/ecr/blobs/sha256/0a1b2c";
const SOURCE_REPO_ARN: &str = "arn:aws:ecr:us-east-1:123456789012:repository/team/app/api";
const RESTORE_REPO_ARN: &str =
    "arn:aws:ecr:eu-west-1:123456789012:repository/restored/team/app/api";

/// Both ways the app template names the vault resolve to the same test bucket.
fn app_subs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("VaultBucket", VAULT),
        ("VaultBucketName", VAULT),
        ("VaultBucket.Arn", BUCKET_ARN),
        ("VaultPrefix", "ecr/"),
        ("WorkQueue.Arn", "arn:aws:sqs:us-east-1:123456789012:work"),
        (
            "FailedEventsQueue.Arn",
            "arn:aws:sqs:us-east-1:123456789012:failed",
        ),
    ]
}

fn app_renderer(template: &Json) -> Renderer {
    Renderer::new(template, &app_subs())
}

/// Actions that would let the backup path destroy or weaken backups.
const BACKUP_FORBIDDEN: &[(&str, &str)] = &[
    ("s3:DeleteObject", BLOB_ARN),
    ("s3:DeleteObjectVersion", BLOB_ARN),
    ("s3:BypassGovernanceRetention", BLOB_ARN),
    ("s3:PutBucketObjectLockConfiguration", BUCKET_ARN),
    ("s3:PutBucketPolicy", BUCKET_ARN),
    ("s3:DeleteBucketPolicy", BUCKET_ARN),
    ("s3:PutLifecycleConfiguration", BUCKET_ARN),
    ("s3:PutBucketVersioning", BUCKET_ARN),
    ("s3:DeleteBucket", BUCKET_ARN),
];

/// What the backup role needs, on which resource.
const BACKUP_NEEDS: &[(&str, &str)] = &[
    ("s3:PutObject", BLOB_ARN),
    ("s3:PutObjectRetention", BLOB_ARN),
    ("s3:GetObject", BLOB_ARN),
    ("s3:GetObjectVersion", BLOB_ARN),
    ("s3:GetObjectRetention", BLOB_ARN),
    ("s3:AbortMultipartUpload", BLOB_ARN),
    ("s3:ListMultipartUploadParts", BLOB_ARN),
    ("s3:ListBucket", BUCKET_ARN),
    ("s3:ListBucketMultipartUploads", BUCKET_ARN),
    ("s3:GetBucketObjectLockConfiguration", BUCKET_ARN),
    ("ecr:GetAuthorizationToken", "*"),
    ("ecr:DescribeRepositories", SOURCE_REPO_ARN),
    ("ecr:DescribeImages", SOURCE_REPO_ARN),
    ("ecr:ListImages", SOURCE_REPO_ARN),
    ("ecr:BatchGetImage", SOURCE_REPO_ARN),
    ("ecr:GetDownloadUrlForLayer", SOURCE_REPO_ARN),
    ("ecr:BatchCheckLayerAvailability", SOURCE_REPO_ARN),
    ("ecr:GetLifecyclePolicy", SOURCE_REPO_ARN),
    ("ecr:GetRepositoryPolicy", SOURCE_REPO_ARN),
    ("ecr:ListTagsForResource", SOURCE_REPO_ARN),
    ("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:work"),
    (
        "sqs:ReceiveMessage",
        "arn:aws:sqs:us-east-1:123456789012:work",
    ),
    (
        "sqs:DeleteMessage",
        "arn:aws:sqs:us-east-1:123456789012:work",
    ),
];

/// Every action pattern the backup role may name in an Allow.
const BACKUP_ALLOWLIST: &[&str] = &[
    "ecr:GetAuthorizationToken",
    "ecr:DescribeRepositories",
    "ecr:ListImages",
    "ecr:DescribeImages",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetLifecyclePolicy",
    "ecr:GetRepositoryPolicy",
    "ecr:ListTagsForResource",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectRetention",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
    "s3:PutObjectRetention",
    "s3:AbortMultipartUpload",
    "kms:GenerateDataKey",
    "kms:Decrypt",
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
];

/// S3 writes and deletes the restore role must never be allowed, anywhere.
const S3_WRITES: &[&str] = &[
    "s3:PutObject",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:PutObjectAcl",
    "s3:PutObjectTagging",
    "s3:PutBucketPolicy",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketVersioning",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectTagging",
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:BypassGovernanceRetention",
    "s3:AbortMultipartUpload",
];

/// Everything wrong with the backup role, as readable findings. Empty = compliant.
fn backup_role_findings(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for (action, res) in BACKUP_FORBIDDEN {
        let d = p.decide(&Request::new(action, res));
        if d != Decision::ExplicitlyDenied {
            out.push(format!(
                "{}: {action} on {res} must be explicitly denied, is {d:?}",
                p.name
            ));
        }
    }
    for (action, res) in BACKUP_NEEDS {
        let d = p.decide(&Request::new(action, res));
        if d != Decision::Allowed {
            out.push(format!("{}: needs {action} on {res}, is {d:?}", p.name));
        }
    }
    for s in p.allow_statements() {
        if s.not_action {
            out.push(format!(
                "{}: Allow statement {} uses NotAction (grants everything else)",
                p.name, s.sid
            ));
        }
        for a in &s.actions {
            if BACKUP_FORBIDDEN.iter().any(|(f, _)| glob(a, f, true)) {
                out.push(format!(
                    "{}: Allow statement {} names forbidden action pattern {a}",
                    p.name, s.sid
                ));
            }
            if !BACKUP_ALLOWLIST.iter().any(|ok| ok.eq_ignore_ascii_case(a)) {
                out.push(format!(
                    "{}: Allow statement {} grants {a}, which is not on the backup allowlist",
                    p.name, s.sid
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Everything wrong with the restore role. Empty = compliant.
fn restore_role_findings(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for action in S3_WRITES {
        for res in [BLOB_ARN, BUCKET_ARN, "arn:aws:s3:::any-other-bucket/key"] {
            let d = p.decide(&Request::new(action, res));
            if d == Decision::Allowed {
                out.push(format!("{}: {action} on {res} is allowed", p.name));
            }
        }
    }
    for s in p.allow_statements() {
        if s.not_action {
            out.push(format!(
                "{}: Allow statement {} uses NotAction (grants everything else)",
                p.name, s.sid
            ));
        }
        for a in &s.actions {
            // A pattern that could match any S3 put/delete (s3:*, s3:Put*, *) is a finding
            // even when no listed action happens to hit it.
            for probe in ["s3:PutSomethingNew", "s3:DeleteSomethingNew"] {
                if glob(a, probe, true) {
                    out.push(format!(
                        "{}: Allow statement {} pattern {a} covers S3 writes/deletes",
                        p.name, s.sid
                    ));
                }
            }
        }
    }
    let needs: &[(&str, &str)] = &[
        ("s3:GetObject", BLOB_ARN),
        ("s3:GetObjectRetention", BLOB_ARN),
        ("s3:ListBucket", BUCKET_ARN),
        ("ecr:GetAuthorizationToken", "*"),
        ("ecr:CreateRepository", RESTORE_REPO_ARN),
        ("ecr:InitiateLayerUpload", RESTORE_REPO_ARN),
        ("ecr:UploadLayerPart", RESTORE_REPO_ARN),
        ("ecr:CompleteLayerUpload", RESTORE_REPO_ARN),
        ("ecr:BatchCheckLayerAvailability", RESTORE_REPO_ARN),
        ("ecr:PutImage", RESTORE_REPO_ARN),
        ("ecr:BatchGetImage", RESTORE_REPO_ARN),
        ("ecr:PutLifecyclePolicy", RESTORE_REPO_ARN),
        ("ecr:SetRepositoryPolicy", RESTORE_REPO_ARN),
    ];
    for (action, res) in needs {
        let d = p.decide(&Request::new(action, res));
        if d != Decision::Allowed {
            out.push(format!("{}: needs {action} on {res}, is {d:?}", p.name));
        }
    }
    // Settings go into CreateRepository itself; the code never calls these (crates/ecr).
    for action in [
        "ecr:PutImageTagMutability",
        "ecr:PutImageScanningConfiguration",
        "ecr:TagResource",
    ] {
        let d = p.decide(&Request::new(action, RESTORE_REPO_ARN));
        if d == Decision::Allowed {
            out.push(format!("{}: {action} is allowed but never called", p.name));
        }
    }
    for action in ["ecr:BatchDeleteImage", "ecr:DeleteRepository"] {
        let d = p.decide(&Request::new(action, RESTORE_REPO_ARN));
        if d != Decision::ExplicitlyDenied {
            out.push(format!(
                "{}: {action} must be explicitly denied, is {d:?}",
                p.name
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn app() -> (Json, Renderer) {
    let t = load_template("template.yaml");
    let r = app_renderer(&t);
    (t, r)
}

fn assert_no_findings(findings: Vec<String>) {
    assert!(
        findings.is_empty(),
        "findings:\n  {}",
        findings.join("\n  ")
    );
}

// ------------------------------------------------------------------------------------------
// App template: backup role
// ------------------------------------------------------------------------------------------

#[test]
fn backup_role_meets_least_privilege_table() {
    let (t, r) = app();
    assert_no_findings(backup_role_findings(&role_policy(&t, &r, "BackupRole")));
}

#[test]
fn backup_role_cannot_delete_object_versions() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "BackupRole");
    for action in [
        "s3:DeleteObjectVersion",
        "s3:DeleteObject",
        "S3:deleteobjectversion",
    ] {
        assert_eq!(
            p.decide(&Request::new(action, BLOB_ARN)),
            Decision::ExplicitlyDenied,
            "{action}"
        );
    }
}

#[test]
fn backup_role_cannot_bypass_governance_or_change_lock_configuration() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "BackupRole");
    assert_eq!(
        p.decide(&Request::new("s3:BypassGovernanceRetention", BLOB_ARN)),
        Decision::ExplicitlyDenied
    );
    for action in [
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketPolicy",
        "s3:PutLifecycleConfiguration",
    ] {
        assert_eq!(
            p.decide(&Request::new(action, BUCKET_ARN)),
            Decision::ExplicitlyDenied,
            "{action}"
        );
    }
}

#[test]
fn backup_role_can_write_locked_objects_and_read_ecr() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "BackupRole");
    for (action, res) in [
        ("s3:PutObject", BLOB_ARN),
        ("s3:PutObjectRetention", BLOB_ARN),
        ("ecr:BatchGetImage", SOURCE_REPO_ARN),
        ("ecr:GetDownloadUrlForLayer", SOURCE_REPO_ARN),
    ] {
        assert_eq!(
            p.decide(&Request::new(action, res)),
            Decision::Allowed,
            "{action}"
        );
    }
}

#[test]
fn backup_role_writes_only_under_the_vault_prefix() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "BackupRole");
    for res in [
        "arn:aws:s3:::vault-bucket/other-prefix/blobs/sha256/0a",
        "arn:aws:s3:::some-other-bucket/ecr/blobs/sha256/0a",
    ] {
        assert_ne!(
            p.decide(&Request::new("s3:PutObject", res)),
            Decision::Allowed,
            "{res}"
        );
    }
}

#[test]
fn backup_role_cannot_change_the_source_registry() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "BackupRole");
    for action in [
        "ecr:BatchDeleteImage",
        "ecr:DeleteRepository",
        "ecr:PutImage",
    ] {
        assert_eq!(
            p.decide(&Request::new(action, SOURCE_REPO_ARN)),
            Decision::ExplicitlyDenied,
            "{action}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// App template: restore role
// ------------------------------------------------------------------------------------------

#[test]
fn restore_role_meets_least_privilege_table() {
    let (t, r) = app();
    assert_no_findings(restore_role_findings(&role_policy(&t, &r, "RestoreRole")));
}

#[test]
fn restore_role_cannot_put_or_delete_anything_in_s3() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "RestoreRole");
    for action in S3_WRITES {
        assert_ne!(
            p.decide(&Request::new(action, BLOB_ARN)),
            Decision::Allowed,
            "{action}"
        );
    }
}

#[test]
fn vault_prefix_pattern_admits_exactly_what_the_code_accepts() {
    let candidates = [
        "ecr/",
        "ecr/prod/",
        "a/",
        "a.b-c_d/",
        ".../",
        "x.y/",
        "/",
        "ecr",
        "./",
        "../",
        "a/../",
        "a//",
        "a!/",
        "a'b/",
        "(x)/",
        "a b/",
        "/ecr/",
        "a/./b/",
        "..a/",
    ];
    for rel in ["template.yaml", "templates/vault-account.yaml"] {
        let t = load_template(rel);
        let pattern = t["Parameters"]["VaultPrefix"]["AllowedPattern"]
            .as_str()
            .unwrap();
        let re = regex_lite::Regex::new(pattern).unwrap();
        assert!(re.is_match(""), "{rel}: empty prefix");
        for p in candidates {
            // Accepted as written: "a//" parses too, but as the prefix "a".
            let code = ecr_vault_vault::VaultLocation::parse(&format!("s3://bucket/{p}"))
                .is_ok_and(|l| !l.prefix.is_empty() && format!("{}/", l.prefix) == p);
            assert_eq!(re.is_match(p), code, "{rel}: {p:?}");
        }
    }
}

#[test]
fn work_item_retries_fit_the_fan_out_run_and_the_queue() {
    let (t, _) = app();
    let max = t["Parameters"]["WorkMaxReceiveCount"]["MaxValue"]
        .as_u64()
        .unwrap();
    let queue = &resources(&t)["WorkQueue"]["Properties"];
    let visibility = queue["VisibilityTimeout"].as_u64().unwrap();
    let retention = queue["MessageRetentionPeriod"].as_u64().unwrap();
    let run_timeout: u64 = resources(&t)["BackupFunction"]["Properties"]["Environment"]
        ["Variables"]["ECR_VAULT_FANOUT_RUN_TIMEOUT_SECS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        max * visibility < run_timeout,
        "{max} x {visibility} >= {run_timeout}"
    );
    assert!(
        max * visibility < retention,
        "{max} x {visibility} >= {retention}"
    );
}

#[test]
fn restore_role_reads_only_the_configured_registry_secrets() {
    let t = load_template("template.yaml");
    let a = "arn:aws:secretsmanager:us-east-1:123456789012:secret:reg-a-AbCdEf";
    let b = "arn:aws:secretsmanager:us-east-1:123456789012:secret:reg-b-GhIjKl";
    let both = format!("{a},{b}");
    let mut subs = app_subs();
    subs.push(("RestoreRegistrySecretArns", both.as_str()));
    let r = Renderer::new(&t, &subs);
    let p = role_policy(&t, &r, "RestoreRole");
    for arn in [a, b] {
        assert_eq!(
            p.decide(&Request::new("secretsmanager:GetSecretValue", arn)),
            Decision::Allowed,
            "{arn}"
        );
    }
    let other = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod-db-MnOpQr";
    assert_eq!(
        p.decide(&Request::new("secretsmanager:GetSecretValue", other)),
        Decision::ImplicitlyDenied
    );
    for role in ["BackupRole", "GcRole"] {
        let p = role_policy(&t, &r, role);
        assert_eq!(
            p.decide(&Request::new("secretsmanager:GetSecretValue", a)),
            Decision::ImplicitlyDenied,
            "{role}"
        );
    }
}

#[test]
fn restore_function_gets_its_egress_rule_and_never_the_test_loopback_switch() {
    let (t, _) = app();
    let env = &resources(&t)["RestoreFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["ECR_VAULT_APPROVED_REGISTRIES"],
        json!({"Ref": "ApprovedRestoreRegistries"})
    );
    assert_eq!(
        env["ECR_VAULT_REGISTRY_SECRET_ARNS"],
        json!({"Ref": "RestoreRegistrySecretArns"})
    );
    assert_eq!(t["Parameters"]["ApprovedRestoreRegistries"]["Default"], "");
    let text = std::fs::read_to_string(repo_file("template.yaml")).unwrap();
    assert!(
        !text.contains(ecr_vault_engine::egress::TEST_ALLOW_LOOPBACK_VAR),
        "the template must never admit loopback restore targets"
    );
}

// ------------------------------------------------------------------------------------------
// App template: wiring
// ------------------------------------------------------------------------------------------

#[test]
fn functions_use_the_checked_roles_not_sam_policy_templates() {
    let (t, _) = app();
    for (func, role) in [
        ("BackupFunction", "BackupRole"),
        ("RestoreFunction", "RestoreRole"),
        ("GcFunction", "GcRole"),
        ("DrillFunction", "DrillRole"),
    ] {
        let props = &resources(&t)[func]["Properties"];
        assert!(
            props.get("Policies").is_none(),
            "{func} must not use SAM Policies"
        );
        assert_eq!(
            props["Role"],
            json!({"Fn::GetAtt": [role, "Arn"]}),
            "{func}"
        );
    }
    for (name, res) in resources(&t) {
        if res["Type"] == "AWS::Serverless::Function" {
            assert!(
                [
                    "BackupFunction",
                    "RestoreFunction",
                    "GcFunction",
                    "DrillFunction"
                ]
                .contains(&name.as_str()),
                "unexpected function {name}: give it a checked role"
            );
        }
    }
}

#[test]
fn functions_get_every_configuration_variable() {
    let (t, _) = app();
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    let backup = &resources(&t)["BackupFunction"]["Properties"]["Environment"]["Variables"];
    for var in [
        "ECR_VAULT_BUCKET",
        "ECR_VAULT_PREFIX",
        "ECR_VAULT_LOCK_MODE",
        "ECR_VAULT_RETENTION_DAYS",
        "ECR_VAULT_LOCK_SLACK_DAYS",
        "ECR_VAULT_REPOSITORIES",
        "ECR_VAULT_EXCLUDE_REPOSITORIES",
        "ECR_VAULT_TAGS",
        "ECR_VAULT_EXCLUDE_TAGS",
        "ECR_VAULT_IMAGE_CONCURRENCY",
        "ECR_VAULT_PART_SIZE_MIB",
        "ECR_VAULT_PARTS_IN_FLIGHT",
        "ECR_VAULT_STORAGE_CLASS",
    ] {
        assert!(globals.get(var).is_some(), "Globals lacks {var}");
    }
    assert!(backup.get("ECR_VAULT_WORK_QUEUE_URL").is_some());
    for func in ["BackupFunction", "RestoreFunction"] {
        let logging = &resources(&t)[func]["Properties"]["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{func}");
    }
}

#[test]
fn work_queue_visibility_is_at_least_six_function_timeouts() {
    let (t, _) = app();
    let timeout = t["Globals"]["Function"]["Timeout"]
        .as_u64()
        .expect("numeric global timeout");
    let vis = resources(&t)["WorkQueue"]["Properties"]["VisibilityTimeout"]
        .as_u64()
        .expect("numeric visibility timeout");
    assert!(vis >= 6 * timeout, "visibility {vis} < 6 x {timeout}");
    let sqs = &resources(&t)["BackupFunction"]["Properties"]["Events"]["WorkItems"];
    assert_eq!(
        sqs["Properties"]["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
}

#[test]
fn created_vault_bucket_is_locked_private_and_retained() {
    let (t, r) = app();
    let b = &resources(&t)["VaultBucket"];
    assert_eq!(b["DeletionPolicy"], "Retain");
    assert_eq!(b["UpdateReplacePolicy"], "Retain");
    let p = &b["Properties"];
    assert_eq!(p["ObjectLockEnabled"], true);
    assert_eq!(p["VersioningConfiguration"]["Status"], "Enabled");
    assert_eq!(p["ObjectLockConfiguration"]["ObjectLockEnabled"], "Enabled");
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(p["PublicAccessBlockConfiguration"][k], true, "{k}");
    }
    assert_eq!(
        p["OwnershipControls"]["Rules"][0]["ObjectOwnership"],
        "BucketOwnerEnforced"
    );
    let policy = bucket_policy(&t, &r, "VaultBucketPolicy");
    let plain_http = Request::new("s3:GetObject", BLOB_ARN)
        .by("arn:aws:iam::123456789012:role/anyone", "123456789012")
        .with_key("aws:SecureTransport", Some("false"));
    assert_eq!(policy.decide(&plain_http), Decision::ExplicitlyDenied);
    let delete = Request::new("s3:DeleteObjectVersion", BLOB_ARN)
        .by("arn:aws:iam::123456789012:role/admin", "123456789012");
    assert_eq!(policy.decide(&delete), Decision::ExplicitlyDenied);
}

// ------------------------------------------------------------------------------------------
// Vault-account template: bucket policy
// ------------------------------------------------------------------------------------------

const SRC_BACKUP: &str = "{BackupPrincipalArn}";
const SRC_ACCOUNT: &str = "{BackupPrincipalArn}#account";
const RESTORER: &str = "{RestorePrincipalArn}";
const RESTORER_ACCOUNT: &str = "{RestorePrincipalArn}#account";

fn vault() -> (Json, Renderer) {
    let t = load_template("templates/vault-account.yaml");
    let r = Renderer::new(
        &t,
        &[
            ("VaultBucket.Arn", BUCKET_ARN),
            ("VaultBucket", VAULT),
            ("VaultPrefix", "ecr/"),
        ],
    );
    (t, r)
}

fn as_backup(action: &str, res: &str) -> Request {
    Request::new(action, res).by(SRC_BACKUP, SRC_ACCOUNT)
}

#[test]
fn vault_lets_the_backup_role_write_and_read_but_not_destroy() {
    let (t, r) = vault();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    for (action, res) in [
        ("s3:PutObject", BLOB_ARN),
        ("s3:PutObjectRetention", BLOB_ARN),
        ("s3:AbortMultipartUpload", BLOB_ARN),
        ("s3:ListMultipartUploadParts", BLOB_ARN),
        ("s3:GetObject", BLOB_ARN),
        ("s3:GetObjectRetention", BLOB_ARN),
        ("s3:ListBucket", BUCKET_ARN),
        ("s3:GetBucketObjectLockConfiguration", BUCKET_ARN),
    ] {
        assert_eq!(
            p.decide(&as_backup(action, res)),
            Decision::Allowed,
            "{action}"
        );
    }
    for (action, res) in [
        ("s3:DeleteObjectVersion", BLOB_ARN),
        ("s3:DeleteObject", BLOB_ARN),
        ("s3:BypassGovernanceRetention", BLOB_ARN),
        ("s3:PutBucketObjectLockConfiguration", BUCKET_ARN),
        ("s3:PutBucketPolicy", BUCKET_ARN),
    ] {
        assert_eq!(
            p.decide(&as_backup(action, res)),
            Decision::ExplicitlyDenied,
            "{action}"
        );
    }
}

#[test]
fn vault_denies_everyone_version_deletion_and_governance_bypass() {
    let (t, r) = vault();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    let vault_admin = "arn:aws:iam::123456789012:role/vault-admin";
    for action in ["s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"] {
        let req = Request::new(action, BLOB_ARN).by(vault_admin, "123456789012");
        assert_eq!(p.decide(&req), Decision::ExplicitlyDenied, "{action}");
    }
    let req = Request::new("s3:PutBucketObjectLockConfiguration", BUCKET_ARN)
        .by(vault_admin, "123456789012");
    assert_eq!(p.decide(&req), Decision::ExplicitlyDenied);
}

#[test]
fn vault_bounds_the_retention_a_writer_may_set() {
    let (t, r) = vault();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    let max: u64 = t["Parameters"]["MaxRetentionDays"]["Default"]
        .as_u64()
        .expect("numeric default");
    for action in ["s3:PutObject", "s3:PutObjectRetention"] {
        let too_long = as_backup(action, BLOB_ARN)
            .with_key(
                "s3:object-lock-remaining-retention-days",
                Some(&(max + 1).to_string()),
            )
            .with_key("s3:object-lock-mode", Some("COMPLIANCE"))
            .with_key("s3:if-none-match", Some("*"))
            .with_key("s3:ObjectCreationOperation", Some("true"));
        assert_eq!(p.decide(&too_long), Decision::ExplicitlyDenied, "{action}");
        let fine = as_backup(action, BLOB_ARN)
            .with_key("s3:object-lock-remaining-retention-days", Some("37"))
            .with_key("s3:object-lock-mode", Some("COMPLIANCE"))
            .with_key("s3:if-none-match", Some("*"))
            .with_key("s3:ObjectCreationOperation", Some("true"));
        assert_eq!(p.decide(&fine), Decision::Allowed, "{action}");
        let other_mode = as_backup(action, BLOB_ARN)
            .with_key("s3:object-lock-remaining-retention-days", Some("37"))
            .with_key("s3:object-lock-mode", Some("GOVERNANCE"));
        assert_eq!(
            p.decide(&other_mode),
            Decision::ExplicitlyDenied,
            "{action}"
        );
    }
    // UploadPart carries no lock headers and must stay possible.
    let part = as_backup("s3:PutObject", BLOB_ARN)
        .with_key("s3:object-lock-remaining-retention-days", None)
        .with_key("s3:object-lock-mode", None)
        .with_key("s3:if-none-match", None)
        .with_key("s3:ObjectCreationOperation", Some("false"));
    assert_eq!(p.decide(&part), Decision::Allowed);
}

#[test]
fn vault_refuses_writes_without_if_none_match_everywhere_but_staging() {
    let (t, r) = vault();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    let blind = as_backup("s3:PutObject", BLOB_ARN)
        .with_key("s3:object-lock-remaining-retention-days", Some("37"))
        .with_key("s3:object-lock-mode", Some("COMPLIANCE"))
        .with_key("s3:if-none-match", None)
        .with_key("s3:ObjectCreationOperation", Some("true"));
    // The Deny sits behind a parameter, so it is "not guaranteed" for the evaluator; check the
    // default branch explicitly.
    assert_eq!(
        t["Parameters"]["RequireConditionalBlobWrites"]["Default"],
        "true"
    );
    let written = p
        .statements
        .iter()
        .flat_map(|w| w.alternatives.iter().flatten())
        .find(|s| s.sid == "DenyUnconditionalOverwrites")
        .expect("DenyUnconditionalOverwrites statement");
    assert_eq!(written.applies(&blind), Tri::True);
    for key in ["snapshots/x.json", "events/x.json", "oci-layout"] {
        let mut other = blind.clone();
        other.resource = format!("arn:aws:s3:::vault-bucket/ecr/{key}");
        assert_eq!(written.applies(&other), Tri::True, "{key}");
    }
    let mut staging = blind.clone();
    staging.resource = "arn:aws:s3:::vault-bucket/ecr/staging/uploads/x.json".into();
    assert_eq!(written.applies(&staging), Tri::False);
}

#[test]
fn vault_gives_the_restore_role_read_only_access() {
    let (t, r) = vault();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    let as_restore = |a: &str, res: &str| Request::new(a, res).by(RESTORER, RESTORER_ACCOUNT);
    assert_eq!(
        p.decide(&as_restore("s3:GetObject", BLOB_ARN)),
        Decision::Allowed
    );
    assert_eq!(
        p.decide(&as_restore("s3:ListBucket", BUCKET_ARN)),
        Decision::Allowed
    );
    for action in S3_WRITES {
        assert_ne!(
            p.decide(&as_restore(action, BLOB_ARN)),
            Decision::Allowed,
            "{action}"
        );
    }
}

#[test]
fn vault_grants_nothing_to_other_principals() {
    let (t, r) = vault();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    let stranger = "arn:aws:iam::999999999999:role/attacker";
    for action in [
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "s3:DeleteObject",
    ] {
        let req = Request::new(action, BLOB_ARN).by(stranger, "999999999999");
        assert_ne!(p.decide(&req), Decision::Allowed, "{action}");
    }
}

const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const BREAK_GLASS: &str = "arn:aws:iam::123456789012:role/break-glass";

/// The vault template with its own key, a restore principal and a break-glass role.
fn vault_with_key() -> (Json, Renderer) {
    let t = load_template("templates/vault-account.yaml");
    let r = Renderer::new(
        &t,
        &[
            ("VaultBucket.Arn", BUCKET_ARN),
            ("VaultBucket", VAULT),
            ("VaultPrefix", "ecr/"),
            ("VaultKey.Arn", KEY_ARN),
            (
                "BackupPrincipalArn",
                "arn:aws:iam::111111111111:role/ecr-vault/BackupRole",
            ),
            (
                "RestorePrincipalArn",
                "arn:aws:iam::111111111111:role/ecr-vault/RestoreRole",
            ),
            ("BreakGlassPrincipalArn", BREAK_GLASS),
        ],
    )
    .with_conditions(&[
        ("CreateKey", true),
        ("HasKmsKey", false),
        ("UseKms", true),
        ("HasRestorePrincipal", true),
        ("HasBreakGlassPrincipal", true),
    ]);
    (t, r)
}

#[test]
fn vault_key_cannot_be_deleted_disabled_or_re_owned_except_by_break_glass() {
    let (t, r) = vault_with_key();
    let key = &resources(&t)["VaultKey"];
    assert_eq!(key["DeletionPolicy"], "Retain");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    let p = policy_from_document(&r, "VaultKey", &key["Properties"]["KeyPolicy"]);
    let admin = "arn:aws:iam::123456789012:role/admin";
    let backup = "arn:aws:iam::111111111111:role/ecr-vault/BackupRole";
    for action in [
        "kms:ScheduleKeyDeletion",
        "kms:DisableKey",
        "kms:PutKeyPolicy",
    ] {
        for who in [admin, backup] {
            let account = who.split(':').nth(4).unwrap();
            let req = Request::new(action, KEY_ARN).by(who, account);
            assert_eq!(
                p.decide(&req),
                Decision::ExplicitlyDenied,
                "{action} by {who}"
            );
            assert_eq!(p.denying_sid(&req).as_deref(), Some("DenyKeyDestruction"));
        }
        let req = Request::new(action, KEY_ARN).by(BREAK_GLASS, "123456789012");
        assert_eq!(p.decide(&req), Decision::Allowed, "{action} by break glass");
    }
    // The backup role encrypts and decrypts through S3 only; the restore role only decrypts.
    let via_s3 = |a: &str, who: &str| {
        Request::new(a, KEY_ARN)
            .by(who, "111111111111")
            .with_key("kms:ViaService", Some("s3.us-east-1.amazonaws.com"))
    };
    assert_eq!(
        p.decide(&via_s3("kms:GenerateDataKey", backup)),
        Decision::Allowed
    );
    assert_eq!(p.decide(&via_s3("kms:Decrypt", backup)), Decision::Allowed);
    let direct = Request::new("kms:Decrypt", KEY_ARN)
        .by(backup, "111111111111")
        .with_key("kms:ViaService", None);
    assert_eq!(p.decide(&direct), Decision::ImplicitlyDenied);
    let restore = "arn:aws:iam::111111111111:role/ecr-vault/RestoreRole";
    assert_eq!(p.decide(&via_s3("kms:Decrypt", restore)), Decision::Allowed);
    assert_eq!(
        p.decide(&via_s3("kms:GenerateDataKey", restore)),
        Decision::ImplicitlyDenied
    );
}

#[test]
fn vault_bucket_refuses_customer_provided_keys_and_other_kms_keys() {
    let (t, r) = vault_with_key();
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    let write = || {
        Request::new("s3:PutObject", BLOB_ARN)
            .by(
                "arn:aws:iam::111111111111:role/ecr-vault/BackupRole",
                "111111111111",
            )
            .with_key("s3:object-lock-remaining-retention-days", Some("9"))
            .with_key("s3:object-lock-mode", Some("COMPLIANCE"))
            .with_key("s3:if-none-match", Some("*"))
            .with_key("s3:ObjectCreationOperation", Some("true"))
    };
    let plain = write()
        .with_key("s3:x-amz-server-side-encryption-customer-algorithm", None)
        .with_key("s3:x-amz-server-side-encryption", None)
        .with_key("s3:x-amz-server-side-encryption-aws-kms-key-id", None);
    assert_eq!(p.decide(&plain), Decision::Allowed, "the code's own write");
    for (key, value, sid) in [
        (
            "s3:x-amz-server-side-encryption-customer-algorithm",
            "AES256",
            "DenyCustomerProvidedKeys",
        ),
        (
            "s3:x-amz-server-side-encryption",
            "AES256",
            "DenyOtherEncryption",
        ),
        (
            "s3:x-amz-server-side-encryption-aws-kms-key-id",
            "arn:aws:kms:us-east-1:999999999999:key/attacker",
            "DenyOtherKmsKey",
        ),
    ] {
        let req = plain.clone().with_key(key, Some(value));
        assert_eq!(p.decide(&req), Decision::ExplicitlyDenied, "{key}");
        assert_eq!(p.denying_sid(&req).as_deref(), Some(sid), "{key}");
    }
    // The single-account bucket refuses SSE-C as well.
    let (app_t, app_r) = app();
    let app_p = bucket_policy(&app_t, &app_r, "VaultBucketPolicy");
    let sse_c = Request::new("s3:PutObject", BLOB_ARN)
        .by("arn:aws:iam::123456789012:role/admin", "123456789012")
        .with_key(
            "s3:x-amz-server-side-encryption-customer-algorithm",
            Some("AES256"),
        );
    assert_eq!(
        app_p.denying_sid(&sse_c).as_deref(),
        Some("DenyCustomerProvidedKeys")
    );
}

// ------------------------------------------------------------------------------------------
// Negative tests: the checker must notice a bad change
// ------------------------------------------------------------------------------------------

#[test]
fn checker_reports_an_injected_s3_wildcard_on_the_backup_role() {
    let (t, r) = app();
    let mut p = role_policy(&t, &r, "BackupRole");
    p.inject(
        &r,
        json!({"Sid": "Oops", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}),
    );
    let findings = backup_role_findings(&p);
    assert!(
        findings
            .iter()
            .any(|f| f.contains("Oops") && f.contains("s3:*")),
        "s3:* not reported: {findings:?}"
    );
}

#[test]
fn checker_reports_an_allowed_version_delete_once_the_denies_are_gone() {
    let (t, r) = app();
    let mut p = role_policy(&t, &r, "BackupRole");
    p.remove_denies();
    p.inject(
        &r,
        json!({"Sid": "Oops", "Effect": "Allow",
               "Action": ["s3:DeleteObjectVersion"],
               "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${VaultBucketName}/*"}}),
    );
    assert_eq!(
        p.decide(&Request::new("s3:DeleteObjectVersion", BLOB_ARN)),
        Decision::Allowed
    );
    let findings = backup_role_findings(&p);
    assert!(
        findings
            .iter()
            .any(|f| f.contains("s3:DeleteObjectVersion") && f.contains("explicitly denied")),
        "missing deny not reported: {findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.contains("forbidden action pattern")),
        "forbidden allow not reported: {findings:?}"
    );
}

#[test]
fn checker_reports_a_not_action_allow() {
    let (t, r) = app();
    let mut p = role_policy(&t, &r, "RestoreRole");
    p.inject(
        &r,
        json!({"Sid": "Broad", "Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}),
    );
    let findings = restore_role_findings(&p);
    assert!(
        findings.iter().any(|f| f.contains("NotAction")),
        "NotAction not reported: {findings:?}"
    );
}

#[test]
fn checker_reports_an_s3_put_wildcard_on_the_restore_role_even_behind_a_condition() {
    let (t, r) = app();
    let mut p = role_policy(&t, &r, "RestoreRole");
    p.remove_denies();
    p.inject(
        &r,
        json!({"Fn::If": ["HasKmsKey",
            {"Sid": "Sneaky", "Effect": "Allow", "Action": "s3:Put*", "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}},
            {"Ref": "AWS::NoValue"}]}),
    );
    let findings = restore_role_findings(&p);
    assert!(
        findings
            .iter()
            .any(|f| f.contains("s3:PutObject") && f.contains("allowed")),
        "conditional s3:Put* not reported: {findings:?}"
    );
}

#[test]
fn a_deny_that_exists_in_only_one_branch_does_not_count() {
    let (t, r) = app();
    let mut p = role_policy(&t, &r, "RestoreRole");
    p.remove_denies();
    p.inject(
        &r,
        json!({"Fn::If": ["HasKmsKey",
            {"Effect": "Deny", "Action": "ecr:DeleteRepository", "Resource": "*"},
            {"Ref": "AWS::NoValue"}]}),
    );
    assert_ne!(
        p.decide(&Request::new("ecr:DeleteRepository", RESTORE_REPO_ARN)),
        Decision::ExplicitlyDenied
    );
}

#[test]
fn wildcard_matching_follows_iam_rules() {
    assert!(glob("s3:Put*", "s3:PutObjectRetention", true));
    assert!(glob("S3:*", "s3:deleteobjectversion", true));
    assert!(glob("s3:Get?bject", "s3:GetObject", true));
    assert!(!glob("s3:Get*", "s3:PutObject", true));
    assert!(!glob("arn:aws:s3:::Vault/*", "arn:aws:s3:::vault/x", false));
    assert!(glob(
        "arn:aws:s3:::vault/ecr/*",
        "arn:aws:s3:::vault/ecr/blobs/sha256/ab",
        false
    ));
    assert!(!glob(
        "arn:aws:s3:::vault/ecr/*",
        "arn:aws:s3:::vault/other/x",
        false
    ));
}

// ------------------------------------------------------------------------------------------
// Concrete policies: one deployment's view of the template
// ------------------------------------------------------------------------------------------

/// The condition values of one deployment: an existing vault bucket, no KMS key.
fn existing_bucket_deployment() -> HashMap<&'static str, bool> {
    [
        ("CreateBucket", false),
        ("HasBucketName", true),
        ("HasKmsKey", false),
        ("HasMaintenancePrincipal", false),
        ("HasRestoreSecrets", false),
        ("HasAlarmEmail", false),
        ("HasPushRepositoryPrefix", false),
        ("ScheduleEnabled", true),
        ("PushTriggerEnabled", true),
        ("DeleteAuditEnabled", true),
    ]
    .into_iter()
    .collect()
}

/// `v` with every `Fn::If` decided by `conditions`; `None` when it is `AWS::NoValue`.
fn decide_ifs(v: &Json, conditions: &HashMap<&str, bool>) -> Option<Json> {
    if is_no_value(v) {
        return None;
    }
    match v {
        Json::Object(m) => {
            if let Some(args) = m.get("Fn::If").and_then(Json::as_array) {
                let name = args[0].as_str().expect("Fn::If names a condition");
                let value = *conditions
                    .get(name)
                    .unwrap_or_else(|| panic!("condition {name} not decided"));
                return decide_ifs(&args[if value { 1 } else { 2 }], conditions);
            }
            let mut out = Map::new();
            for (k, child) in m {
                if let Some(c) = decide_ifs(child, conditions) {
                    out.insert(k.clone(), c);
                }
            }
            Some(Json::Object(out))
        }
        Json::Array(items) => Some(Json::Array(
            items
                .iter()
                .filter_map(|i| decide_ifs(i, conditions))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Every intrinsic function (`Ref`, `Fn::Sub`, ...) in `v` replaced by the string it renders to.
fn render_concrete(r: &Renderer, v: &Json) -> Json {
    match v {
        Json::Object(m)
            if m.len() == 1 && m.keys().all(|k| k == "Ref" || k.starts_with("Fn::")) =>
        {
            Json::String(r.string(v))
        }
        Json::Object(m) => Json::Object(
            m.iter()
                .map(|(k, c)| (k.clone(), render_concrete(r, c)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(|i| render_concrete(r, i)).collect()),
        other => other.clone(),
    }
}

/// A role's inline policy documents as one deployment would send them to IAM.
fn concrete_role_documents(
    template: &Json,
    r: &Renderer,
    role: &str,
    conditions: &HashMap<&str, bool>,
) -> Vec<(String, Json)> {
    resources(template)[role]["Properties"]["Policies"]
        .as_array()
        .unwrap_or_else(|| panic!("{role} has no inline policies"))
        .iter()
        .map(|p| {
            let name = p["PolicyName"].as_str().expect("PolicyName").to_string();
            let doc = decide_ifs(&p["PolicyDocument"], conditions).expect("a policy document");
            (name, render_concrete(r, &doc))
        })
        .collect()
}

/// The statements of a role's first inline policy, for mutation tests.
fn statements_mut<'a>(template: &'a mut Json, role: &str) -> &'a mut Vec<Json> {
    template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("{role}: no statement list"))
}

fn statement_by_sid<'a>(template: &'a mut Json, role: &str, sid: &str) -> &'a mut Json {
    statements_mut(template, role)
        .iter_mut()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("{role}: no statement {sid}"))
}

#[test]
fn concrete_rendering_resolves_subs_and_ifs_to_real_arns() {
    let (t, r) = app();
    let docs = concrete_role_documents(&t, &r, "BackupRole", &existing_bucket_deployment());
    let text = docs.iter().map(|(_, d)| d.to_string()).collect::<String>();
    assert!(
        text.contains(r#""arn:aws:s3:::vault-bucket/ecr/*""#),
        "{text}"
    );
    assert!(text.contains(r#""arn:aws:s3:::vault-bucket""#), "{text}");
    assert!(
        !text.contains("Fn::") && !text.contains("\"Ref\""),
        "unresolved intrinsic: {text}"
    );
    assert!(
        !text.contains("kms:"),
        "the KMS statement is off without a key"
    );
}

// ------------------------------------------------------------------------------------------
// Garbage-collection role (when the template has one)
// ------------------------------------------------------------------------------------------

/// A role is the garbage collector's if its logical id says so.
fn gc_roles(template: &Json) -> Vec<String> {
    resources(template)
        .iter()
        .filter(|(name, res)| {
            let n = name.to_ascii_lowercase();
            res["Type"] == "AWS::IAM::Role" && (n.starts_with("gc") || n.contains("garbage"))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Everything wrong with a garbage-collection role: it may delete expired versions, but never
/// bypass governance, change the lock, versioning, policy or lifecycle of the bucket, write
/// objects, or touch ECR.
fn gc_role_findings(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let must_not: &[(&str, &str)] = &[
        ("s3:BypassGovernanceRetention", BLOB_ARN),
        ("s3:PutObjectRetention", BLOB_ARN),
        ("s3:PutObjectLegalHold", BLOB_ARN),
        ("s3:PutObject", BLOB_ARN),
        ("s3:PutBucketObjectLockConfiguration", BUCKET_ARN),
        ("s3:PutBucketPolicy", BUCKET_ARN),
        ("s3:DeleteBucketPolicy", BUCKET_ARN),
        ("s3:PutBucketVersioning", BUCKET_ARN),
        ("s3:PutLifecycleConfiguration", BUCKET_ARN),
        ("s3:DeleteBucket", BUCKET_ARN),
        (
            "s3:DeleteObjectVersion",
            "arn:aws:s3:::some-other-bucket/ecr/x",
        ),
        ("ecr:BatchDeleteImage", SOURCE_REPO_ARN),
        ("ecr:PutImage", SOURCE_REPO_ARN),
    ];
    for (action, res) in must_not {
        let d = p.decide(&Request::new(action, res));
        if d == Decision::Allowed {
            out.push(format!("{}: {action} on {res} is allowed", p.name));
        }
    }
    // GC deletes versions by id only (crates/engine/src/gc.rs): never a delete marker.
    if p.decide(&Request::new("s3:DeleteObject", BLOB_ARN)) == Decision::Allowed {
        out.push(format!(
            "{}: s3:DeleteObject (unversioned) is allowed but never called",
            p.name
        ));
    }
    for (action, res) in [
        ("s3:DeleteObjectVersion", BLOB_ARN),
        ("s3:GetObject", BLOB_ARN),
        ("s3:GetObjectRetention", BLOB_ARN),
        ("s3:ListBucket", BUCKET_ARN),
        ("s3:ListBucketVersions", BUCKET_ARN),
    ] {
        let d = p.decide(&Request::new(action, res));
        if d != Decision::Allowed {
            out.push(format!("{}: needs {action} on {res}, is {d:?}", p.name));
        }
    }
    for s in p.allow_statements() {
        if s.not_action {
            out.push(format!(
                "{}: Allow statement {} uses NotAction (grants everything else)",
                p.name, s.sid
            ));
        }
        for a in &s.actions {
            for probe in [
                "s3:BypassGovernanceRetention",
                "s3:PutBucketObjectLockConfiguration",
                "s3:PutBucketPolicy",
                "s3:PutSomethingNew",
            ] {
                if glob(a, probe, true) {
                    out.push(format!(
                        "{}: Allow statement {} pattern {a} covers {probe}",
                        p.name, s.sid
                    ));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn garbage_collection_role_if_present_deletes_but_never_bypasses_or_reconfigures() {
    let (t, r) = app();
    assert_eq!(gc_roles(&t), ["GcRole"], "the scheduled GC role is checked");
    for role in gc_roles(&t) {
        assert_no_findings(gc_role_findings(&role_policy(&t, &r, &role)));
    }
}

#[test]
fn checker_accepts_a_minimal_gc_role_and_reports_a_governance_bypass_on_it() {
    let (_, r) = app();
    let gc = |extra: Option<Json>| {
        let mut statements = vec![
            json!({"Sid": "List", "Effect": "Allow",
                   "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
                   "Resource": "arn:aws:s3:::vault-bucket"}),
            json!({"Sid": "DeleteExpired", "Effect": "Allow",
                   "Action": ["s3:GetObject", "s3:GetObjectRetention",
                              "s3:DeleteObjectVersion"],
                   "Resource": "arn:aws:s3:::vault-bucket/ecr/*"}),
        ];
        statements.extend(extra);
        policy_from_document(&r, "GcRole", &json!({ "Statement": statements }))
    };
    assert_no_findings(gc_role_findings(&gc(None)));
    let findings = gc_role_findings(&gc(Some(json!({"Sid": "Bypass", "Effect": "Allow",
        "Action": "s3:BypassGovernanceRetention", "Resource": "arn:aws:s3:::vault-bucket/*"}))));
    assert!(
        findings
            .iter()
            .any(|f| f.contains("s3:BypassGovernanceRetention") && f.contains("allowed")),
        "bypass not reported: {findings:?}"
    );
    let findings = gc_role_findings(&gc(Some(json!({"Sid": "Lock", "Effect": "Allow",
        "Action": "s3:PutBucket*", "Resource": "*"}))));
    assert!(
        findings
            .iter()
            .any(|f| f.contains("PutBucketObjectLockConfiguration")),
        "lock reconfiguration not reported: {findings:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Negative tests on the template text: a bad edit makes the table check fail
// ------------------------------------------------------------------------------------------

#[test]
fn template_with_version_delete_added_to_the_backup_role_fails_the_check() {
    let (mut t, r) = app();
    statement_by_sid(&mut t, "BackupRole", "VaultObjectsWriteLocked")["Action"]
        .as_array_mut()
        .expect("action list")
        .push(json!("s3:DeleteObjectVersion"));
    let findings = backup_role_findings(&role_policy(&t, &r, "BackupRole"));
    assert!(
        findings
            .iter()
            .any(|f| f.contains("VaultObjectsWriteLocked")
                && f.contains("forbidden action pattern s3:DeleteObjectVersion")),
        "the added version delete was not flagged: {findings:?}"
    );

    // Without the defence-in-depth Deny, the same edit really grants the delete.
    statements_mut(&mut t, "BackupRole").retain(|s| s["Sid"] != "DenyVaultDestruction");
    let p = role_policy(&t, &r, "BackupRole");
    assert_eq!(
        p.decide(&Request::new("s3:DeleteObjectVersion", BLOB_ARN)),
        Decision::Allowed
    );
    assert!(
        backup_role_findings(&p)
            .iter()
            .any(|f| f.contains("s3:DeleteObjectVersion") && f.contains("Allowed")),
    );
}

#[test]
fn template_with_the_backup_deny_removed_fails_the_check() {
    let (mut t, r) = app();
    statements_mut(&mut t, "BackupRole").retain(|s| s["Sid"] != "DenyVaultDestruction");
    let findings = backup_role_findings(&role_policy(&t, &r, "BackupRole"));
    for action in [
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketPolicy",
    ] {
        assert!(
            findings
                .iter()
                .any(|f| f.contains(action) && f.contains("must be explicitly denied")),
            "{action} not flagged: {findings:?}"
        );
    }
}

#[test]
fn template_with_s3_wildcard_on_the_restore_role_fails_the_check() {
    let (mut t, r) = app();
    statement_by_sid(&mut t, "RestoreRole", "VaultObjectsRead")["Action"]
        .as_array_mut()
        .expect("action list")
        .push(json!("s3:*"));
    let findings = restore_role_findings(&role_policy(&t, &r, "RestoreRole"));
    assert!(
        findings
            .iter()
            .any(|f| f.contains("VaultObjectsRead") && f.contains("s3:*")),
        "s3:* not flagged: {findings:?}"
    );
    // And once the guard Deny is gone too, the evaluator sees the vault writes themselves.
    statements_mut(&mut t, "RestoreRole").retain(|s| s["Sid"] != "DenyAnyS3WriteOrDelete");
    let findings = restore_role_findings(&role_policy(&t, &r, "RestoreRole"));
    for action in ["s3:PutObject", "s3:DeleteObject", "s3:PutObjectRetention"] {
        assert!(
            findings
                .iter()
                .any(|f| f.contains(&format!("{action} on {BLOB_ARN} is allowed"))),
            "{action} not flagged: {findings:?}"
        );
    }
}

#[test]
fn vault_template_that_lets_the_writer_delete_fails_the_check() {
    let (mut t, r) = vault();
    let statements =
        t["Resources"]["VaultBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
            .as_array_mut()
            .expect("statement list");
    statements.retain(|s| s["Sid"] != "DenyVersionDeletionAndGovernanceBypass");
    statements
        .iter_mut()
        .find(|s| s["Sid"] == "BackupWriteLockedObjects")
        .expect("writer statement")["Action"]
        .as_array_mut()
        .expect("action list")
        .push(json!("s3:DeleteObjectVersion"));
    let p = bucket_policy(&t, &r, "VaultBucketPolicy");
    assert_eq!(
        p.decide(&as_backup("s3:DeleteObjectVersion", BLOB_ARN)),
        Decision::Allowed,
        "the mutated bucket policy should grant the writer a version delete"
    );
}

// ------------------------------------------------------------------------------------------
// moto with IAM enforcement: the generated policies against real S3 calls
// ------------------------------------------------------------------------------------------

/// `Ok` → "allowed"; an `AccessDenied` → "refused"; anything else is reported as it is (moto
/// got past IAM and failed for another reason).
fn iam_verdict<T, E>(result: Result<T, aws_sdk_s3::error::SdkError<E>>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match result {
        Ok(_) => "allowed".to_string(),
        Err(e) if e.code() == Some("AccessDenied") => "refused".to_string(),
        Err(e) => format!("failed otherwise: {e:?}"),
    }
}

/// Renders the app template's role policies for a deployment on `bucket` (prefix `ecr/`).
fn moto_role_documents(template: &Json, bucket: &str, role: &str) -> Vec<(String, String)> {
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let r = Renderer::new(
        template,
        &[
            ("VaultBucketName", bucket),
            ("VaultBucket", bucket),
            ("VaultBucket.Arn", &bucket_arn),
            ("VaultPrefix", "ecr/"),
            ("WorkQueue.Arn", "arn:aws:sqs:us-east-1:123456789012:work"),
            (
                "FailedEventsQueue.Arn",
                "arn:aws:sqs:us-east-1:123456789012:failed",
            ),
            (
                "BackupLogGroup.Arn",
                "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/ecr-vault-backup:*",
            ),
            (
                "RestoreLogGroup.Arn",
                "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/ecr-vault-restore:*",
            ),
        ],
    );
    concrete_role_documents(template, &r, role, &existing_bucket_deployment())
        .into_iter()
        .map(|(name, doc)| (name, doc.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_enforcing_the_generated_role_policies_refuses_what_the_table_denies() {
    use aws_sdk_s3::primitives::{ByteStream, DateTime};
    use aws_sdk_s3::types::{
        ChecksumAlgorithm, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled,
        ObjectLockMode, ObjectLockRetentionMode, ObjectLockRule,
    };
    use ecr_vault_testkit::{Moto, unique_name};

    // A moto of this test's own: enforcement applies to every later request it serves.
    let moto = Moto::start().await.unwrap();
    let root = moto.s3_client();
    let bucket = unique_name("iamvault");
    root.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let until = DateTime::from_secs(chrono::Utc::now().timestamp() + 86_400);
    let put_locked = |client: &aws_sdk_s3::Client, key: &str| {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from_static(b"layer bytes"))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .object_lock_mode(ObjectLockMode::Governance)
            .object_lock_retain_until_date(until)
            .send()
    };
    // GOVERNANCE, so a delete with the bypass header would succeed if IAM let it through.
    let locked_key = "ecr/blobs/sha256/00aa";
    let version = put_locked(&root, locked_key)
        .await
        .unwrap()
        .version_id()
        .expect("a versioned bucket")
        .to_string();

    let (t, _) = app();
    let backup_docs = moto_role_documents(&t, &bucket, "BackupRole");
    let restore_docs = moto_role_documents(&t, &bucket, "RestoreRole");
    // The control: the backup role after a bad edit (version delete granted, guard Deny gone).
    let mut mutated = t.clone();
    statement_by_sid(&mut mutated, "BackupRole", "VaultObjectsWriteLocked")["Action"]
        .as_array_mut()
        .expect("action list")
        .push(json!("s3:DeleteObjectVersion"));
    statements_mut(&mut mutated, "BackupRole").retain(|s| s["Sid"] != "DenyVaultDestruction");
    let mutated_docs = moto_role_documents(&mutated, &bucket, "BackupRole");
    let creds = async |name: &str, docs: &[(String, String)]| {
        let pairs: Vec<(&str, &str)> = docs.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
        moto.assume_role_with_policies(name, &pairs).await.unwrap()
    };
    let backup = moto.s3_client_as(creds("BackupRole", &backup_docs).await);
    let restore = moto.s3_client_as(creds("RestoreRole", &restore_docs).await);
    let mutated = moto.s3_client_as(creds("MutatedBackupRole", &mutated_docs).await);

    moto.enforce_iam().await.unwrap();

    let mut seen = Vec::new();
    let mut check = |who: &str, what: &str, verdict: String, expected: &str| {
        seen.push(format!("{who} {what}: {verdict}"));
        (verdict == expected)
            .then_some(())
            .ok_or(format!("{who} {what}: expected {expected}, got {verdict}"))
    };
    let mut errors = Vec::new();
    let mut record = |r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };

    // The backup identity writes locked objects under its prefix and reads them back...
    record(check(
        "backup",
        "PutObject (locked) under ecr/",
        iam_verdict(put_locked(&backup, "ecr/blobs/sha256/00bb").await),
        "allowed",
    ));
    record(check(
        "backup",
        "GetObject",
        iam_verdict(
            backup
                .get_object()
                .bucket(&bucket)
                .key(locked_key)
                .send()
                .await,
        ),
        "allowed",
    ));
    record(check(
        "backup",
        "ListBucket",
        iam_verdict(backup.list_objects_v2().bucket(&bucket).send().await),
        "allowed",
    ));
    // ...but nowhere else, and never destroys or reconfigures.
    record(check(
        "backup",
        "PutObject outside ecr/",
        iam_verdict(put_locked(&backup, "elsewhere/x").await),
        "refused",
    ));
    record(check(
        "backup",
        "DeleteObjectVersion",
        iam_verdict(
            backup
                .delete_object()
                .bucket(&bucket)
                .key(locked_key)
                .version_id(&version)
                .send()
                .await,
        ),
        "refused",
    ));
    record(check(
        "backup",
        "DeleteObjectVersion with x-amz-bypass-governance-retention",
        iam_verdict(
            backup
                .delete_object()
                .bucket(&bucket)
                .key(locked_key)
                .version_id(&version)
                .bypass_governance_retention(true)
                .send()
                .await,
        ),
        "refused",
    ));
    record(check(
        "backup",
        "PutBucketPolicy",
        iam_verdict(
            backup
                .put_bucket_policy()
                .bucket(&bucket)
                .policy(r#"{"Version":"2012-10-17","Statement":[]}"#)
                .send()
                .await,
        ),
        "refused",
    ));
    let weaker_lock = ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(
            ObjectLockRule::builder()
                .default_retention(
                    DefaultRetention::builder()
                        .mode(ObjectLockRetentionMode::Governance)
                        .days(1)
                        .build(),
                )
                .build(),
        )
        .build();
    record(check(
        "backup",
        "PutObjectLockConfiguration",
        iam_verdict(
            backup
                .put_object_lock_configuration()
                .bucket(&bucket)
                .object_lock_configuration(weaker_lock)
                .send()
                .await,
        ),
        "refused",
    ));

    // The restore identity reads the vault and writes nothing.
    record(check(
        "restore",
        "GetObject",
        iam_verdict(
            restore
                .get_object()
                .bucket(&bucket)
                .key(locked_key)
                .send()
                .await,
        ),
        "allowed",
    ));
    record(check(
        "restore",
        "PutObject",
        iam_verdict(put_locked(&restore, "ecr/blobs/sha256/00cc").await),
        "refused",
    ));
    record(check(
        "restore",
        "DeleteObject",
        iam_verdict(
            restore
                .delete_object()
                .bucket(&bucket)
                .key(locked_key)
                .send()
                .await,
        ),
        "refused",
    ));

    // Control: moto really enforces, the refusals above come from the policies. With the
    // mutated template the same bypassing version delete goes through.
    record(check(
        "mutated backup",
        "DeleteObjectVersion with x-amz-bypass-governance-retention",
        iam_verdict(
            mutated
                .delete_object()
                .bucket(&bucket)
                .key(locked_key)
                .version_id(&version)
                .bypass_governance_retention(true)
                .send()
                .await,
        ),
        "allowed",
    ));
    assert!(
        errors.is_empty(),
        "{}\n\nall verdicts:\n  {}",
        errors.join("\n"),
        seen.join("\n  ")
    );
}

// ------------------------------------------------------------------------------------------
// Operations (issue 18): alarms, the restore failure destination
// ------------------------------------------------------------------------------------------

/// Alarms whose silence is the failure: missing data breaches. Every other alarm watches a
/// failure count, where missing data means nothing failed.
const SILENCE_ALARMS: &[&str] = &["NoFullSnapshotAlarm", "DrillOverdueAlarm"];

#[test]
fn every_alarm_notifies_the_alarm_topic_and_only_silence_alarms_breach_on_missing_data() {
    let (t, _) = app();
    let topic = json!([{"Ref": "AlarmTopic"}]);
    let mut alarms = 0;
    for (name, res) in resources(&t) {
        if res["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        alarms += 1;
        let p = &res["Properties"];
        assert_eq!(p["AlarmActions"], topic, "{name}: alarm actions");
        assert_eq!(p["OKActions"], topic, "{name}: OK actions");
        let expected = if SILENCE_ALARMS.contains(&name.as_str()) {
            "breaching"
        } else {
            "notBreaching"
        };
        assert_eq!(p["TreatMissingData"], expected, "{name}");
    }
    assert!(alarms >= 8, "only {alarms} alarms");
    let silence = &resources(&t)["NoFullSnapshotAlarm"]["Properties"];
    assert_eq!(silence["MetricName"], "FullSnapshots");
    assert_eq!(silence["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(silence["Threshold"], 1);
    // Every evaluated period must lack a full snapshot: a datapoint anywhere in the window
    // keeps the alarm quiet.
    assert_eq!(silence["EvaluationPeriods"], silence["DatapointsToAlarm"]);
}

#[test]
fn failed_asynchronous_restores_go_to_the_alarm_topic_which_the_restore_role_may_publish_to_only() {
    let (t, r) = app();
    let dest = &resources(&t)["RestoreFunction"]["Properties"]["EventInvokeConfig"]["DestinationConfig"]
        ["OnFailure"];
    assert_eq!(dest["Type"], "SNS");
    assert_eq!(dest["Destination"], json!({"Ref": "AlarmTopic"}));
    let p = role_policy(&t, &r, "RestoreRole");
    assert_eq!(
        p.decide(&Request::new("sns:Publish", "{AlarmTopic}")),
        Decision::Allowed
    );
    for (action, res) in [
        (
            "sns:Publish",
            "arn:aws:sns:us-east-1:123456789012:someone-elses-topic",
        ),
        ("sns:Subscribe", "{AlarmTopic}"),
        ("sns:SetTopicAttributes", "{AlarmTopic}"),
    ] {
        assert_ne!(
            p.decide(&Request::new(action, res)),
            Decision::Allowed,
            "{action} on {res}"
        );
    }
    // The restore role's table still holds with the destination policy attached.
    assert_no_findings(restore_role_findings(&p));
}

const DRILL_REPO_ARN: &str =
    "arn:aws:ecr:us-east-1:123456789012:repository/ecr-vault-drill/20261201-060000/team/app";

#[test]
fn drill_role_deletes_only_under_the_scratch_prefix() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "DrillRole");
    for action in ["ecr:BatchDeleteImage", "ecr:DeleteRepository"] {
        assert_eq!(
            p.decide(&Request::new(action, DRILL_REPO_ARN)),
            Decision::Allowed,
            "{action} under the prefix"
        );
        for elsewhere in [
            SOURCE_REPO_ARN,
            RESTORE_REPO_ARN,
            // Look-alikes: a sibling name, and the prefix in another region or account.
            "arn:aws:ecr:us-east-1:123456789012:repository/ecr-vault-drill-evil/team/app",
            "arn:aws:ecr:us-east-1:123456789012:repository/team/ecr-vault-drill/app",
            "arn:aws:ecr:eu-west-1:123456789012:repository/ecr-vault-drill/x/team/app",
            "arn:aws:ecr:us-east-1:999999999999:repository/ecr-vault-drill/x/team/app",
        ] {
            assert_ne!(
                p.decide(&Request::new(action, elsewhere)),
                Decision::Allowed,
                "{action} on {elsewhere}"
            );
        }
    }
    // It restores into the scratch prefix and nowhere else.
    for action in [
        "ecr:CreateRepository",
        "ecr:PutImage",
        "ecr:CompleteLayerUpload",
    ] {
        assert_eq!(
            p.decide(&Request::new(action, DRILL_REPO_ARN)),
            Decision::Allowed,
            "{action}"
        );
        assert_ne!(
            p.decide(&Request::new(action, SOURCE_REPO_ARN)),
            Decision::Allowed,
            "{action} outside the prefix"
        );
    }
}

#[test]
fn drill_role_reads_the_vault_and_cannot_write_or_delete_in_s3() {
    let (t, r) = app();
    let p = role_policy(&t, &r, "DrillRole");
    for (action, res) in [
        ("s3:GetObject", BLOB_ARN),
        ("s3:ListBucket", BUCKET_ARN),
        ("ecr:GetAuthorizationToken", "*"),
        ("sns:Publish", "{AlarmTopic}"),
    ] {
        assert_eq!(
            p.decide(&Request::new(action, res)),
            Decision::Allowed,
            "{action} on {res}"
        );
    }
    for action in S3_WRITES {
        for res in [BLOB_ARN, BUCKET_ARN] {
            assert_ne!(
                p.decide(&Request::new(action, res)),
                Decision::Allowed,
                "{action} on {res}"
            );
        }
    }
    for action in [
        "s3:PutObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
    ] {
        assert_eq!(
            p.decide(&Request::new(action, BLOB_ARN)),
            Decision::ExplicitlyDenied,
            "{action}"
        );
    }
    assert_ne!(
        p.decide(&Request::new(
            "sns:Publish",
            "arn:aws:sns:us-east-1:123456789012:other"
        )),
        Decision::Allowed
    );
}

const REPLICA_ARN: &str = "arn:aws:s3:::vault-replica";

/// The app template rendered with a second-copy bucket.
fn app_with_replica() -> (Json, Renderer) {
    let t = load_template("template.yaml");
    let r = Renderer::new(
        &t,
        &[
            ("VaultBucket", VAULT),
            ("VaultBucketName", VAULT),
            ("VaultBucket.Arn", BUCKET_ARN),
            ("VaultPrefix", "ecr/"),
            ("ReplicaBucketArn", REPLICA_ARN),
        ],
    );
    (t, r)
}

#[test]
fn replication_role_reads_new_vault_versions_and_writes_replicas_but_never_deletes() {
    let (t, r) = app_with_replica();
    let trust = &resources(&t)["ReplicationRole"]["Properties"]["AssumeRolePolicyDocument"];
    assert_eq!(
        trust["Statement"][0]["Principal"],
        json!({"Service": "s3.amazonaws.com"})
    );
    let p = role_policy(&t, &r, "ReplicationRole");
    let replica_blob = "arn:aws:s3:::vault-replica/ecr/blobs/sha256/0a1b2c";
    for (action, res) in [
        ("s3:GetReplicationConfiguration", BUCKET_ARN),
        ("s3:ListBucket", BUCKET_ARN),
        ("s3:GetObjectVersionForReplication", BLOB_ARN),
        ("s3:GetObjectRetention", BLOB_ARN),
        ("s3:GetObjectLegalHold", BLOB_ARN),
        ("s3:ReplicateObject", replica_blob),
        ("s3:ReplicateTags", replica_blob),
    ] {
        assert_eq!(
            p.decide(&Request::new(action, res)),
            Decision::Allowed,
            "{action} on {res}"
        );
    }
    // Never a delete or a weaker lock, on either side.
    for action in [
        "s3:ReplicateDelete",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
        "s3:PutObjectRetention",
        "s3:PutObject",
    ] {
        for res in [BLOB_ARN, replica_blob] {
            assert_eq!(
                p.decide(&Request::new(action, res)),
                Decision::ExplicitlyDenied,
                "{action} on {res}"
            );
        }
    }
    for action in ["s3:PutBucketObjectLockConfiguration", "s3:PutBucketPolicy"] {
        for res in [BUCKET_ARN, REPLICA_ARN] {
            assert_eq!(
                p.decide(&Request::new(action, res)),
                Decision::ExplicitlyDenied,
                "{action} on {res}"
            );
        }
    }
    // Only the vault prefix, only the two buckets.
    for (action, res) in [
        (
            "s3:GetObjectVersionForReplication",
            "arn:aws:s3:::vault-bucket/other/x",
        ),
        (
            "s3:GetObjectVersionForReplication",
            "arn:aws:s3:::another-bucket/ecr/x",
        ),
        ("s3:ReplicateObject", "arn:aws:s3:::another-bucket/ecr/x"),
        ("s3:ReplicateObject", "arn:aws:s3:::vault-replica/other/x"),
        ("s3:GetObject", BLOB_ARN),
    ] {
        assert_eq!(
            p.decide(&Request::new(action, res)),
            Decision::ImplicitlyDenied,
            "{action} on {res}"
        );
    }
    // The vault bucket replicates with this role, new versions only, deletions never.
    let repl = &resources(&t)["VaultBucket"]["Properties"]["ReplicationConfiguration"];
    let on = &repl["Fn::If"][1];
    assert_eq!(
        on["Role"],
        json!({"Fn::GetAtt": ["ReplicationRole", "Arn"]})
    );
    assert_eq!(
        on["Rules"][0]["DeleteMarkerReplication"]["Status"],
        "Disabled"
    );
    assert_eq!(
        repl["Fn::If"][2],
        json!({"Ref": "AWS::NoValue"}),
        "off by default"
    );
}

#[test]
fn alarm_topic_policy_admits_this_account_and_its_alarm_and_rule_services_only() {
    let (t, r) = app();
    let res = &resources(&t)["AlarmTopicPolicy"];
    assert_eq!(res["Condition"], "AuditTrailEnabled");
    let doc = &res["Properties"]["PolicyDocument"];
    let p = policy_from_document(&r, "AlarmTopicPolicy", doc);
    let publish = |principal: &str, account: &str| {
        p.decide(&Request::new("sns:Publish", "{AlarmTopic}").by(principal, account))
    };
    assert_eq!(
        publish("arn:aws:iam::123456789012:role/ops", "123456789012"),
        Decision::Allowed
    );
    assert_eq!(
        publish("arn:aws:iam::999999999999:role/else", "999999999999"),
        Decision::ImplicitlyDenied,
        "another account may not publish to (or read) the alarms"
    );
    // Service principals are each bound to this account or to the vault-changes rule.
    for s in doc["Statement"].as_array().unwrap() {
        if let Some(service) = s["Principal"].get("Service") {
            let cond = &s["Condition"];
            let bound = cond["StringEquals"].get("aws:SourceAccount").is_some()
                || cond["ArnEquals"].get("aws:SourceArn").is_some();
            assert!(
                bound,
                "{service} may publish without a source condition: {s}"
            );
        }
        assert_ne!(s["Principal"], json!("*"), "{s}");
        assert_ne!(s["Principal"], json!({"AWS": "*"}), "{s}");
    }
}

/// Every variable the template sets for a function is a key of the one configuration schema
/// the CLI and the functions read, so a setting cannot be deployed that nothing reads, and
/// its name in a config file is known (`ecr-vault config keys`).
#[test]
fn every_function_variable_the_template_sets_is_in_the_configuration_schema() {
    let t = load_template("template.yaml");
    let mut vars = Vec::new();
    let mut collect = |env: &Json| {
        if let Some(m) = env["Variables"].as_object() {
            vars.extend(m.keys().cloned());
        }
    };
    collect(&t["Globals"]["Function"]["Environment"]);
    for r in t["Resources"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        collect(&r["Properties"]["Environment"]);
    }
    assert!(vars.len() > 20, "found only {vars:?}");
    for v in vars.iter().filter(|v| v.starts_with("ECR_VAULT_")) {
        assert!(
            ecr_vault_engine::config::lookup(v).is_some(),
            "{v} is set by template.yaml but is not in engine::config::SCHEMA"
        );
    }
}
