//! The web dashboard: `/` lists the node's channels (through the API) and previews one with
//! hls.js or dash.js; `/player/hls.min.js` and `/player/dash.all.min.js` are those players,
//! vendored in `assets/` (see `assets/README.md`) and built into the binary, so the page needs
//! nothing from outside the node.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::node::Node;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const HLS_JS: &[u8] = include_bytes!("../assets/hls.min.js");
const DASH_JS: &[u8] = include_bytes!("../assets/dash.all.min.js");

/// Everything the page loads comes from this node: the policy makes a stray external URL fail
/// loudly instead of leaking requests. `blob:` is for the players' MediaSource URLs and hls.js's
/// worker.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src 'self' data:; media-src 'self' blob:; \
     worker-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'";

/// The page reads everything it shows through `/api/v1`, so it needs no state of its own; the
/// node is taken for symmetry with the other routers.
pub fn router(_node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/player/hls.min.js", get(|| player(HLS_JS)))
        .route("/player/dash.all.min.js", get(|| player(DASH_JS)))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        INDEX_HTML,
    )
}

async fn player(script: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        script,
    )
}
