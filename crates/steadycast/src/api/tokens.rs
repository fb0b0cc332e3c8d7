//! `/api/v1/tokens`: the admin's view of the control API's tokens. A token's secret is in the
//! answer that creates it and nowhere else.

use std::sync::Arc;

use access::{Scope, TokenSecret, valid_token_name};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{ApiError, audit, store_error};
use crate::auth::Caller;
use crate::node::Node;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    name: String,
    scope: Scope,
}

pub(super) async fn list(State(node): State<Arc<Node>>) -> Result<Json<Value>, ApiError> {
    let tokens = node.catalog.tokens().await.map_err(store_error)?;
    Ok(Json(json!({ "tokens": tokens })))
}

pub(super) async fn create(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "malformed token request".into(),
            vec![e.body_text()],
        )
    })?;
    valid_token_name(&request.name)
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why, vec![]))?;
    let token = TokenSecret::from_random(rand::random());
    let scope = request.scope.as_str();
    let created = node
        .catalog
        .insert_token(&request.name, scope, &token.hash())
        .await
        .map_err(store_error)?;
    if !created {
        let why = format!("a live token is named `{}`", request.name);
        return Err(ApiError(StatusCode::CONFLICT, why, vec![]));
    }
    audit(
        &node,
        &caller,
        "",
        format!("created {scope} token `{}`", request.name),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": request.name,
            "scope": scope,
            "token": token.expose(),
            "note": "shown once: keep it now",
        })),
    ))
}

pub(super) async fn revoke(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !node
        .catalog
        .revoke_token(&name)
        .await
        .map_err(store_error)?
    {
        let why = format!("no live token `{name}`");
        return Err(ApiError(StatusCode::NOT_FOUND, why, vec![]));
    }
    audit(&node, &caller, "", format!("revoked token `{name}`"));
    Ok(StatusCode::NO_CONTENT)
}
