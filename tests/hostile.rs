//! Hostile input: a corpus of bad names, manifests, events and requests, each with the clear
//! error it must get, driven through the real parsers and, where a registry is involved, a
//! real backup against the local stack.
//!
//! Distribution 2.8 refuses to store hostile names and manifests, so the backup test puts the
//! fault-injecting proxy (`ecr_vault_testkit::faultproxy`) in front of the real registry: it
//! forwards everything to it, except the routes that answer with a canned hostile body (a
//! catalog with traversal names, a tag list with bad tags, manifests and blobs that lie). The
//! corpus is listed in docs/reliability.md, "Hostile input".

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::sync::Arc;

use bytes::Bytes;
use ecr_vault_backup_fn::event::classify;
use ecr_vault_engine::restore_request::RestorePayload;
use ecr_vault_engine::trigger::{EcrImageActionDetail, decode_body};
use ecr_vault_engine::{
    BackupOptions, Filters, Mapping, NoProgress, RestoreRequest, SnapshotSel, backup, restore,
};
use ecr_vault_registry::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST};
use ecr_vault_registry::{Digest, ImageRef, Manifest, RepoName, Tag};
use ecr_vault_testkit::{Fault, FaultProxy, ImageBuilder, Registry, Rule, Stack, unique_name};
use ecr_vault_tests::{check_vault, lock, new_vault, registry_source, snapshot_names};
use ecr_vault_vault::{VaultLocation, VaultOptions};
use serde_json::{Value, json};

const SHA_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Asserts `result` is an error whose message contains every one of `needles`.
#[track_caller]
fn refused<T: std::fmt::Debug, E: std::fmt::Display>(
    what: &str,
    result: Result<T, E>,
    needles: &[&str],
) {
    match result {
        Ok(v) => panic!("{what}: accepted as {v:?}"),
        Err(e) => {
            let msg = e.to_string();
            for n in needles {
                assert!(
                    msg.contains(n),
                    "{what}: error {msg:?} does not mention {n:?}"
                );
            }
        }
    }
}

/// Repository names that try to leave their place: traversal, encoded traversal, empty
/// segments, absolute and trailing slashes, control characters, case, overlong.
fn hostile_repo_names() -> Vec<String> {
    vec![
        "..".into(),
        "../escape".into(),
        "ns/../../escape".into(),
        "ns/./x".into(),
        "ns/%2e%2e/x".into(),
        "ns/%2F/x".into(),
        "ns//x".into(),
        "/abs/x".into(),
        "ns/x/".into(),
        "ns\\..\\x".into(),
        "ns/a\u{0}b".into(),
        "ns/a\nb".into(),
        "ns/a\u{1b}[31mred".into(),
        "ns/a b".into(),
        "ns/a?b=c".into(),
        "ns/a#b".into(),
        "NS/Upper".into(),
        "ns/.hidden".into(),
        "ns/a___b".into(),
        "a".repeat(256),
        format!("ns/{}", "a/".repeat(200)),
    ]
}

fn hostile_tags() -> Vec<String> {
    vec![
        "..".into(),
        "../../x".into(),
        "a/b".into(),
        "%2e%2e".into(),
        ".hidden".into(),
        "-x".into(),
        "t\u{0}".into(),
        "t\n".into(),
        "a:b".into(),
        "a@b".into(),
        "x".repeat(129),
    ]
}

#[test]
fn hostile_names_and_tags_are_refused_by_every_parser() {
    for name in hostile_repo_names() {
        refused(
            &format!("repository {name:?}"),
            RepoName::parse(&name),
            &["invalid repository"],
        );
        // As a user-typed reference, with and without a tag.
        refused(
            &format!("image ref {name:?}"),
            ImageRef::parse(&format!("{name}:v1")),
            &["invalid"],
        );
        // As a restore rename target: refused before any registry call.
        let m = Mapping {
            renames: vec![("team/app".into(), name.clone())],
            ..Mapping::default()
        };
        refused(
            &format!("rename to {name:?}"),
            m.repo(&RepoName::parse("team/app").unwrap()),
            &["renaming team/app", "invalid repository"],
        );
        // A prefix rename that would build the hostile name from a good one.
        let m = Mapping {
            renames: vec![("team/".into(), format!("{name}/"))],
            ..Mapping::default()
        };
        refused(
            &format!("prefix rename to {name:?}"),
            m.repo(&RepoName::parse("team/app").unwrap()),
            &["invalid repository"],
        );
    }
    for tag in hostile_tags() {
        refused(&format!("tag {tag:?}"), Tag::parse(&tag), &["invalid tag"]);
        let m = Mapping {
            retags: vec![("v1".into(), tag.clone())],
            ..Mapping::default()
        };
        refused(
            &format!("retag to {tag:?}"),
            m.tag(&Tag::parse("v1").unwrap()),
            &["retag v1=", "invalid tag"],
        );
    }
    // A rename whose result escapes only after substitution.
    let m = Mapping {
        renames: vec![("team/".into(), "../".into())],
        ..Mapping::default()
    };
    refused(
        "prefix rename to ../",
        m.repo(&RepoName::parse("team/app").unwrap()),
        &["invalid repository"],
    );
    refused(
        "rename pair without =",
        Mapping::parse_pairs(&["team/app".into()], "--rename"),
        &["expected FROM=TO"],
    );
}

