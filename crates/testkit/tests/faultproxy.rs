//! The fault proxy itself, in front of the real registry and the real SeaweedFS S3: it carries
//! bodies byte-exact and SigV4 intact, counts what passes, and each fault does what it says.

use std::time::Duration;

use bytes::Bytes;
use ecr_vault_testkit::faultproxy::{Fault, FaultProxy, Offset, Rule};
use ecr_vault_testkit::registry::sha256_digest;
use ecr_vault_testkit::{Registry, Stack, unique_name};
use reqwest::Method;

const WAIT: Duration = Duration::from_secs(30);

/// A registry handle that talks to the stack's registry through `proxy`.
fn via(proxy: &FaultProxy, stack: &Stack) -> Registry {
    Registry::external(&proxy.url(), stack.registry.credentials()).expect("registry handle")
}

fn blob(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<_>>()
        .into()
}

#[tokio::test]
async fn passes_large_blobs_byte_exact_and_counts_them() {
    let stack = Stack::shared().await.expect("stack");
    let proxy = FaultProxy::start(&stack.registry.url())
        .await
        .expect("proxy");
    let reg = via(&proxy, stack);
    let repo = unique_name("fp");
    let data = blob(24 << 20, 1);
    let (digest, _) = reg.push_blob(&repo, data.clone()).await.expect("push");
    let got = reg.get_blob(&repo, &digest).await.expect("get");
    assert_eq!(sha256_digest(&got), digest);
    let t = proxy.totals();
    assert!(t.bytes_up >= data.len() as u64, "{t:?}");
    assert!(t.bytes_down >= data.len() as u64, "{t:?}");
    assert_eq!(proxy.count("GET", &format!("/v2/{repo}/blobs/")), 1);
    assert_eq!(
        proxy.counts()[&("PUT".to_string(), "registry-blob-upload")],
        1
    );
    proxy.reset_counts();
    assert_eq!(proxy.totals().requests, 0);
}

#[tokio::test]
async fn response_reset_cuts_the_body_and_the_next_request_passes() {
    let stack = Stack::shared().await.expect("stack");
    let proxy = FaultProxy::start(&stack.registry.url())
        .await
        .expect("proxy");
    let reg = via(&proxy, stack);
    let repo = unique_name("fp");
    let data = blob(1 << 20, 2);
    let (digest, _) = reg.push_blob(&repo, data).await.expect("push");
    let rule = proxy.add_rule(
        Rule::new(
            "/v2/*/blobs/sha256:*",
            Fault::ResetResponse(Offset::Random(7)),
        )
        .method("GET")
        .nth(1),
    );
    assert!(reg.get_blob(&repo, &digest).await.is_err());
    assert_eq!(proxy.rule_stats(rule).triggered, 1);
    assert!(proxy.rule_stats(rule).response_bytes < 1 << 20);
    let got = reg
        .get_blob(&repo, &digest)
        .await
        .expect("second GET passes");
    assert_eq!(sha256_digest(&got), digest);
}

#[tokio::test]
async fn statuses_truncation_and_flips_reach_the_client() {
    let stack = Stack::shared().await.expect("stack");
    let proxy = FaultProxy::start(&stack.registry.url())
        .await
        .expect("proxy");
    let reg = via(&proxy, stack);
    let repo = unique_name("fp");
    let (digest, _) = reg.push_blob(&repo, blob(100_000, 3)).await.expect("push");
    let path = format!("/v2/{repo}/blobs/{digest}");

    proxy.add_rule(Rule::new(&path, Fault::too_many_requests(2)).nth(1));
    let resp = reg.request(Method::GET, &path).send().await.expect("429");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");

    proxy.clear_rules();
    proxy.add_rule(
        Rule::new(
            &path,
            Fault::Truncate {
                at: Offset::At(1000),
                keep_length: false,
            },
        )
        .nth(1),
    );
    let short = reg
        .get_blob(&repo, &digest)
        .await
        .expect("well-framed short body");
    assert_eq!(short.len(), 1000);

    proxy.clear_rules();
    proxy.add_rule(Rule::new(&path, Fault::FlipResponse(Offset::At(5))).nth(1));
    let flipped = reg.get_blob(&repo, &digest).await.expect("flipped body");
    assert_eq!(flipped.len(), 100_000);
    assert_ne!(sha256_digest(&flipped), digest);

    proxy.clear_rules();
    let expire = proxy.add_rule(Rule::new("/v2/*", Fault::unauthorized()).after(2).times(1));
    for _ in 0..2 {
        assert!(
            reg.blob_exists(&repo, &digest)
                .await
                .expect("before expiry")
        );
    }
    assert!(
        reg.blob_exists(&repo, &digest).await.is_err(),
        "401 is an error"
    );
    assert!(
        reg.blob_exists(&repo, &digest)
            .await
            .expect("after re-auth")
    );
    assert_eq!(proxy.rule_stats(expire).triggered, 1);
}

#[tokio::test]
async fn s3_through_the_proxy_keeps_sigv4_and_can_go_down() {
    let stack = Stack::shared().await.expect("stack");
    let proxy = FaultProxy::start(&stack.s3.endpoint())
        .await
        .expect("proxy");
    let s3 =
        ecr_vault_testkit::s3::s3_client(&proxy.url(), &stack.s3.access_key, &stack.s3.secret_key);
    let bucket = unique_name("fpb");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket via proxy");
    let slow = proxy.add_rule(Rule::new("/*", Fault::s3_slow_down()).method("PUT").nth(1));
    // The SDK retries the SlowDown itself; the object lands.
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(Bytes::from_static(b"hello").into())
        .send()
        .await
        .expect("put after SlowDown retry");
    assert_eq!(proxy.rule_stats(slow).triggered, 1);

    proxy.set_unreachable(true);
    let head = s3.head_object().bucket(&bucket).key("k").send();
    let waiter = proxy.wait_for("a refused connection or request", WAIT, |p| {
        p.totals().refused_connections > 0 || p.requests().iter().any(|r| r.status.is_none())
    });
    let (res, waited) = tokio::join!(
        // The outage ends after the first refusal, so the SDK's retries reach the server.
        head,
        async {
            let w = waiter.await;
            proxy.set_unreachable(false);
            w
        }
    );
    waited.expect("outage observed");
    // Either a retry got through after the outage, or the SDK gave up; both are honest.
    if let Ok(h) = res {
        assert_eq!(h.content_length(), Some(5));
    }
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .expect("back up");
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"hello"
    );
}
