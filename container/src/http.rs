//! HTTP for processes of a job: the bearer-token check every endpoint sits
//! behind, a server on a thread of its own (the run loop never waits on it),
//! and the container's endpoints.
//!
//! A container serves, with the token its launcher gave it (`SAMZA_TOKEN`):
//! `GET /metrics` (Prometheus text: every metric of the container, labelled
//! with its job and container) and `GET /v1/metrics` (the same as JSON).

use std::net::TcpListener;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use samza_task_api::MetricsRegistry;

/// Constant-time comparison of a presented token with the expected one.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Axum middleware: 401 unless the request carries the token.
pub async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong cluster token (Authorization: Bearer ...)");
    }
    next.run(req).await
}

/// Serves `router` behind the token on `bind` (e.g. `127.0.0.1:0`) from a
/// thread with its own single-threaded runtime; returns the base URL.
pub fn serve(bind: &str, token: &str, router: Router, name: &str) -> std::io::Result<String> {
    let listener = TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    let token: Arc<str> = token.into();
    let router = router.layer(axum::middleware::from_fn_with_state(token, require_token));
    let what = name.to_string();
    std::thread::Builder::new().name(name.into()).spawn(move || {
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

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison_needs_equal_bytes() {
        use super::same;
        assert!(same(b"abc", b"abc") && !same(b"a", b"b") && !same(b"a", b"ab") && !same(b"", b"a"));
    }
}
