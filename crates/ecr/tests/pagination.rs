//! Listing follows `nextToken` to the last page. moto ignores pagination (it answers every
//! DescribeRepositories/DescribeImages in one page), so no real server here can show this: a
//! minimal ECR JSON endpoint on 127.0.0.1 serves fixed pages and records the tokens it is sent.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use ecr_vault_ecr::Ecr;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// `(X-Amz-Target operation, nextToken received)` for every request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Page `n` (0-based) of `items`, three per page, with a token for the next one.
fn page(items: &[Value], token: Option<&str>, key: &str) -> Value {
    let start: usize = token.map_or(0, |t| t.trim_start_matches("page-").parse().unwrap());
    let end = (start + 3).min(items.len());
    let mut out = json!({ key: items[start..end] });
    if end < items.len() {
        out["nextToken"] = json!(format!("page-{end}"));
    }
    out
}

async fn answer(req: Request<Incoming>, seen: Seen) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let body: Value =
        serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let token = body["nextToken"].as_str().map(str::to_owned);
    seen.lock().unwrap().push((target.clone(), token.clone()));
    let repos: Vec<Value> = (0..8)
        .map(|i| json!({ "repositoryName": format!("team/r{i}"), "registryId": "123456789012" }))
        .collect();
    let images: Vec<Value> = (0..7)
        .map(|i| {
            json!({
                "imageDigest": format!("sha256:{:064x}", i),
                "imageTags": [format!("v{i}")],
                "repositoryName": "team/r0",
            })
        })
        .collect();
    let out = match target.as_str() {
        "DescribeRepositories" => page(&repos, token.as_deref(), "repositories"),
        "DescribeImages" => page(&images, token.as_deref(), "imageDetails"),
        other => panic!("unexpected operation {other}"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    resp.headers_mut().insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    Ok(resp)
}

async fn serve(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| answer(r, seen.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn repositories_and_images_are_listed_across_every_page() {
    let seen = Seen::default();
    let endpoint = serve(seen.clone()).await;
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("AK", "SK", None, None, "test"))
        .build();
    let ecr = Ecr::new(aws_sdk_ecr::Client::from_conf(config), None);

    let repos = ecr.list_repositories().await.unwrap();
    let names: Vec<_> = repos.iter().filter_map(|r| r.repository_name()).collect();
    assert_eq!(
        names,
        (0..8).map(|i| format!("team/r{i}")).collect::<Vec<_>>()
    );

    let images = ecr.list_images("team/r0").await.unwrap();
    let tags: Vec<_> = images.iter().map(|i| i.tags.join(",")).collect();
    assert_eq!(tags, (0..7).map(|i| format!("v{i}")).collect::<Vec<_>>());

    // Three pages each, every follow-up carrying the token of the page before.
    let seen = seen.lock().unwrap().clone();
    let tokens = |op: &str| -> Vec<Option<String>> {
        seen.iter()
            .filter(|(o, _)| o == op)
            .map(|(_, t)| t.clone())
            .collect()
    };
    let expected = vec![None, Some("page-3".to_owned()), Some("page-6".to_owned())];
    assert_eq!(tokens("DescribeRepositories"), expected);
    assert_eq!(tokens("DescribeImages"), expected);
}