#[test]
fn digests_other_than_sha256_hex_are_refused() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("sha512:{}", "a".repeat(128)),
            "unsupported digest algorithm",
        ),
        (
            "md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            "unsupported digest algorithm",
        ),
        (
            "SHA256:".to_owned() + &"a".repeat(64),
            "unsupported digest algorithm",
        ),
        ("sha256+b64:abc".into(), "unsupported digest algorithm"),
        ("garbage".into(), "expected <algorithm>:<hex>"),
        ("".into(), "expected <algorithm>:<hex>"),
        ("sha256:../../../etc/passwd".into(), "64 lower-case hex"),
        (format!("sha256:{}", "A".repeat(64)), "64 lower-case hex"),
        (format!("sha256:{}", "a".repeat(63)), "64 lower-case hex"),
        (format!("sha256:{}/", "a".repeat(64)), "64 lower-case hex"),
        (format!("sha256:{}\n", "a".repeat(64)), "64 lower-case hex"),
        (format!("sha256:{}", "a".repeat(65)), "64 lower-case hex"),
    ];
    for (d, why) in cases {
        refused(
            &format!("digest {d:?}"),
            Digest::parse(&d),
            &["invalid digest", why],
        );
        refused(
            &format!("ref with digest {d:?}"),
            ImageRef::parse(&format!("team/app@{d}")),
            &["invalid digest"],
        );
    }
}

#[test]
fn vault_keys_never_leave_the_prefix() {
    for bad in [
        "s3://bucket/../x",
        "s3://bucket/a/../../x",
        "s3://bucket/a//b",
        "s3://bucket/./a",
        "s3://bucket/%2e%2e/a",
        "s3://bucket/a\nb",
        "s3://bucket/a\u{0}b",
        "s3://bucket/a b",
        "s3://../x",
        "s3://Bucket/x",
        "s3:///abs",
        "/abs/path",
        "file:///etc",
    ] {
        refused(
            &format!("vault {bad:?}"),
            VaultLocation::parse(bad),
            &["invalid vault location", "expected s3://bucket[/prefix]"],
        );
    }
    // Keys are built only from validated digests and ids, under the prefix.
    let v = VaultLocation::parse("s3://bucket/ecr/prod/").unwrap();
    let d = Digest::of(b"x");
    assert_eq!(v.blob_key(&d), format!("ecr/prod/blobs/sha256/{}", d.hex()));
    assert!(v.snapshots_prefix().starts_with("ecr/prod/"));
}

fn manifest_with(config_size: &str, config_digest: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{config_size},"digest":"{config_digest}"}},"layers":[]}}"#
    )
}

