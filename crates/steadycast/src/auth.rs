//! The control API's door. Every `/api/v1` request carries `Authorization: Bearer <token>`;
//! the token's scope must cover the request (`read` for a GET, `operator` for a change,
//! `admin` for tokens). A missing or unknown token is a 401, a token of too small a scope a
//! 403, each with a JSON reason that names no token. An address that presents wrong tokens
//! too often is refused (429) until its window ends, before its attempt costs a catalog read.
//! The first node to find no live token makes an admin one and shows it once.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use access::{FailureLimiter, Scope, TokenSecret, bearer, token_hash};
use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use store::Catalog;

use crate::node::now_ms;

/// Wrong tokens an address may present per window before it is refused.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW_MS: u64 = 60_000;
/// Addresses the limiter follows at once (a flood of addresses costs counts, not memory).
const MAX_ADDRESSES: usize = 10_000;
/// Where the token made at first start is written, in the data directory (mode 0600).
pub const TOKEN_FILE: &str = "admin-token";

/// Who made a request: put in its extensions for the handlers' audit events.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (never its secret).
    pub token: String,
}

pub struct ApiAuth {
    catalog: Catalog,
    limiter: Mutex<FailureLimiter>,
    /// Proxies whose `X-Forwarded-For` names the client the limiter counts.
    trusted_proxies: Vec<access::Cidr>,
}

impl ApiAuth {
    pub fn new(catalog: Catalog, trusted_proxies: Vec<access::Cidr>) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            trusted_proxies,
            limiter: Mutex::new(FailureLimiter::new(
                MAX_FAILURES,
                FAILURE_WINDOW_MS,
                MAX_ADDRESSES,
            )),
        })
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The scope a request needs: tokens are the admin's; anything that changes state is an
/// operator's; reading is everyone's with a token.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    if path == "/api/v1/tokens" || path.starts_with("/api/v1/tokens/") {
        Scope::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else {
        Scope::Operator
    }
}

/// The middleware in front of every `/api/v1` route.
pub async fn require_token(
    State(auth): State<Arc<ApiAuth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let needed = required_scope(request.method(), &path);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let peer = access::client_address(peer, forwarded, &auth.trusted_proxies);
    match authenticate(&auth, request.headers(), peer, needed).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn authenticate(
    auth: &ApiAuth,
    headers: &axum::http::HeaderMap,
    peer: IpAddr,
    needed: Scope,
) -> Result<Caller, Refusal> {
    if let Err(wait_ms) = auth.limiter().check(peer, now_ms()) {
        return Err(Refusal::Limited { wait_ms });
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(Refusal::Missing)?;
    let found = auth
        .catalog
        .token_by_hash(&token_hash(presented))
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    let Some((token, scope)) = found else {
        auth.limiter().failed(peer, now_ms());
        return Err(Refusal::Invalid);
    };
    let scope: Scope = scope.parse().map_err(Refusal::Unavailable)?;
    if !scope.allows(needed) {
        return Err(Refusal::Scope { scope, needed });
    }
    Ok(Caller { token })
}

enum Refusal {
    Missing,
    Invalid,
    Scope { scope: Scope, needed: Scope },
    Limited { wait_ms: u64 },
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, reason, why) = match &self {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "missing",
                "this API needs a token: `Authorization: Bearer <token>` (steadycast token \
                 create makes one; the CLI reads STEADYCAST_TOKEN)"
                    .to_string(),
            ),
            Refusal::Invalid => (
                StatusCode::UNAUTHORIZED,
                "invalid",
                "the token is not valid (unknown or revoked)".to_string(),
            ),
            Refusal::Scope { scope, needed } => (
                StatusCode::FORBIDDEN,
                "scope",
                format!("a {scope} token cannot do this: it needs the {needed} scope"),
            ),
            Refusal::Limited { wait_ms } => (
                StatusCode::TOO_MANY_REQUESTS,
                "limited",
                format!(
                    "too many invalid tokens from this address; try again in {} s",
                    wait_ms.div_ceil(1000)
                ),
            ),
            Refusal::Unavailable(e) => {
                tracing::warn!(error = %e, "cannot check an API token");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "tokens cannot be checked now (the catalog does not answer)".to_string(),
                )
            }
        };
        metrics::counter!("steadycast_api_auth_refused_total", "reason" => reason).increment(1);
        let mut response = (status, Json(json!({ "error": why, "details": [] }))).into_response();
        let headers = response.headers_mut();
        match self {
            Refusal::Missing | Refusal::Invalid => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"steadycast\""),
                );
            }
            Refusal::Limited { wait_ms } => {
                if let Ok(v) = HeaderValue::from_str(&wait_ms.div_ceil(1000).to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

/// At start-up: a token from config (or `STEADYCAST_ADMIN_TOKEN`) becomes the live `admin`
/// token; otherwise, when no token is live, a new admin token is made, written to
/// `{data_dir}/admin-token` (mode 0600) and printed once on standard output (never to the
/// log). Returns the token made, if this node made one.
pub async fn bootstrap(
    catalog: &Catalog,
    given: Option<&TokenSecret>,
    data_dir: &Path,
) -> anyhow::Result<Option<TokenSecret>> {
    if let Some(token) = given {
        catalog
            .put_token("admin", Scope::Admin.as_str(), &token.hash())
            .await?;
        return Ok(None);
    }
    if catalog.has_live_token().await? {
        return Ok(None);
    }
    let token = TokenSecret::from_random(rand::random());
    // Another node of a cluster may make the first token at the same moment: one wins.
    if !catalog
        .insert_token("admin", Scope::Admin.as_str(), &token.hash())
        .await?
    {
        return Ok(None);
    }
    write_private(&data_dir.join(TOKEN_FILE), token.expose())?;
    Ok(Some(token))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_route() {
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/channels"),
            Scope::Read
        );
        assert_eq!(
            required_scope(&Method::POST, "/api/v1/channels"),
            Scope::Operator
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/nodes/{id}/drain"),
            Scope::Operator
        );
        assert_eq!(required_scope(&Method::GET, "/api/v1/tokens"), Scope::Admin);
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/tokens/{name}"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&Method::GET, "/api/v1/tokensmith"),
            Scope::Read
        );
    }
}
