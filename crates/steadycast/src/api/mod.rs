//! The control API: `/api/v1/channels` (list, create, show, delete), harvests, faults, nodes
//! and tokens. JSON in, JSON out; errors are `{"error": "...", "details": [...]}` with a 4xx
//! status. Every route is behind [`crate::auth::require_token`]; every change is an event
//! naming the token that made it.

mod openapi;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use channel::{ChannelSpec, EventKind};
use serde_json::{Value, json};

use crate::auth::{ApiAuth, Caller, require_token};
use crate::node::{Node, NodeError};

pub fn router(node: Arc<Node>, auth: Arc<ApiAuth>) -> Router {
    let locked = openapi::operations()
        .into_iter()
        .fold(Router::new(), |router, o| router.route(o.path, o.route))
        .route_layer(axum::middleware::from_fn_with_state(auth, require_token));
    locked
        .route("/api/v1/openapi.json", get(openapi::document))
        .with_state(node)
}

struct ApiError(StatusCode, String, Vec<String>);

fn store_error(e: store::StoreError) -> ApiError {
    ApiError::from(NodeError::from(e))
}

/// Records a change made through the API, naming the token that made it: under the channel
/// it changed, or under no channel (`GET /api/v1/events`) for nodes and tokens.
fn audit(node: &Node, caller: &Caller, channel: &str, detail: String) {
    let detail = format!("token `{}`: {detail}", caller.token);
    node.events
        .emit(channel, "api", EventKind::ApiChange, detail);
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1, "details": self.2 }))).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Invalid(details) => {
                ApiError(StatusCode::BAD_REQUEST, "invalid channel".into(), details)
            }
            NodeError::Exists(_) => ApiError(StatusCode::CONFLICT, e.to_string(), vec![]),
            NodeError::Unknown(_) => ApiError(StatusCode::NOT_FOUND, e.to_string(), vec![]),
            NodeError::Input(_) | NodeError::Origin(_) => {
                ApiError(StatusCode::BAD_REQUEST, e.to_string(), vec![])
            }
            NodeError::Store(_) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), vec![]),
        }
    }
}

/// A channel as the API shows it: its spec and its input URLs (with their secrets only in the
/// answer that creates it), and its playback URLs.
fn describe(node: &Node, spec: &ChannelSpec, with_secret: bool) -> Value {
    let shown = if with_secret {
        spec.clone()
    } else {
        spec.redacted()
    };
    let inputs: serde_json::Map<String, Value> = node
        .input_urls(&shown)
        .into_iter()
        .map(|(name, url)| (name, Value::String(url)))
        .collect();
    let base = format!("http://{}/live/{}", node.http, spec.id);
    let pipelines: serde_json::Map<String, Value> = node
        .pipelines(&spec.id)
        .into_iter()
        .map(|(feed, state)| {
            (
                feed.to_string(),
                serde_json::to_value(state).unwrap_or_default(),
            )
        })
        .collect();
    json!({
        "channel": shown,
        "running": node.is_running(&spec.id),
        "pipelines": pipelines,
        "input_urls": inputs,
        "playback": { "hls": format!("{base}/main.m3u8"), "dash": format!("{base}/manifest.mpd") },
    })
}

async fn stored(node: &Node, id: &str) -> Result<ChannelSpec, ApiError> {
    let row = node.catalog.channel(id).await.map_err(store_error)?;
    let row =
        row.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no channel `{id}`"), vec![]))?;
    serde_json::from_str(&row.spec).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stored channel unreadable: {e}"),
            vec![],
        )
    })
}

async fn list(State(node): State<Arc<Node>>) -> Result<Json<Value>, ApiError> {
    let rows = node.catalog.channels().await.map_err(store_error)?;
    let channels: Vec<Value> = rows
        .iter()
        .filter_map(|row| serde_json::from_str::<ChannelSpec>(&row.spec).ok())
        .map(|spec| describe(&node, &spec, false))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

async fn create(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ChannelSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(spec) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "malformed channel JSON".into(),
            vec![e.body_text()],
        )
    })?;
    let spec = node.create_channel(spec).await?;
    audit(&node, &caller, &spec.id, "created the channel".into());
    // The credential is shown once, at creation, for pipelines run elsewhere.
    Ok((StatusCode::CREATED, Json(describe(&node, &spec, true))))
}