/// The corpus of hostile manifest bodies: (name, body, words the error must contain).
fn hostile_manifests() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        ("not JSON", "{not json".into(), vec!["malformed manifest"]),
        ("empty body", String::new(), vec!["malformed manifest"]),
        ("a JSON array", "[1,2,3]".into(), vec!["malformed manifest"]),
        ("nested 10,000 deep", nested, vec!["malformed manifest"]),
        (
            "Docker schema 1",
            r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#.into(),
            vec!["unsupported media type", "manifest.v1"],
        ),
        (
            "unknown media type",
            r#"{"schemaVersion":2,"mediaType":"application/x-evil","config":{}}"#.into(),
            vec!["unsupported media type", "application/x-evil"],
        ),
        (
            "no mediaType, config or manifests",
            r#"{"schemaVersion":2}"#.into(),
            vec!["malformed manifest", "neither mediaType"],
        ),
        (
            "negative size",
            manifest_with("-1", SHA_A),
            vec!["malformed manifest"],
        ),
        (
            "size 2^64-1",
            manifest_with("18446744073709551615", SHA_A),
            vec!["larger than", "declared 18446744073709551615 bytes"],
        ),
        (
            "size 2^64 (overflows u64)",
            manifest_with("18446744073709551616", SHA_A),
            vec!["malformed manifest"],
        ),
        (
            "size 1e30",
            manifest_with("1e30", SHA_A),
            vec!["malformed manifest"],
        ),
        (
            "size 65 GiB (over the layer bound)",
            manifest_with("69793218560", SHA_A),
            vec!["larger than"],
        ),
        (
            "size as a string",
            manifest_with("\"7\"", SHA_A),
            vec!["malformed manifest"],
        ),
        (
            "sha512 config digest",
            manifest_with("7", &format!("sha512:{}", "a".repeat(128))),
            vec!["unsupported digest algorithm"],
        ),
        (
            "md5 config digest",
            manifest_with("7", "md5:d41d8cd98f00b204e9800998ecf8427e"),
            vec!["invalid digest"],
        ),
        (
            "traversal as a digest",
            manifest_with("7", "sha256:../../../../etc/passwd"),
            vec!["malformed manifest", "../../../../etc/passwd"],
        ),
        (
            "garbage digest",
            manifest_with("7", "garbage"),
            vec!["malformed manifest"],
        ),
        (
            "index child of unknown media type",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"application/x-evil","size":7,"digest":"{SHA_A}"}}]}}"#
            ),
            vec!["unsupported media type", "child"],
        ),
        (
            "image layer with a sha512 digest",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","size":7,"digest":"{SHA_A}"}},"layers":[{{"mediaType":"x","size":1,"digest":"sha512:{}"}}]}}"#,
                "b".repeat(128)
            ),
            vec!["unsupported digest algorithm"],
        ),
        (
            "oversized (4 MiB + 1)",
            format!(
                "{}{}",
                manifest_with("7", SHA_A),
                " ".repeat(MAX_MANIFEST_BYTES as usize)
            ),
            vec!["larger than the 4194304-byte limit"],
        ),
    ]
}

#[test]
fn hostile_manifests_are_refused_with_clear_errors() {
    for (name, body, needles) in hostile_manifests() {
        let bytes = Bytes::from(body);
        refused(
            name,
            Manifest::parse(&Digest::of(&bytes), None, bytes.clone()),
            &needles,
        );
    }
    // Wrong content for a digest: the bytes are checked before they are parsed.
    let good = Bytes::from(manifest_with("7", SHA_A));
    let other = Digest::of(b"something else");
    refused(
        "wrong content for a digest",
        Manifest::parse(&other, None, good),
        &["digest mismatch", &other.to_string()],
    );
}

// ---- Events and requests -------------------------------------------------------------------

#[test]
fn backup_events_with_missing_or_mistyped_fields_are_refused_naming_the_problem() {
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!("backup"),
            vec!["expected a JSON object, got a string"],
        ),
        (json!(null), vec!["got null"]),
        (json!([{"action": "backup"}]), vec!["got an array"]),
        (json!({"Records": {}}), vec!["Records is an object"]),
        (json!({"Records": []}), vec!["Records array that is empty"]),
        (
            json!({"Records": [{"messageId": "1", "body": "{}"}]}),
            vec!["eventSource none", "only \"aws:sqs\""],
        ),
        (
            json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}),
            vec!["record 0 has no messageId"],
        ),
        (
            json!({"Records": [{"eventSource": "aws:sqs", "messageId": 7, "body": "{}"}]}),
            vec!["SQS batch that does not parse"],
        ),
        (
            json!({"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": "PUSH"}),
            vec!["\"ECR Image Action\" event that does not parse"],
        ),
        (
            json!({"source": "aws.ecr", "detail-type": "ECR Image Action",
                   "detail": {"repository-name": 42}}),
            vec!["does not parse"],
        ),
        (
            json!({"source": "aws.ecr", "detail-type": "ECR Image Scan"}),
            vec!["\"aws.ecr\"", "\"ECR Image Scan\""],
        ),
        (json!({"action": 42}), vec!["action is a number"]),
        (json!({"action": "restore"}), vec!["action \"restore\""]),
        (
            json!({"detail-type": "Scheduled Event"}),
            vec!["top-level keys", "\"detail-type\""],
        ),
        (json!({}), vec!["top-level keys []"]),
    ];
    for (event, needles) in cases {
        let what = event.to_string();
        let r = classify(event);
        refused(&what, r, &needles);
    }
    // Every refusal says that nothing was written.
    refused("any", classify(json!(1)), &["nothing was written"]);
}

