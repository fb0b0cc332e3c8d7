//! Operations endpoints and request metrics: `/metrics` (Prometheus text), `/healthz` (the
//! process answers), `/readyz` (channels are started and the catalog answers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::node::Node;

/// Installs the process-wide Prometheus recorder. Call once.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct Ops {
    node: Arc<Node>,
    metrics: PrometheusHandle,
}

pub fn router(node: Arc<Node>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ops { node, metrics })
}

async fn render_metrics(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

async fn ready(State(ops): State<Ops>) -> Response {
    if !ops.node.is_started() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: channels are being restored\n",
        )
            .into_response();
    }
    match ops.node.catalog.channels().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("catalog unavailable: {e}\n"),
        )
            .into_response(),
    }
}

/// Counts every request and times it, labelled by what was asked for and the status class.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let kind = request_kind(request.uri().path());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("kind", kind.to_string()), ("status", status)];
    metrics::counter!("steadycast_http_requests_total", &labels).increment(1);
    metrics::histogram!("steadycast_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    if response.status().is_server_error() {
        tracing::warn!(%method, kind, status = response.status().as_u16(), "request failed");
    }
    response
}

fn request_kind(path: &str) -> &'static str {
    if path.starts_with("/ingest/") {
        "ingest"
    } else if path.starts_with("/api/") {
        "api"
    } else if path.starts_with("/live/") {
        if path.ends_with(".m3u8") {
            "hls_playlist"
        } else if path.ends_with(".mpd") {
            "dash_manifest"
        } else if path.ends_with("/init.mp4") {
            "init"
        } else if path.ends_with(".m4s") {
            "segment"
        } else {
            "other"
        }
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(request_kind("/live/demo/main.m3u8"), "hls_playlist");
        assert_eq!(request_kind("/live/demo/manifest.mpd"), "dash_manifest");
        assert_eq!(request_kind("/live/demo/360p/init.mp4"), "init");
        assert_eq!(request_kind("/live/demo/360p/123.m4s"), "segment");
        assert_eq!(request_kind("/ingest/demo/a/360p/123.m4s"), "ingest");
        assert_eq!(request_kind("/metrics"), "other");
    }
}
