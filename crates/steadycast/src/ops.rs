//! Operations endpoints and request metrics: `/metrics` (Prometheus text), `/healthz` (the
//! process answers), `/readyz` (channels are started, this origin is not behind the catalog,
//! and the catalog answers; in a cluster a catalog outage alone does not take a node out).

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

/// The metrics, to anyone, or with `metrics_token` set to a scraper that presents it.
async fn render_metrics(State(ops): State<Ops>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &ops.node.server.metrics_token {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(access::bearer);
        if !presented.is_some_and(|p| token.matches(p)) {
            let why = "this node's metrics need its metrics token (`Authorization: Bearer`)\n";
            return (StatusCode::UNAUTHORIZED, why).into_response();
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
        .into_response()
}

async fn ready(State(ops): State<Ops>) -> Response {
    if !ops.node.is_started() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: channels are being restored\n",
        )
            .into_response();
    }
    if let Some(why) = ops.node.origin.stale() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("stale: {why}\n")).into_response();
    }
    // Every node of a cluster shares the catalog: taking them all out of the balancer would
    // stop what they still serve (the listed segments, from memory). So it is not asked: a
    // check that waited for a catalog down (a pool's acquire timeout) would fail anyway.
    if ops.node.server.is_clustered() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let asked = tokio::time::timeout(CATALOG_CHECK, ops.node.catalog.channels()).await;
    match asked {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => not_ready(e.to_string()),
        Err(_) => not_ready("it does not answer".into()),
    }
}

/// How long a readiness check waits for a single node's catalog.
const CATALOG_CHECK: Duration = Duration::from_secs(2);

fn not_ready(why: String) -> Response {
    let why = format!("catalog unavailable: {why}\n");
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
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
    } else if path.starts_with("/relay/") {
        "relay"
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

    /// Metric names as they occur in `text`: `steadycast_` and what follows of `[a-z_]`.
    fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("steadycast_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                rest[..end].trim_end_matches('_').to_string()
            })
            .filter(|name| name != "steadycast")
            .collect()
    }

    fn sources(dir: &std::path::Path, into: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }

    /// The README's metrics table, the shipped alert rules and the Grafana dashboard are what
    /// operators read: each name there is one the code emits, and each one the code emits is
    /// in the table.
    #[test]
    fn every_metric_is_documented_and_every_documented_one_is_emitted() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut code = String::new();
        for krate in std::fs::read_dir(root.join("crates"))
            .into_iter()
            .flatten()
            .flatten()
        {
            sources(&krate.path().join("src"), &mut code);
        }
        let emitted: std::collections::BTreeSet<_> = metric_names(&code)
            .into_iter()
            .filter(|name| code.contains(&format!("\"{name}\"")))
            .collect();
        assert!(emitted.len() > 30, "{emitted:?}");
        let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_default();
        let documented = metric_names(&read("README.md"));
        let undocumented: Vec<_> = emitted.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "not in the README: {undocumented:?}"
        );
        let alerted = metric_names(&read("ops/prometheus/steadycast-alerts.yml"));
        let dashboard = read("ops/grafana/steadycast-dashboard.json");
        let panels: serde_json::Value = serde_json::from_str(&dashboard).unwrap_or_default();
        assert!(panels["panels"].as_array().is_some_and(|p| p.len() > 10));
        let charted = metric_names(&dashboard);
        assert!(!alerted.is_empty() && !charted.is_empty());
        for name in documented.iter().chain(&alerted).chain(&charted) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(emitted.contains(base), "`{name}` is never emitted");
        }
    }
}
