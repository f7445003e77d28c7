//! HTTP for processes of a job: the bearer-token check every endpoint sits
//! behind, a server on a thread of its own (the run loop never waits on it),
//! and the container's endpoints.
//!
//! A container serves, with the token its launcher gave it (`SAMZA_TOKEN`):
//! `GET /metrics` (Prometheus text: every metric of the container, labelled
//! with its job and container), `GET /v1/metrics` (the same as JSON), and
//! `GET /v1/stores/{store}/{key}[?task=NAME]`: the key's current value in a
//! running task's store (queryable state), read by the run loop between
//! messages, so it includes writes not yet committed.

use std::net::TcpListener;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use samza_task_api::MetricsRegistry;

use crate::config::JobConfig;
use crate::query::{QueryError, StoreQuery};

/// Constant-time comparison of a presented token with the expected one.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}

/// The body limit of the JSON requests of every API of the project (job
/// configs, coordinator state, heartbeats with metrics are well under it).
pub const JSON_BODY_LIMIT: usize = 4 << 20;

/// `router` with request bodies limited to `limit` bytes: a larger body is
/// not read past the limit and is answered 413, naming the route and limit.
pub fn limit_bodies(router: Router, limit: usize) -> Router {
    let say = move |req: Request, next: Next| async move {
        let what = format!("{} {}", req.method(), req.uri().path());
        let res = next.run(req).await;
        if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let message = format!("the request body of {what} is over its limit of {limit} bytes");
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
        }
        res
    };
    router.layer(axum::middleware::from_fn(say)).layer(axum::extract::DefaultBodyLimit::max(limit))
}

/// An error answer of any of the project's HTTP APIs (containers,
/// coordinators, resource and node managers): a status and a message,
/// rendered as `{"error": message}`, which `samza_scheduler::client` reads
/// back into its `HttpError`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(v.strip_prefix("Bearer ")?.trim())
}

/// The credentials a job's process (container or coordinator) accepts: its
/// application's token, and the cluster operator's, which it knows only by
/// its SHA-256 (so an operator can scrape it, and the process cannot act as
/// the operator).
#[derive(Clone, Debug)]
pub struct Accepted {
    pub token: String,
    /// Lowercase hex SHA-256 of the operator's token.
    pub operator_sha256: Option<String>,
}

impl Accepted {
    /// `token` and the operator's hash in `SAMZA_OPERATOR_SHA256`, if set.
    pub fn with_env(token: &str) -> Accepted {
        let operator_sha256 = std::env::var(crate::env::OPERATOR_SHA256).ok().filter(|s| !s.is_empty());
        Accepted { token: token.to_string(), operator_sha256 }
    }

    pub fn accepts(&self, presented: &str) -> bool {
        same(presented.as_bytes(), self.token.as_bytes())
            || self
                .operator_sha256
                .as_deref()
                .is_some_and(|h| same(sha256_hex(presented).as_bytes(), h.as_bytes()))
    }
}

/// A lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|x| format!("{x:02x}")).collect()
}

/// Axum middleware: 401 unless the request carries an accepted token.
pub async fn require_token(State(accepted): State<Arc<Accepted>>, req: Request, next: Next) -> Response {
    if !bearer(req.headers()).is_some_and(|t| accepted.accepts(t)) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token (Authorization: Bearer ...)");
    }
    next.run(req).await
}

/// Serves `router` behind the token on `bind` (e.g. `127.0.0.1:0`) from a
/// thread with its own single-threaded runtime; returns the base URL.
pub fn serve(bind: &str, accepted: Accepted, router: Router, name: &str) -> std::io::Result<String> {
    let listener = TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = limit_bodies(router, JSON_BODY_LIMIT)
        .layer(axum::middleware::from_fn_with_state(Arc::new(accepted), require_token));
    let what = name.to_string();
    let span = tracing::Span::current();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let _in_span = span.entered();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("{what}: cannot start its HTTP runtime: {e}"),
        };
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, router).await {
                        tracing::error!("{what}: HTTP server stopped: {e}");
                    }
                }
                Err(e) => tracing::error!("{what}: cannot listen: {e}"),
            }
        });
    })?;
    Ok(url)
}

/// The content type of Prometheus' text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` and `GET /v1/metrics` of `metrics`, with `labels` added to
/// every Prometheus series.
pub fn metrics_routes(metrics: MetricsRegistry, labels: Vec<(String, String)>) -> Router {
    let m = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                let labels = labels.clone();
                async move {
                    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.to_prometheus(&l))
                }
            }),
        )
        .route("/v1/metrics", get(move || async move { Json(metrics.snapshot()) }))
}

#[derive(serde::Deserialize)]
pub struct TaskParam {
    pub task: Option<String>,
}