async fn show(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let spec = stored(&node, &id).await?;
    Ok(Json(describe(&node, &spec, false)))
}

async fn delete(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if node.delete_channel(&id).await? {
        audit(&node, &caller, &id, "deleted the channel".into());
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no channel `{id}`"),
            vec![],
        ))
    }
}

/// How the two pipelines' copies of each segment compare, per rendition.
async fn alignment(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let channel = node.origin.channel(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no running channel `{id}`"),
            vec![],
        )
    })?;
    let renditions: serde_json::Map<String, Value> = channel
        .renditions
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                serde_json::to_value(r.alignment()).unwrap_or_default(),
            )
        })
        .collect();
    Ok(Json(json!({ "channel": id, "renditions": renditions })))
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    limit: Option<u32>,
}

/// The channel's newest events (input loss, encoder restarts, lock, failover), newest first.
async fn events(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    let events = node.catalog.events(&id, limit).await.map_err(store_error)?;
    Ok(Json(json!({ "channel": id, "events": events })))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old key keeps working (default 10 minutes, at most a day).
    grace_seconds: Option<u64>,
}

/// Gives an RTMP input a new stream key, shown in this answer only; the old one keeps
/// opening the input for the grace time.
async fn rotate_stream_key(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path((id, input)): Path<(String, String)>,
    body: Option<Json<RotateRequest>>,
) -> Result<Json<Value>, ApiError> {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    let grace = std::time::Duration::from_secs(request.grace_seconds.unwrap_or(600));
    let (spec, key) = node.rotate_stream_key(&id, &input, grace).await?;
    let until = spec
        .retiring_keys
        .last()
        .map(|r| manifest::iso8601(r.until_ms))
        .unwrap_or_default();
    let url = node
        .input_urls(&spec)
        .into_iter()
        .find_map(|(name, url)| (name == input).then_some(url));
    audit(
        &node,
        &caller,
        &id,
        format!("rotated the stream key of input `{input}`; the old one works until {until}"),
    );
    Ok(Json(json!({
        "input": input,
        "stream_key": key,
        "input_url": url,
        "previous_key_valid_until": until,
        "note": "shown once: give it to the publisher now",
    })))
}

#[derive(serde::Deserialize)]
struct FaultRequest {
    feed: timeline::Feed,
    fault: pipeline::Fault,
    seconds: u64,
}

fn faults_allowed(node: &Node) -> Result<(), ApiError> {
    if node.server.allow_faults {
        return Ok(());
    }
    let why = "fault injection is off; start the node with --allow-faults (for chaos runs only)";
    Err(ApiError(StatusCode::FORBIDDEN, why.into(), vec![]))
}

/// Damages or delays one pipeline's deliveries, or cuts its inputs, for a while (chaos runs).
async fn inject_fault(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<FaultRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    faults_allowed(&node)?;
    let Json(request) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "malformed fault".into(),
            vec![e.body_text()],
        )
    })?;
    request
        .fault
        .check()
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why, vec![]))?;
    let faults = node.faults(&id, request.feed).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no running pipeline {} of `{id}`", request.feed),
            vec![],
        )
    })?;
    let lasting = std::time::Duration::from_secs(request.seconds.min(3600));
    tracing::warn!(channel = %id, feed = %request.feed, fault = ?request.fault, seconds = lasting.as_secs(), "fault injected");
    let detail = format!(
        "injected {:?} into pipeline {} for {} s",
        request.fault,
        request.feed,
        lasting.as_secs()
    );
    faults.inject(request.fault, lasting);
    audit(&node, &caller, &id, detail);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    faults_allowed(&node)?;
    for feed in timeline::Feed::BOTH {
        if let Some(faults) = node.faults(&id, feed) {
            faults.clear();
        }
    }
    audit(&node, &caller, &id, "cleared the faults".into());
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct HarvestRequest {
    name: String,
    /// Unix seconds (a number or a string) or ISO 8601.
    start: Value,
    end: Value,
}

