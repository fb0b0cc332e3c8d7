use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to an HTTP client: a status and a sentence saying why.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// A playback request without what its channel asks for (a signed token, a CDN header).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The upload's lease epoch is not its feed's current one: another node runs that
    /// pipeline now.
    #[error("{0}")]
    Fenced(String),
    #[error("range not satisfiable: {0}")]
    Range(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("store: {0}")]
    Store(store::StoreError),
    /// This origin cannot answer as the others would (it lags the catalog): ask another.
    #[error("{0}")]
    Unavailable(String),
}

impl From<store::StoreError> for OriginError {
    /// A key that is not a safe path came from a request (`/vod/x/../..`): the client's
    /// mistake, not a failing store.
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::BadKey(_) => OriginError::BadRequest(e.to_string()),
            e => OriginError::Store(e),
        }
    }
}

impl OriginError {
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OriginError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            OriginError::Forbidden(_) => StatusCode::FORBIDDEN,
            OriginError::NotFound(_) => StatusCode::NOT_FOUND,
            OriginError::Conflict(_) | OriginError::Fenced(_) => StatusCode::CONFLICT,
            OriginError::Range(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            OriginError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            OriginError::Store(_) | OriginError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for OriginError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        if matches!(self, OriginError::Store(_)) {
            // A full disk or a failing store: what is already listed keeps being served from
            // memory and the store; this counts what could not be done.
            metrics::counter!("steadycast_store_errors_total").increment(1);
        }
        // Errors are never cached for long: a 404 segment may exist a moment later.
        (status, [("cache-control", "no-store")], format!("{self}\n")).into_response()
    }
}
