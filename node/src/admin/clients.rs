//! Admin API on clients and sessions: list (paged, by client id prefix), details, kick
//! (DISCONNECT 0x98), subscriptions, and deletion of a session.

use std::{collections::HashSet, time::Duration};

use axum::{extract::State, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use starling_core::{
    codec::{ProtocolVersion, ReasonCode, RetainHandling},
    message::SessionId,
    registry::{DeleteSessionOutcome, SessionInfo, SessionQuery},
    router::SubscriptionInfo,
};

use crate::admin::{rfc3339, AdminState, ApiError, ApiPath, ApiQuery, ApiResult};

/// Largest page of `GET /api/v1/clients`.
const MAX_PAGE_SIZE: usize = 1000;
/// Page size when none is asked for.
const DEFAULT_PAGE_SIZE: usize = 100;
/// How long `DELETE /api/v1/sessions/{id}?kick=true` waits for the kicked connection to close.
const KICK_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn protocol_name(protocol: ProtocolVersion) -> &'static str {
    match protocol {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn client_json(info: &SessionInfo, num_subscriptions: usize) -> Value {
    let connection = info.connection.as_ref();
    json!({
        "client_id": info.client_id.to_string(),
        "connected": info.online,
        "protocol_version": connection.map(|c| protocol_name(c.protocol)),
        "peer_address": connection.map(|c| c.peer.to_string()),
        "keep_alive_secs": connection.map(|c| c.keep_alive_secs),
        "connected_at": connection.map(|c| rfc3339(c.connected_at())),
        "queued_messages": info.num_queued_messages,
        "subscriptions": num_subscriptions,
    })
}

fn not_found(client_id: &str) -> ApiError {
    ApiError::not_found(format!("no session with client id {client_id:?}"))
}

async fn session_or_404(state: &AdminState, client_id: &str) -> ApiResult<SessionInfo> {
    state
        .broker
        .registry()
        .get_session(client_id)
        .await?
        .ok_or_else(|| not_found(client_id))
}

/// Walks the topic shards off the async workers: a large table takes milliseconds.
async fn subscriptions_of(state: &AdminState, session_id: SessionId) -> Vec<SubscriptionInfo> {
    let router = state.broker.router().clone();
    tokio::task::spawn_blocking(move || router.subscriptions_of(session_id))
        .await
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/clients?prefix=&after=&limit=`: sessions sorted by client id, connected or not.
pub(crate) async fn list(
    State(state): State<AdminState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Value>> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        )));
    }
    let sessions = state
        .broker
        .registry()
        .list_sessions(SessionQuery {
            client_id_prefix: params.prefix.unwrap_or_default(),
            after: params.after,
            limit,
        })
        .await?;
    let session_ids: HashSet<SessionId> = sessions.iter().map(|s| s.handle.id()).collect();
    let router = state.broker.router().clone();
    let counts = tokio::task::spawn_blocking(move || router.subscription_counts(&session_ids))
        .await
        .unwrap_or_default();
    let next_after = (sessions.len() == limit)
        .then(|| sessions.last().map(|s| s.client_id.to_string()))
        .flatten();
    let clients: Vec<Value> = sessions
        .iter()
        .map(|info| client_json(info, counts.get(&info.handle.id()).copied().unwrap_or(0)))
        .collect();
    Ok(Json(
        json!({ "clients": clients, "next_after": next_after }),
    ))
}

/// `GET /api/v1/clients/{client_id}` and `GET /api/v1/sessions/{client_id}`.
pub(crate) async fn details(
    State(state): State<AdminState>,
    ApiPath(client_id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = session_or_404(&state, &client_id).await?;
    let num_subscriptions = subscriptions_of(&state, info.handle.id()).await.len();
    let mut body = client_json(&info, num_subscriptions);
    body["session_id"] = json!(info.handle.id().0);
    body["session_expires_in_secs"] = json!(info.expires_in.map(|left| left.as_secs()));
    body["will_pending"] = json!(info.will_pending);
    Ok(Json(body))
}

/// `POST /api/v1/clients/{client_id}/kick`: closes the connection with DISCONNECT 0x98
/// (Administrative action); the session lives on according to its expiry.
pub(crate) async fn kick(
    State(state): State<AdminState>,
    ApiPath(client_id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = session_or_404(&state, &client_id).await?;
    if !info.online {
        return Err(ApiError::conflict(format!(
            "client {client_id:?} is not connected (its session is kept offline; DELETE /api/v1/sessions/{{client_id}} ends it)"
        )));
    }
    info.handle.kick(ReasonCode::AdministrativeAction);
    tracing::info!(%client_id, reason_code = "0x98", "client kicked by an operator");
    Ok(Json(json!({ "client_id": client_id, "kicked": true })))
}

fn retain_handling_number(retain_handling: RetainHandling) -> u8 {
    match retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    }
}

/// `GET /api/v1/clients/{client_id}/subscriptions`.
pub(crate) async fn subscriptions(
    State(state): State<AdminState>,
    ApiPath(client_id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = session_or_404(&state, &client_id).await?;
    let subscriptions: Vec<Value> = subscriptions_of(&state, info.handle.id())
        .await
        .into_iter()
        .map(|subscription| {
            let topic_filter = match &subscription.share_group {
                Some(group) => format!("$share/{group}/{}", subscription.filter),
                None => subscription.filter.to_string(),
            };
            json!({
                "topic_filter": topic_filter,
                "share_group": subscription.share_group.as_ref().map(ToString::to_string),
                "qos": subscription.options.qos as u8,
                "no_local": subscription.options.no_local,
                "retain_as_published": subscription.options.retain_as_published,
                "retain_handling": retain_handling_number(subscription.options.retain_handling),
                "subscription_identifier": (subscription.subscription_id != 0).then_some(subscription.subscription_id),
            })
        })
        .collect();
    Ok(Json(
        json!({ "client_id": client_id, "subscriptions": subscriptions }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteParams {
    kick: Option<bool>,
}

/// `DELETE /api/v1/sessions/{client_id}?kick=true`: ends a session (its subscriptions and
/// queued messages are discarded, a pending will is published). A connected client is refused
/// with 409 unless `kick=true`, which first closes its connection with DISCONNECT 0x98.
pub(crate) async fn delete_session(
    State(state): State<AdminState>,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> ApiResult<Json<Value>> {
    let registry = state.broker.registry();
    let deadline = tokio::time::Instant::now() + KICK_WAIT;
    let mut kicked = false;
    loop {
        match registry.delete_session(&client_id).await? {
            DeleteSessionOutcome::Deleted => break,
            DeleteSessionOutcome::NotFound if kicked => {
                // The kicked session had no expiry and ended with its connection.
                break;
            }
            DeleteSessionOutcome::NotFound => return Err(not_found(&client_id)),
            DeleteSessionOutcome::Online if !params.kick.unwrap_or(false) => {
                return Err(ApiError::conflict(format!(
                    "client {client_id:?} is connected: kick it first or pass kick=true"
                )));
            }
            DeleteSessionOutcome::Online => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::conflict(format!(
                        "client {client_id:?} is still connected {} s after the kick (did it reconnect?)",
                        KICK_WAIT.as_secs()
                    )));
                }
                if !kicked {
                    if let Some(info) = registry.get_session(&client_id).await? {
                        info.handle.kick(ReasonCode::AdministrativeAction);
                    }
                    kicked = true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tracing::info!(%client_id, kicked, "session deleted through the admin api");
    Ok(Json(
        json!({ "client_id": client_id, "deleted": true, "kicked": kicked }),
    ))
}