#[test]
fn ecr_image_actions_with_bad_fields_are_refused() {
    let ok = EcrImageActionDetail {
        repository_name: Some("team/app".into()),
        image_digest: Some(SHA_A.into()),
        image_tag: Some("v1".into()),
        ..Default::default()
    };
    assert!(ok.image().is_ok());
    let cases: Vec<(EcrImageActionDetail, &str)> = vec![
        (
            EcrImageActionDetail {
                repository_name: None,
                ..ok.clone()
            },
            "detail.repository-name is missing",
        ),
        (
            EcrImageActionDetail {
                image_digest: None,
                ..ok.clone()
            },
            "detail.image-digest is missing",
        ),
        (
            EcrImageActionDetail {
                repository_name: Some("team/../../x".into()),
                ..ok.clone()
            },
            "detail.repository-name: invalid repository",
        ),
        (
            EcrImageActionDetail {
                image_digest: Some("md5:d41d8cd98f00b204e9800998ecf8427e".into()),
                ..ok.clone()
            },
            "detail.image-digest: invalid digest",
        ),
        (
            EcrImageActionDetail {
                image_tag: Some("../v1".into()),
                ..ok.clone()
            },
            "detail.image-tag: invalid tag",
        ),
    ];
    for (d, needle) in cases {
        refused(&format!("{d:?}"), d.image(), &[needle]);
    }
}

#[test]
fn work_items_with_missing_or_mistyped_fields_are_refused() {
    let ok = json!({"action": "backup-image", "repository": "team/app", "digest": SHA_A,
                    "tags": ["v1"], "run": "20261124T020000000Z-a1b2c3"});
    assert!(decode_body(Some(&ok.to_string())).is_ok());
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        o.to_string()
    };
    let without = |k: &str| {
        let mut o = ok.clone();
        o.as_object_mut().unwrap().remove(k);
        o.to_string()
    };
    let cases: Vec<(Option<String>, Vec<&str>)> = vec![
        (None, vec!["the message has no body"]),
        (Some("not json".into()), vec!["the body is not a work item"]),
        (Some("[]".into()), vec!["the body is not a work item"]),
        (
            Some(without("repository")),
            vec!["missing field `repository`"],
        ),
        (Some(without("digest")), vec!["missing field `digest`"]),
        (Some(without("action")), vec!["missing field `action`"]),
        (Some(with("digest", json!(42))), vec!["invalid type"]),
        (Some(with("tags", json!("v1"))), vec!["invalid type"]),
        (
            Some(with("action", json!("delete-image"))),
            vec!["expected \"backup-image\""],
        ),
        (
            Some(with("repository", json!("../etc"))),
            vec!["invalid repository"],
        ),
        (
            Some(with("digest", json!("sha512:abc"))),
            vec!["unsupported digest algorithm"],
        ),
        (Some(with("tags", json!(["a/b"]))), vec!["invalid tag"]),
        (
            Some(with("run", json!("../../x"))),
            vec!["run is", "snapshot id"],
        ),
    ];
    for (body, needles) in cases {
        let what = format!("{body:?}");
        refused(&what, decode_body(body.as_deref()), &needles);
    }
}

