//! The API's operations, once: the router serves them and `/api/v1/openapi.json` describes
//! them (OpenAPI 3.1), so no route can exist without its description.

use std::sync::Arc;

use axum::Json;
use axum::http::Method;
use axum::routing::delete as on_delete;
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};

use super::*;
use crate::auth::required_scope;

/// One operation: its method, path and summary, and the handler that serves it.
pub(super) struct Operation {
    pub method: Method,
    pub path: &'static str,
    summary: &'static str,
    pub route: MethodRouter<Arc<Node>>,
}

fn op(
    method: Method,
    path: &'static str,
    summary: &'static str,
    route: MethodRouter<Arc<Node>>,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        route,
    }
}

pub(super) fn operations() -> Vec<Operation> {
    const CHANNEL: &str = "/api/v1/channels/{id}";
    vec![
        op(
            Method::GET,
            "/api/v1/channels",
            "List the channels (secrets redacted)",
            get(list),
        ),
        op(
            Method::POST,
            "/api/v1/channels",
            "Create a channel; the answer shows its secrets, once",
            post(create),
        ),
        op(
            Method::GET,
            CHANNEL,
            "Show a channel, its pipelines and URLs",
            get(show),
        ),
        op(
            Method::DELETE,
            CHANNEL,
            "Delete a channel",
            on_delete(super::delete),
        ),
        op(
            Method::GET,
            "/api/v1/channels/{id}/alignment",
            "How the two pipelines' copies compare, per rendition",
            get(alignment),
        ),
        op(
            Method::GET,
            "/api/v1/channels/{id}/events",
            "The channel's newest events (`?limit=`)",
            get(events),
        ),
        op(
            Method::GET,
            "/api/v1/channels/{id}/harvests",
            "The channel's live-to-VOD harvests",
            get(harvests),
        ),
        op(
            Method::POST,
            "/api/v1/channels/{id}/harvests",
            "Harvest a past range into a VOD asset",
            post(create_harvest),
        ),
        op(
            Method::GET,
            "/api/v1/channels/{id}/harvests/{name}",
            "One harvest and its asset's URLs",
            get(harvest),
        ),
        op(
            Method::POST,
            "/api/v1/channels/{id}/inputs/{input}/rotate",
            "Give an RTMP input a new stream key (`grace_seconds` for the old one)",
            post(rotate_stream_key),
        ),
        op(
            Method::POST,
            "/api/v1/channels/{id}/faults",
            "Inject a fault into a pipeline (nodes started with --allow-faults)",
            post(inject_fault),
        ),
        op(
            Method::DELETE,
            "/api/v1/channels/{id}/faults",
            "Clear the channel's faults",
            on_delete(clear_faults),
        ),
        op(
            Method::GET,
            "/api/v1/nodes",
            "The cluster's nodes, leases and inputs",
            get(nodes),
        ),
        op(
            Method::POST,
            "/api/v1/nodes/{id}/drain",
            "Drain a node: its pipelines move to others",
            post(drain),
        ),
        op(
            Method::DELETE,
            "/api/v1/nodes/{id}/drain",
            "Put a drained node back in service",
            on_delete(undrain),
        ),
        op(
            Method::GET,
            "/api/v1/events",
            "Changes to nodes and tokens, newest first",
            get(cluster_events),
        ),
        op(
            Method::GET,
            "/api/v1/tokens",
            "The API's tokens (no secrets)",
            get(tokens::list),
        ),
        op(
            Method::POST,
            "/api/v1/tokens",
            "Create a token; the answer shows its secret, once",
            post(tokens::create),
        ),
        op(
            Method::DELETE,
            "/api/v1/tokens/{name}",
            "Revoke a token",
            on_delete(tokens::revoke),
        ),
    ]
}

/// `GET /api/v1/openapi.json`: open, since it describes and reveals nothing.
pub(super) async fn document() -> Json<Value> {
    Json(describe(&operations()))
}

fn describe(operations: &[Operation]) -> Value {
    let mut paths = Map::new();
    for o in operations {
        let parameters: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let scope = required_scope(&o.method, o.path);
        let operation = json!({
            "summary": o.summary,
            "operationId": format!("{} {}", o.method, o.path),
            "parameters": parameters,
            "x-steadycast-scope": scope.as_str(),
            "responses": {
                "2XX": { "description": "done" },
                "400": { "description": "the request is malformed or invalid (JSON `error` and `details`)" },
                "401": { "description": "no token, or not a valid one" },
                "403": { "description": format!("the token's scope is below {scope}") },
                "404": { "description": "no such thing" },
                "429": { "description": "too many invalid tokens from this address" },
            },
        });
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "steadycast control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every operation needs `Authorization: Bearer <token>` whose scope \
                            (read < operator < admin) covers `x-steadycast-scope`.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_described_once_with_its_scope() {
        let operations = operations();
        let document = describe(&operations);
        let mut seen = std::collections::BTreeSet::new();
        for o in &operations {
            assert!(o.path.starts_with("/api/v1/"), "{}", o.path);
            assert!(
                seen.insert((o.method.to_string(), o.path)),
                "{} {} twice",
                o.method,
                o.path
            );
            let method = o.method.as_str().to_ascii_lowercase();
            let described = &document["paths"][o.path][method.as_str()];
            let scope = required_scope(&o.method, o.path);
            assert_eq!(
                described["x-steadycast-scope"],
                scope.as_str(),
                "{}",
                o.path
            );
        }
        let listed: usize = document["paths"]
            .as_object()
            .map(|p| p.values().map(|m| m.as_object().map_or(0, Map::len)).sum())
            .unwrap_or(0);
        assert_eq!(listed, operations.len());
    }
}
