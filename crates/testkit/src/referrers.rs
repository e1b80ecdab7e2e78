//! The OCI 1.1 referrers API in front of a real registry.
//!
//! docker-registry 2.8 does not serve `GET /v2/<name>/referrers/<digest>`, and no registry that
//! does (zot, distribution 3) installs from the package registries this project reaches. So
//! this small hyper service adds the API the way the distribution spec describes it, and
//! forwards everything else to the real registry unchanged:
//! - a manifest `PUT` that the registry accepts and whose body has a `subject` is recorded,
//!   and the answer gets `OCI-Subject: <subject digest>` (so clients need not write the
//!   tag-schema index); a manifest `DELETE` forgets it;
//! - `GET /v2/<name>/referrers/<digest>` answers an OCI image index of the recorded
//!   descriptors (`mediaType`, `digest`, `size`, `artifactType` — the manifest's, else its
//!   config's media type — and `annotations`), an empty index when there are none, and
//!   honours `?artifactType=` with `OCI-Filters-Applied: artifactType`.
//!
//! Bodies are buffered whole: for test images only. The referrers listing is not
//! authenticated here (the real registry checks every other request).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::registry::sha256_digest;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

type Store = BTreeMap<(String, String), Vec<serde_json::Value>>;

struct Inner {
    upstream: String,
    http: reqwest::Client,
    /// (repository, subject digest) → descriptors of manifests naming it.
    referrers: Mutex<Store>,
}

impl Inner {
    fn referrers(&self) -> MutexGuard<'_, Store> {
        self.referrers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running front; stops when dropped.
pub struct ReferrersFront {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ReferrersFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferrersFront")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for ReferrersFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReferrersFront {
    /// Serves on a free loopback port in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Result<ReferrersFront> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()?;
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            http,
            referrers: Mutex::new(BTreeMap::new()),
        });
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = inner.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &inner).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(ReferrersFront { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

/// `/v2/<name>/<kind>/<reference>` → (name, reference).
fn split<'a>(path: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix("/v2/")?;
    let i = rest.rfind(&format!("/{kind}/"))?;
    Some((&rest[..i], &rest[i + kind.len() + 2..]))
}

async fn handle(req: Request<Incoming>, inner: &Inner) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    if req.method() == hyper::Method::GET
        && let Some((name, digest)) = split(&path, "referrers")
    {
        return list(inner, name, digest, query.as_deref());
    }
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let mut url = format!("{}{path}", inner.upstream);
    if let Some(q) = &query {
        url.push('?');
        url.push_str(q);
    }
    let mut out = inner.http.request(method.clone(), url);
    for (k, v) in &parts.headers {
        if k != hyper::header::HOST && k != hyper::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let resp = match out.body(body.clone()).send().await {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let resp_body = resp.bytes().await.unwrap_or_default();
    let mut answer = Response::new(Full::new(resp_body));
    *answer.status_mut() = status;
    for (k, v) in &headers {
        if k != hyper::header::CONTENT_LENGTH && k != hyper::header::TRANSFER_ENCODING {
            answer.headers_mut().append(k, v.clone());
        }
    }
    if status.is_success()
        && let Some((name, reference)) = split(&path, "manifests")
    {
        if method == hyper::Method::PUT {
            if let Some(subject) = record(inner, name, &body, &parts.headers)
                && let Ok(v) = hyper::header::HeaderValue::from_str(&subject)
            {
                answer.headers_mut().insert("oci-subject", v);
            }
        } else if method == hyper::Method::DELETE {
            for list in inner.referrers().values_mut() {
                list.retain(|d| d["digest"] != reference);
            }
        }
    }
    answer
}

/// Records an accepted manifest that names a subject; returns the subject digest.
fn record(inner: &Inner, name: &str, body: &[u8], headers: &hyper::HeaderMap) -> Option<String> {
    let m: serde_json::Value = serde_json::from_slice(body).ok()?;
    let subject = m["subject"]["digest"].as_str()?.to_string();
    let media_type = m["mediaType"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let artifact_type = m["artifactType"]
        .as_str()
        .or_else(|| m["config"]["mediaType"].as_str())
        .unwrap_or_default();
    let mut desc = serde_json::json!({
        "mediaType": media_type,
        "digest": sha256_digest(body),
        "size": body.len(),
        "artifactType": artifact_type,
    });
    if let Some(a) = m.get("annotations").filter(|a| a.is_object()) {
        desc["annotations"] = a.clone();
    }
    let mut store = inner.referrers();
    let list = store
        .entry((name.to_string(), subject.clone()))
        .or_default();
    if !list.iter().any(|d| d["digest"] == desc["digest"]) {
        list.push(desc);
    }
    Some(subject)
}

fn list(inner: &Inner, name: &str, digest: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let filter = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "artifactType")
            .map(|(_, v)| v.into_owned())
    });
    let manifests: Vec<serde_json::Value> = inner
        .referrers()
        .get(&(name.to_string(), digest.to_string()))
        .into_iter()
        .flatten()
        .filter(|d| filter.as_deref().is_none_or(|t| d["artifactType"] == t))
        .cloned()
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let mut r = plain(StatusCode::OK, &index.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(OCI_INDEX),
    );
    if filter.is_some() {
        r.headers_mut().insert(
            "oci-filters-applied",
            hyper::header::HeaderValue::from_static("artifactType"),
        );
    }
    r
}
