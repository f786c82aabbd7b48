//! The admin HTTP listener (axum): `/healthz`, `/readyz`, `/metrics` and the REST API under
//! `/api/v1` that `starling ctl` wraps.
//!
//! The API answers JSON only. Errors are `{"error": "<code>", "message": "<text>"}` with a 4xx
//! status for anything the caller can fix (bad JSON, unknown client, missing token) and a 5xx
//! status only when the node itself cannot answer. When `admin.token` is set, every `/api/v1`
//! request needs `Authorization: Bearer <token>`; the probes and `/metrics` never do.
//!
//! - [`bans`]: the ban list (list, add, remove), kept in `auth.ban_file`.
//! - [`clients`]: clients and sessions (list, details, kick, subscriptions, delete).
//! - [`messages`]: retained messages and publishing.
//! - [`node_info`]: status, listeners, effective configuration, log level, OpenAPI document.

mod bans;
mod clients;
mod messages;
mod node_info;

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use axum::{
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use starling_core::Broker;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{auth::NodeAuth, config::NodeConfig, logging::LogControl, readiness::Readiness};

/// Admin API requests handled at once; the others wait. Each one makes at most one call per
/// registry shard at a time, so this bounds what the API puts into the actors' mailboxes.
const MAX_CONCURRENT_API_REQUESTS: usize = 8;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState(Arc<AdminShared>);

pub(crate) struct AdminShared {
    pub(crate) broker: Broker,
    pub(crate) config: NodeConfig,
    pub(crate) readiness: Readiness,
    /// `None` when `admin.metrics` is off or another recorder was installed first.
    pub(crate) prometheus: Option<PrometheusHandle>,
    /// `None` when the node runs without a reloadable log filter (embedded, most tests).
    pub(crate) log_control: Option<LogControl>,
    pub(crate) started_at: Instant,
    pub(crate) started_at_wall: SystemTime,
    pub(crate) listeners: Vec<ListenerInfo>,
    pub(crate) admin_addr: SocketAddr,
    /// The auth provider, woken after a ban list edit; `None` without an auth configuration.
    pub(crate) auth: Option<Arc<NodeAuth>>,
    /// Held across a read-modify-write of the ban file, so concurrent edits don't lose one.
    pub(crate) ban_edits: tokio::sync::Mutex<()>,
    api_permits: Semaphore,
}

impl std::ops::Deref for AdminState {
    type Target = AdminShared;

    fn deref(&self) -> &AdminShared {
        &self.0
    }
}

/// Everything the admin listener needs besides the listener itself.
pub(crate) struct AdminArgs {
    pub(crate) broker: Broker,
    pub(crate) config: NodeConfig,
    pub(crate) readiness: Readiness,
    pub(crate) prometheus: Option<PrometheusHandle>,
    pub(crate) log_control: Option<LogControl>,
    pub(crate) listeners: Vec<ListenerInfo>,
    pub(crate) auth: Option<Arc<NodeAuth>>,
}

/// One MQTT listener as `GET /api/v1/listeners` shows it.
pub(crate) struct ListenerInfo {
    pub(crate) name: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub(crate) protocol: &'static str,
    pub(crate) addr: SocketAddr,
}

/// Serves the admin listener until `shutdown` is cancelled.
pub(crate) async fn serve(listener: TcpListener, args: AdminArgs, shutdown: CancellationToken) {
    let admin_addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "admin listener has no local address");
            return;
        }
    };
    let state = AdminState(Arc::new(AdminShared {
        broker: args.broker,
        config: args.config,
        readiness: args.readiness,
        prometheus: args.prometheus,
        log_control: args.log_control,
        started_at: Instant::now(),
        started_at_wall: SystemTime::now(),
        listeners: args.listeners,
        admin_addr,
        auth: args.auth,
        ban_edits: tokio::sync::Mutex::new(()),
        api_permits: Semaphore::new(MAX_CONCURRENT_API_REQUESTS),
    }));
    let app = router(state);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(%error, "admin listener failed");
    }
}

fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/status", get(node_info::status))
        .route("/clients", get(clients::list))
        .route("/clients/{client_id}", get(clients::details))
        .route("/clients/{client_id}/kick", post(clients::kick))
        .route(
            "/clients/{client_id}/subscriptions",
            get(clients::subscriptions),
        )
        .route(
            "/sessions/{client_id}",
            get(clients::details).delete(clients::delete_session),
        )
        .route(
            "/retained",
            get(messages::list_retained).delete(messages::delete_retained),
        )
        .route("/publish", post(messages::publish))
        .route(
            "/bans",
            get(bans::list).post(bans::add).delete(bans::remove),
        )
        .route("/listeners", get(node_info::listeners))
        .route("/config", get(node_info::effective_config))
        .route(
            "/log-level",
            get(node_info::log_level).put(node_info::set_log_level),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        // The OpenAPI document describes the API; it holds no secret, so it needs no token.
        .route("/openapi.json", get(node_info::openapi));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An error answer: `{"error": code, "message": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"starling\""),
            );
        }
        response
    }
}

impl From<starling_core::registry::RegistryUnavailable> for ApiError {
    fn from(error: starling_core::registry::RegistryUnavailable) -> Self {
        ApiError::unavailable(error.to_string())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejections are JSON errors (400 bad JSON, 415 wrong content type, 422 wrong
/// fields, 413 too large).
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
}

/// `Query<T>` whose rejections are JSON 400 errors.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// `Path<T>` whose rejections are JSON 400 errors.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the bearer token (when one is configured) and bounds concurrent API requests.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.config.admin.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let authorized = presented
            .is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes()));
        if !authorized {
            let message = if presented.is_some() {
                "the bearer token is wrong"
            } else {
                "this API needs `Authorization: Bearer <admin.token>`"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
                .into_response();
        }
    }
    let _permit = state
        .api_permits
        .acquire()
        .await
        .expect("the API semaphore is never closed");
    next.run(request).await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.readiness.is_ready() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready" })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let Some(prometheus) = &state.prometheus else {
        return ApiError::not_found(
            "metrics are disabled: set admin.metrics = true (or another metrics recorder was installed first)",
        )
        .into_response();
    };
    crate::metrics::sample_gauges(&state.broker, state.readiness.is_ready()).await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(prometheus),
    )
        .into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {} (see /api/v1/openapi.json)",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Formats a time as RFC 3339 UTC with second precision (`2026-11-26T12:00:00Z`).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = (secs / 86_400) as i64;
    let secs_of_day = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_693_581)), "2026-11-26T11:46:21Z");
    }

    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