#[test]
fn restore_requests_with_missing_or_mistyped_fields_are_refused() {
    let parse_cases: Vec<(Value, Vec<&str>)> = vec![
        (json!([]), vec!["invalid restore request"]),
        (
            json!({"snapshot": "latest"}),
            vec!["missing field `target`"],
        ),
        (json!({"target": {}}), vec!["missing field `registry`"]),
        (json!({"target": {"registry": 7}}), vec!["invalid type"]),
        (
            json!({"target": {"registry": "ecr"}, "dryrun": false}),
            vec!["unknown field `dryrun`"],
        ),
        (
            json!({"target": {"registry": "ecr"}, "dryRun": "false"}),
            vec!["invalid type"],
        ),
        (
            json!({"target": {"registry": "ecr"}, "repositories": "team/**"}),
            vec!["invalid type"],
        ),
        (
            json!({"target": {"registry": "ecr"}, "rename": [{"from": "a"}]}),
            vec!["missing field `to`"],
        ),
        (
            json!({"target": {"registry": "ecr", "endpoint": "http://x"}}),
            vec!["unknown field `endpoint`"],
        ),
    ];
    for (req, needles) in parse_cases {
        let what = req.to_string();
        refused(&what, RestorePayload::parse(req), &needles);
    }
    let engine_cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"snapshot": "../x"}), vec!["snapshot"]),
        (
            json!({"snapshot": "latest", "asOf": "2026-11-01"}),
            vec!["either a snapshot or an as-of time"],
        ),
        (json!({"asOf": "yesterday"}), vec!["yesterday"]),
        (
            json!({"digests": ["md5:d41d8cd98f00b204e9800998ecf8427e"]}),
            vec!["digests:"],
        ),
        (json!({"repositories": ["team/["]}), vec!["team/["]),
    ];
    for (mut req, needles) in engine_cases {
        req["target"] = json!({"registry": "ecr"});
        let what = req.to_string();
        let parsed = RestorePayload::parse(req).unwrap();
        refused(&what, parsed.engine_request(), &needles);
    }
}

// ---- Through a backup and a restore on the real stack ---------------------------------------

/// A canned registry response.
fn canned(body: String, headers: &[(&str, &str)]) -> Fault {
    Fault::Status {
        status: 200,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body,
    }
}

/// Serves `body` as the manifest of `repo` under `tag` and under its digest (HEAD and GET).
fn serve_manifest(proxy: &FaultProxy, repo: &str, reference: &str, body: &str, media: &str) {
    let digest = Digest::of(body.as_bytes()).to_string();
    proxy.add_rule(Rule::new(
        &format!("/v2/{repo}/manifests/{reference}"),
        canned(
            body.to_owned(),
            &[("content-type", media), ("docker-content-digest", &digest)],
        ),
    ));
}

fn index_of(children: &[(&str, &str)]) -> String {
    let list: Vec<String> = children
        .iter()
        .map(|(media, body)| {
            format!(
                r#"{{"mediaType":"{media}","size":{},"digest":"{}"}}"#,
                body.len(),
                Digest::of(body.as_bytes())
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        list.join(",")
    )
}

/// Runs on a worker thread with a larger stack: the whole backup and restore future in a
/// debug build is bigger than a test thread's default 2 MiB stack.
#[test]
fn a_hostile_registry_fails_only_its_own_images_and_never_writes_outside_the_vault() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 * 1024 * 1024)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::spawn(hostile_registry_run()).await.unwrap() });
}