fn time_of(v: &Value, field: &str) -> Result<std::time::Duration, ApiError> {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    origin::parse_time(&text)
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, format!("{field}: {why}"), vec![]))
}

fn origin_error(e: origin::OriginError) -> ApiError {
    ApiError(e.status(), e.to_string(), vec![])
}

/// A harvest job as the API shows it, with the asset's URLs.
fn describe_harvest(node: &Node, job: &store::HarvestRow) -> Value {
    let base = format!("http://{}/vod/{}", node.http, job.name);
    json!({
        "harvest": job,
        "playback": { "hls": format!("{base}/main.m3u8"), "dash": format!("{base}/manifest.mpd") },
    })
}

/// Starts a live-to-VOD harvest of a past range.
async fn create_harvest(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<HarvestRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "malformed harvest".into(),
            vec![e.body_text()],
        )
    })?;
    let range = (
        time_of(&request.start, "start")?,
        time_of(&request.end, "end")?,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let job = node
        .origin
        .harvest(&id, &request.name, range, now)
        .await
        .map_err(origin_error)?;
    audit(
        &node,
        &caller,
        &id,
        format!("started harvest `{}`", job.name),
    );
    Ok((StatusCode::CREATED, Json(describe_harvest(&node, &job))))
}

async fn harvest(
    State(node): State<Arc<Node>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let job = node.catalog.harvest(&name).await.map_err(store_error)?;
    let job = job.filter(|j| j.channel == id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no harvest `{name}` of `{id}`"),
            vec![],
        )
    })?;
    Ok(Json(describe_harvest(&node, &job)))
}

async fn harvests(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let jobs = node.catalog.harvests(&id).await.map_err(store_error)?;
    let jobs: Vec<Value> = jobs.iter().map(|j| describe_harvest(&node, j)).collect();
    Ok(Json(json!({ "channel": id, "harvests": jobs })))
}

/// Every node on the catalog: roles, where it is reached, its pid, when it was last seen
/// (`up` within a lease TTL, else `gone`; or `draining`) and the pipeline leases it holds.
async fn nodes(State(node): State<Arc<Node>>) -> Result<Json<Value>, ApiError> {
    let rows = node.catalog.nodes().await.map_err(store_error)?;
    let leases = node.catalog.leases().await.map_err(store_error)?;
    let ttl = node.server.leases.ttl_ms;
    let nodes: Vec<Value> = rows
        .iter()
        .map(|n| {
            let held: Vec<Value> = leases
                .iter()
                .filter(|l| !l.is_free() && l.holder.as_deref() == Some(n.id.as_str()))
                .map(|l| json!({ "channel": l.channel, "feed": l.feed, "epoch": l.epoch }))
                .collect();
            let state = if n.seen_ago_ms > ttl {
                "gone"
            } else if n.draining {
                "draining"
            } else {
                "up"
            };
            let mut shown = serde_json::to_value(n).unwrap_or_default();
            shown["state"] = json!(state);
            shown["leases"] = json!(held);
            shown
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

async fn drain(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_draining(&node, &caller, &id, true).await
}

async fn undrain(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_draining(&node, &caller, &id, false).await
}

async fn set_draining(
    node: &Node,
    caller: &Caller,
    id: &str,
    draining: bool,
) -> Result<StatusCode, ApiError> {
    let found = node
        .catalog
        .set_draining(id, draining)
        .await
        .map_err(store_error)?;
    if !found {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node `{id}`"),
            vec![],
        ));
    }
    let change = if draining { "drained" } else { "undrained" };
    audit(node, caller, "", format!("{change} node `{id}`"));
    Ok(StatusCode::NO_CONTENT)
}

/// Events of no channel: changes to nodes and tokens, newest first.
async fn cluster_events(
    State(node): State<Arc<Node>>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    let events = node.catalog.events("", limit).await.map_err(store_error)?;
    Ok(Json(json!({ "events": events })))
}