/// `GET /v1/stores/{store}/{key}`: the key (text, encoded with the store's
/// `key-serde`) read by the run loop; the value decoded with `msg-serde`.
pub fn store_routes(cfg: Arc<JobConfig>, queries: std::sync::mpsc::Sender<StoreQuery>) -> Router {
    let handler = move |UrlPath((store, key)): UrlPath<(String, String)>, Query(p): Query<TaskParam>| {
        let cfg = cfg.clone();
        let queries = queries.clone();
        async move {
            let Some(sc) = cfg.stores.get(&store) else {
                return error(StatusCode::NOT_FOUND, format!("job {} has no store {store:?}", cfg.name));
            };
            let encoded = match sc.key_serde.encode_text(&key) {
                Ok(k) => k.to_vec(),
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("key {key:?} of store {store}: {e}"))
                }
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let q = StoreQuery { store: store.clone(), key: encoded, task: p.task, reply: tx };
            if queries.send(q).is_err() {
                return error(StatusCode::SERVICE_UNAVAILABLE, "the container's run loop has stopped");
            }
            match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
                Ok(Ok(Ok(Some((task, v))))) => match sc.msg_serde.decode_json(&v) {
                    Ok(value) => {
                        Json(serde_json::json!({"store": store, "key": key, "task": task, "value": value}))
                            .into_response()
                    }
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("value of {key:?}: {e}")),
                },
                Ok(Ok(Ok(None))) => error(StatusCode::NOT_FOUND, format!("no key {key:?} in store {store}")),
                Ok(Ok(Err(e @ QueryError::NotHere(_)))) => error(StatusCode::NOT_FOUND, e.to_string()),
                Ok(Ok(Err(e @ QueryError::Failed { .. }))) => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }
                Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the container's run loop has stopped"),
                Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "the run loop did not answer within 10 s"),
            }
        }
    };
    Router::new().route("/v1/stores/{store}/{key}", get(handler))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::QueryError;

    /// The HTTP side of queryable state on a real socket; a thread answers
    /// as the run loop would (its own answers are tested end to end in
    /// `examples/tests/operator_tools.rs`).
    #[test]
    fn a_missing_key_or_store_is_404_and_a_failing_store_is_500() {
        let text = "[job]\nname = \"j\"\n[task]\nclass = \"c\"\ninputs = [\"log.in\"]\n[systems.log]\ntype = \"embedded-log\"\ndir = \"l\"\n[stores.counts]\nengine = \"in-memory\"\n";
        let cfg = JobConfig::parse(text, std::path::Path::new("/j/job.toml"), &[]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<StoreQuery>();
        std::thread::spawn(move || {
            for q in rx {
                let answer = match q.key.as_slice() {
                    b"here" => Ok(Some(("Partition 0".to_string(), b"v".to_vec()))),
                    b"missing" => Ok(None),
                    _ => Err(QueryError::Failed {
                        task: samza_task_api::TaskName::new("Partition 1"),
                        store: q.store.clone(),
                        source: samza_task_api::TaskError::task("rocksdb get: disk gone"),
                    }),
                };
                let _ = q.reply.send(answer);
            }
        });
        let accepted = Accepted { token: "t0k".into(), operator_sha256: Some(sha256_hex("operator")) };
        let url = serve("127.0.0.1:0", accepted, store_routes(Arc::new(cfg), tx), "test-http").unwrap();
        let http = reqwest::blocking::Client::new();
        let get = |path: &str| {
            let r = http.get(format!("{url}{path}")).bearer_auth("t0k").send().unwrap();
            (r.status().as_u16(), r.text().unwrap())
        };
        let (status, body) = get("/v1/stores/counts/here");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"key":"here","store":"counts","task":"Partition 0","value":"v"}"#)
        );
        let (status, body) = get("/v1/stores/counts/missing");
        assert_eq!((status, body.as_str()), (404, r#"{"error":"no key \"missing\" in store counts"}"#));
        let (status, body) = get("/v1/stores/counts/broken");
        assert_eq!(
            (status, body.as_str()),
            (500, r#"{"error":"task Partition 1: store counts: rocksdb get: disk gone"}"#)
        );
        let (status, body) = get("/v1/stores/nope/x");
        assert_eq!((status, body.as_str()), (404, r#"{"error":"job j has no store \"nope\""}"#));
        let r = http.get(format!("{url}/v1/stores/counts/here")).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "no token");
        // The operator's token, known by its hash; nothing else.
        let r = http.get(format!("{url}/v1/stores/counts/here")).bearer_auth("operator").send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let hash = sha256_hex("operator");
        let r = http.get(format!("{url}/v1/stores/counts/here")).bearer_auth(&hash).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "the hash is not the token");
    }

    #[test]
    fn token_comparison_needs_equal_bytes() {
        use super::same;
        assert!(same(b"abc", b"abc") && !same(b"a", b"b") && !same(b"a", b"ab") && !same(b"", b"a"));
    }
}
