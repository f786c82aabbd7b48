//! Admin API on the node itself: status, listeners, effective configuration (secrets
//! redacted), runtime log level, and the OpenAPI document.

use crate::{
    admin::{rfc3339, AdminState, ApiError, ApiJson, ApiResult},
    config::effective_config_json,
    logging::LogLevelError,
};
use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::IntoResponse,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The OpenAPI 3.0 document of the API, written by hand.
pub(crate) const OPENAPI_JSON: &str = include_str!("openapi.json");

/// `GET /api/v1/status`: one glance at the node.
pub(crate) async fn status(State(state): State<AdminState>) -> ApiResult<Json<Value>> {
    let stats = state.broker.registry().stats().await?;
    let (num_retained, num_subscriptions) = state.broker.router().counts();
    Ok(Json(json!({
        "node_id": state.config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": state.readiness.is_ready(),
        "started_at": rfc3339(state.started_at_wall),
        "uptime_secs": state.started_at.elapsed().as_secs(),
        "connections": state.broker.num_connections(),
        "sessions_online": stats.num_online,
        "sessions_offline": stats.num_offline,
        "queued_messages": stats.num_queued_messages,
        "pending_wills": stats.num_pending_wills,
        "subscriptions": num_subscriptions,
        "shared_subscription_groups": state.broker.router().num_shared_groups(),
        "retained_messages": num_retained,
    })))
}

/// `GET /api/v1/listeners`.
pub(crate) async fn listeners(State(state): State<AdminState>) -> Json<Value> {
    let mut listeners: Vec<Value> = state
        .listeners
        .iter()
        .map(|listener| {
            json!({
                "name": listener.name,
                "protocol": listener.protocol,
                "address": listener.addr.to_string(),
            })
        })
        .collect();
    listeners.push(
        json!({ "name": "admin", "protocol": "http", "address": state.admin_addr.to_string() }),
    );
    Json(json!({ "listeners": listeners }))
}

/// `GET /api/v1/config`.
pub(crate) async fn effective_config(State(state): State<AdminState>) -> Json<Value> {
    Json(effective_config_json(&state.config))
}

fn log_control_unavailable() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "this node runs without a reloadable log filter (started embedded, not by `starling serve`)",
    )
}

/// `GET /api/v1/log-level`.
pub(crate) async fn log_level(State(state): State<AdminState>) -> ApiResult<Json<Value>> {
    let control = state
        .log_control
        .as_ref()
        .ok_or_else(log_control_unavailable)?;
    Ok(Json(json!({ "level": control.level() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetLogLevel {
    /// `tracing` filter directives, e.g. `info` or `info,starling_core=debug`.
    level: String,
}

/// `PUT /api/v1/log-level` with `{"level": "debug"}`.
pub(crate) async fn set_log_level(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<SetLogLevel>,
) -> ApiResult<Json<Value>> {
    let control = state
        .log_control
        .as_ref()
        .ok_or_else(log_control_unavailable)?;
    match control.set_level(&request.level) {
        Ok(()) => Ok(Json(json!({ "level": control.level() }))),
        Err(error @ LogLevelError::Invalid { .. }) => Err(ApiError::bad_request(error.to_string())),
        Err(error @ LogLevelError::Unavailable(_)) => Err(ApiError::unavailable(error.to_string())),
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn openapi() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
}
