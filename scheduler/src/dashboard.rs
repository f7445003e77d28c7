//! The web dashboard the resource manager serves at `/`: one self-contained
//! page (no assets from elsewhere) that asks for the cluster token and polls
//! the same API `samza-run` reads: nodes, applications, containers, events,
//! and each running job's throughput and lag (from its coordinator, through
//! `GET /v1/apps/{app}/metrics`).

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page only talks to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
}