async fn hostile_registry_run() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("hostile");
    let good_repo = format!("{ns}/good");
    let good = ImageBuilder::oci(61).layers(&[30_000]).build().unwrap();
    let pushed = good
        .push(&stack.registry, &good_repo, &["v1"])
        .await
        .unwrap();

    let proxy = FaultProxy::start(&stack.registry.url()).await.unwrap();
    let mut expected_failures: Vec<(String, String, Vec<&str>)> = Vec::new();

    // The catalog: the good repository, hostile names, and repositories whose manifests lie.
    let mut names = hostile_repo_names();
    for n in &names {
        expected_failures.push((n.clone(), String::new(), vec!["invalid repository"]));
    }
    let evil = |case: &str| format!("{ns}/evil-{case}");
    let mut catalog = vec![good_repo.clone()];
    catalog.append(&mut names);

    // Hostile manifests under a tag, one repository each; their digests are honest, so the
    // refusal comes from parsing.
    for (i, (_, body, needles)) in hostile_manifests().into_iter().enumerate() {
        let repo = evil(&format!("m{i}"));
        // A neutral Content-Type, so the body alone decides what the manifest is.
        serve_manifest(&proxy, &repo, "*", &body, "application/json");
        proxy.add_rule(Rule::new(
            &format!("/v2/{repo}/tags/list"),
            canned(
                json!({"name": repo, "tags": ["t"]}).to_string(),
                &[("content-type", "application/json")],
            ),
        ));
        catalog.push(repo.clone());
        expected_failures.push((repo, String::new(), needles));
    }

    // Indexes nested 10 deep (each level honest): refused at the depth bound.
    let deep = evil("deep");
    let mut level = manifest_with("7", SHA_A);
    let mut media = OCI_MANIFEST;
    for _ in 0..10 {
        let ix = index_of(&[(media, &level)]);
        let d = Digest::of(level.as_bytes());
        serve_manifest(&proxy, &deep, &d.to_string(), &level, media);
        level = ix;
        media = OCI_INDEX;
    }
    serve_manifest(&proxy, &deep, "t", &level, OCI_INDEX);
    serve_manifest(
        &proxy,
        &deep,
        &Digest::of(level.as_bytes()).to_string(),
        &level,
        OCI_INDEX,
    );
    // A loop: the index names a child, and the registry answers for the child with the index
    // itself. Only the digest check stands between this and an endless walk.
    let looped = evil("loop");
    let child = manifest_with("7", SHA_A);
    let top = index_of(&[(OCI_INDEX, &child)]);
    let top_digest = Digest::of(top.as_bytes()).to_string();
    proxy.add_rule(Rule::new(
        &format!("/v2/{looped}/manifests/{}", Digest::of(child.as_bytes())),
        canned(
            top.clone(),
            &[
                ("content-type", OCI_INDEX),
                ("docker-content-digest", &top_digest),
            ],
        ),
    ));
    serve_manifest(&proxy, &looped, "*", &top, OCI_INDEX);
    // Wrong content for a digest: the tag says one digest, the digest serves other bytes.
    let lie = evil("lie");
    let claimed = manifest_with("7", SHA_A);
    let claimed_digest = Digest::of(claimed.as_bytes()).to_string();
    proxy.add_rule(Rule::new(
        &format!("/v2/{lie}/manifests/{claimed_digest}"),
        canned(manifest_with("8", SHA_A), &[("content-type", OCI_MANIFEST)]),
    ));
    serve_manifest(&proxy, &lie, "t", &claimed, OCI_MANIFEST);
    // An honest manifest whose blobs lie: a config with other bytes, a layer longer than its
    // descriptor says.
    let blobs = evil("blobs");
    let config =
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = "layer bytes, as declared";
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":{},"digest":"{}"}}]}}"#,
        config.len(),
        Digest::of(config.as_bytes()),
        layer.len(),
        Digest::of(layer.as_bytes())
    );
    serve_manifest(&proxy, &blobs, "*", &image, OCI_MANIFEST);
    proxy.add_rule(Rule::new(
        &format!("/v2/{blobs}/blobs/{}", Digest::of(config.as_bytes())),
        canned(config.replace("amd64", "arm64"), &[]),
    ));
    proxy.add_rule(Rule::new(
        &format!("/v2/{blobs}/blobs/{}", Digest::of(layer.as_bytes())),
        canned(format!("{layer} and then some more"), &[]),
    ));
    for (repo, needles) in [
        (&deep, vec!["nesting deeper than 8"]),
        (&looped, vec!["digest mismatch"]),
        (&lie, vec!["digest mismatch", claimed_digest.as_str()]),
        (&blobs, vec!["mismatch"]),
    ] {
        proxy.add_rule(Rule::new(
            &format!("/v2/{repo}/tags/list"),
            canned(
                json!({"name": repo, "tags": ["t"]}).to_string(),
                &[("content-type", "application/json")],
            ),
        ));
        catalog.push(repo.clone());
        expected_failures.push((repo.clone(), String::new(), needles));
    }
    // The good repository's tag list carries hostile tags next to the real one.
    let mut tags = vec!["v1".to_owned()];
    for t in hostile_tags() {
        expected_failures.push((good_repo.clone(), t.clone(), vec!["invalid tag"]));
        tags.push(t);
    }
    proxy.add_rule(Rule::new(
        &format!("/v2/{good_repo}/tags/list"),
        canned(
            json!({"name": good_repo, "tags": tags}).to_string(),
            &[("content-type", "application/json")],
        ),
    ));
    proxy.add_rule(Rule::new(
        "/v2/_catalog",
        canned(
            json!({ "repositories": catalog }).to_string(),
            &[("content-type", "application/json")],
        ),
    ));

    let front = Registry::external(&proxy.url(), stack.registry.credentials()).unwrap();
    let source = registry_source(&front).unwrap();
    let vault = new_vault(
        &stack.s3,
        "hostile/vault",
        VaultOptions {
            lock: lock(2),
            part_size: 5 * 1024 * 1024,
            parts_in_flight: 2,
            blob_storage_class: None,
        },
    )
    .await
    .unwrap();
    let opts = BackupOptions {
        filters: Filters::all(),
        ..BackupOptions::default()
    };
    let report = backup(&source, &vault, &opts, Arc::new(NoProgress))
        .await
        .unwrap();

    // Each hostile input failed on its own, with its reason...
    for (repo, reference, needles) in &expected_failures {
        let shown: String = repo.chars().take(300).collect();
        let f = report
            .failures
            .iter()
            .find(|f| f.repository == shown && (reference.is_empty() || &f.reference == reference))
            .unwrap_or_else(|| {
                panic!(
                    "no failure for {repo:?} {reference:?} in {:#?}",
                    report.failures
                )
            });
        for n in needles {
            assert!(f.error.contains(n), "{repo:?}: {:?} lacks {n:?}", f.error);
        }
    }
    // ...and the good image of the same run is in the vault and its snapshot.
    let snap = vault.newest_snapshot().await.unwrap().unwrap();
    assert!(
        snapshot_names(&snap).contains(&format!("{good_repo}:v1")),
        "good image missing: {:?}",
        snapshot_names(&snap)
    );
    assert!(
        snap.images
            .iter()
            .all(|i| i.repository.as_str() == good_repo)
    );

    // Nothing half-written: every object hashes to its key, has one version, a lock, and its
    // full closure; no multipart upload is left open.
    let contents = check_vault(&vault, "COMPLIANCE", chrono::Utc::now())
        .await
        .unwrap();
    for (d, size) in pushed.blobs.iter() {
        assert_eq!(
            contents.blobs.get(d.trim_start_matches("sha256:")),
            Some(size)
        );
    }
    for bad in [config, layer] {
        let hex = Digest::of(bad.as_bytes()).hex().to_owned();
        assert!(
            !contents.blobs.contains_key(&hex),
            "lying blob {hex} stored"
        );
    }
    assert!(
        !contents
            .blobs
            .contains_key(Digest::of(top.as_bytes()).hex())
    );
    assert!(
        !contents
            .blobs
            .contains_key(Digest::of(claimed.as_bytes()).hex())
    );
    let s3 = vault.client();
    let bucket = &vault.location().bucket;
    let uploads = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());

    // Nothing outside the vault prefix, anywhere in the bucket.
    let listing = s3
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    assert!(listing.is_truncated() != Some(true));
    let keys: Vec<&str> = listing.versions().iter().filter_map(|v| v.key()).collect();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(
            k.starts_with("hostile/vault/"),
            "key outside the vault: {k:?}"
        );
    }

    // Restore with a hostile rename or retag: refused per image, nothing pushed where the
    // mapping points.
    let target = registry_source(&stack.registry).unwrap();
    for (renames, retags, needles) in [
        (
            vec![(good_repo.clone(), format!("{ns}/../escape"))],
            vec![],
            vec!["renaming", "invalid repository"],
        ),
        (
            vec![(format!("{ns}/"), "/abs/".to_owned())],
            vec![],
            vec!["renaming", "invalid repository"],
        ),
        (
            vec![(good_repo.clone(), format!("{ns}/restored"))],
            vec![("v1".to_owned(), "../v1".to_owned())],
            vec!["retag v1=../v1", "invalid tag"],
        ),
    ] {
        let req = RestoreRequest {
            snapshot: SnapshotSel::Latest,
            filters: Filters::all(),
            digests: Vec::new(),
            mapping: Mapping {
                renames,
                retags,
                digest_only: false,
            },
            dry_run: false,
            concurrency: 2,
        };
        let r = restore(&vault, &target, &req, Arc::new(NoProgress))
            .await
            .unwrap();
        assert!(r.failed(), "hostile mapping accepted: {r:#?}");
        for n in &needles {
            assert!(
                r.failures.iter().any(|f| f.error.contains(n)),
                "{needles:?}: {:#?}",
                r.failures
            );
        }
        assert_eq!(r.tags_pushed, 0, "{r:#?}");
    }
    let catalog = stack.registry.catalog().await.unwrap();
    assert!(
        catalog
            .iter()
            .all(|c| !c.contains("escape") && !c.starts_with('/')),
        "{catalog:?}"
    );
}
