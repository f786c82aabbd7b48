//! Admin API on messages: list and delete retained messages, publish a message as the broker.

use std::{sync::Arc, time::Duration};

use axum::{extract::State, Json};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use bytes::Bytes;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::{json, Value};
use starling_core::{
    codec::{PublishProperties, QoS},
    message::{Message, ReceivedAt, SessionId},
    topic::{self, TopicFilter},
};
use tokio::time::Instant;

use crate::admin::{AdminState, ApiError, ApiJson, ApiQuery, ApiResult};

/// Largest page of `GET /api/v1/retained`.
const MAX_RETAINED_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetainedParams {
    filter: Option<String>,
    topic: Option<String>,
    limit: Option<usize>,
}

fn validate_filter(state: &AdminState, filter: &str) -> ApiResult<()> {
    let parsed = TopicFilter::parse(
        &ByteString::from(filter),
        state.broker.limits().max_topic_levels,
    )
    .map_err(|error| ApiError::bad_request(format!("invalid topic filter {filter:?}: {error}")))?;
    if parsed.is_shared() {
        return Err(ApiError::bad_request(
            "a shared subscription filter ($share/...) selects no retained messages",
        ));
    }
    Ok(())
}

fn validate_topic(state: &AdminState, topic_name: &str) -> ApiResult<()> {
    topic::validate_topic_name(topic_name, state.broker.limits().max_topic_levels)
        .map_err(|error| ApiError::bad_request(format!("invalid topic {topic_name:?}: {error}")))
}

fn message_json(message: &Message, now: Instant) -> Value {
    let payload_utf8 = std::str::from_utf8(&message.payload).ok();
    json!({
        "topic": message.topic.to_string(),
        "qos": message.qos as u8,
        "payload": payload_utf8,
        "payload_base64": BASE64.encode(&message.payload),
        "payload_bytes": message.payload.len(),
        "content_type": message.properties.content_type.as_ref().map(ToString::to_string),
        "message_expiry_secs": message.remaining_expiry(now).ok().flatten(),
    })
}

/// `GET /api/v1/retained?filter=#&limit=100`: retained messages matching a filter, by topic.
pub(crate) async fn list_retained(
    State(state): State<AdminState>,
    ApiQuery(params): ApiQuery<RetainedParams>,
) -> ApiResult<Json<Value>> {
    if params.topic.is_some() {
        return Err(ApiError::bad_request(
            "use filter= to list retained messages (a topic name is a filter too)",
        ));
    }
    let filter = params.filter.unwrap_or_else(|| "#".to_string());
    validate_filter(&state, &filter)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_RETAINED_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_RETAINED_PAGE}, got {limit}"
        )));
    }
    let router = state.broker.router().clone();
    let listed_filter = filter.clone();
    let mut messages =
        tokio::task::spawn_blocking(move || router.list_retained(&listed_filter, limit + 1))
            .await
            .unwrap_or_default();
    let truncated = messages.len() > limit;
    messages.truncate(limit);
    let now = Instant::now();
    let messages: Vec<Value> = messages.iter().map(|m| message_json(m, now)).collect();
    Ok(Json(
        json!({ "filter": filter, "messages": messages, "truncated": truncated }),
    ))
}

/// `DELETE /api/v1/retained?topic=a/b` clears one topic; `?filter=a/#` clears every match.
pub(crate) async fn delete_retained(
    State(state): State<AdminState>,
    ApiQuery(params): ApiQuery<RetainedParams>,
) -> ApiResult<Json<Value>> {
    if params.limit.is_some() {
        return Err(ApiError::bad_request("limit does not apply to a deletion"));
    }
    let router = state.broker.router().clone();
    let num_cleared = match (params.topic, params.filter) {
        (Some(topic_name), None) => {
            validate_topic(&state, &topic_name)?;
            let existed = !router.list_retained(&topic_name, 1).is_empty();
            router.set_retained(&topic_name, None);
            usize::from(existed)
        }
        (None, Some(filter)) => {
            validate_filter(&state, &filter)?;
            tokio::task::spawn_blocking(move || router.clear_retained(&filter))
                .await
                .unwrap_or_default()
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give topic= (one topic) or filter= (every match, e.g. filter=%23 for all)",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either topic= or filter=, not both",
            ))
        }
    };
    tracing::info!(
        num_cleared,
        "retained messages cleared through the admin api"
    );
    Ok(Json(json!({ "cleared": num_cleared })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserProperty {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    topic: String,
    /// UTF-8 payload.
    payload: Option<String>,
    /// Binary payload, standard base64.
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    message_expiry_secs: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    #[serde(default)]
    user_properties: Vec<UserProperty>,
}

/// `POST /api/v1/publish`: publishes a message as the broker (retained handling, then routing).
pub(crate) async fn publish(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<PublishRequest>,
) -> ApiResult<Json<Value>> {
    let limits = state.broker.limits();
    validate_topic(&state, &request.topic)?;
    let payload = match (request.payload, request.payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => {
            Bytes::from(BASE64.decode(encoded.as_bytes()).map_err(|error| {
                ApiError::bad_request(format!("payload_base64 is not valid base64: {error}"))
            })?)
        }
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either payload or payload_base64, not both",
            ))
        }
    };
    if payload.len() > limits.max_packet_size as usize {
        return Err(ApiError::bad_request(format!(
            "payload of {} bytes exceeds mqtt.max_packet_size_bytes ({})",
            payload.len(),
            limits.max_packet_size
        )));
    }
    let qos = QoS::from_u8(request.qos).map_err(|_| {
        ApiError::bad_request(format!("qos must be 0, 1 or 2, got {}", request.qos))
    })?;
    if qos > limits.maximum_qos {
        return Err(ApiError::bad_request(format!(
            "qos {} exceeds mqtt.maximum_qos ({})",
            request.qos, limits.maximum_qos as u8
        )));
    }
    if request.retain && !limits.retain_available {
        return Err(ApiError::bad_request(
            "retained messages are disabled (mqtt.retain_available = false)",
        ));
    }
    if let Some(response_topic) = &request.response_topic {
        validate_topic(&state, response_topic)?;
    }
    let properties = PublishProperties {
        message_expiry_interval: request.message_expiry_secs,
        content_type: request.content_type.map(ByteString::from),
        response_topic: request.response_topic.map(ByteString::from),
        user_properties: request
            .user_properties
            .into_iter()
            .map(|p| (ByteString::from(p.key), ByteString::from(p.value)))
            .collect(),
        ..PublishProperties::default()
    };
    let expires_at = request
        .message_expiry_secs
        .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
    let message = Arc::new(Message {
        topic: ByteString::from(request.topic.as_str()),
        payload,
        qos,
        retain: request.retain,
        properties,
        expires_at,
        publisher: SessionId::SYSTEM,
        received_at: ReceivedAt::at(Instant::now()),
    });
    let num_queued = state.broker.publish(message);
    tracing::info!(topic = %request.topic, qos = request.qos, retain = request.retain, num_queued, "message published through the admin api");
    Ok(Json(json!({ "queued_for": num_queued })))
}
