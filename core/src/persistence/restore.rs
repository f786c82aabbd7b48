//! Rebuilds the broker's in-memory state from a recovered store: parked sessions with their
//! queues and in-flight messages, subscriptions, retained messages and pending wills.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytestring::ByteString;
use tokio::time::Instant;

use crate::{
    codec::{PacketId, ProtocolVersion, QoS},
    message::{Delivery, Message, SessionId, StoredRef, SubscriptionIds},
    persistence::Persistence,
    registry::{PendingWill, RestoredSession, SessionRegistry},
    router::Router,
    session::{Outbound, OutboundState, SessionHandle, SessionState, StoredSubscription},
    storage::{
        records::{InflightState, WillRecord},
        RecoveredSession, RecoveredState, RecoveryCounts,
    },
};

/// Restores everything `recovered` holds into the router and the registry, publishes wills
/// that fell due while the broker was down, and submits recovery's clean-up batch.
pub(crate) async fn restore(
    persistence: &Persistence,
    router: &Router,
    registry: &SessionRegistry,
    recovered: RecoveredState,
) -> RecoveryCounts {
    let now = Instant::now();
    let RecoveredState {
        sessions,
        messages,
        retained,
        wills,
        mut cleanup,
        counts,
        ..
    } = recovered;
    let shared: HashMap<u64, Arc<Message>> = messages
        .into_iter()
        .map(|(message_id, record)| (message_id, persistence.message_from_record(record)))
        .collect();
    for record in retained {
        let message = persistence.message_from_record(record);
        let topic = message.topic.clone();
        router.set_retained(&topic, Some(message));
    }
    let mut wills: HashMap<ByteString, WillRecord> = wills.into_iter().collect();
    // PUBREL-stage in-flight entries need no message; they share one placeholder.
    let released_placeholder = Arc::new(Message {
        topic: ByteString::new(),
        payload: bytes::Bytes::new(),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
        publisher: SessionId::SYSTEM,
        received_at: crate::message::ReceivedAt::UNKNOWN,
    });
    for session in sessions {
        let client_id = session.session.client_id.clone();
        let will = wills.remove(&client_id);
        let restored = restore_session(
            persistence,
            router,
            session,
            will,
            &shared,
            &released_placeholder,
            now,
        );
        registry.restore(restored);
    }
    // Wills whose session is gone (it expired while the broker was down) are due now.
    for (client_id, will) in wills {
        router.publish(&persistence.message_from_record(will.message));
        cleanup.delete_will(&client_id);
    }
    persistence.submit_detached(cleanup);
    // The registry handled every restore once it answers a later call.
    let _ = registry.count().await;
    counts
}

fn restore_session(
    persistence: &Persistence,
    router: &Router,
    session: RecoveredSession,
    will: Option<WillRecord>,
    shared: &HashMap<u64, Arc<Message>>,
    released_placeholder: &Arc<Message>,
    now: Instant,
) -> RestoredSession {
    let record = session.session;
    let session_id = SessionId(record.session_id);
    let client_id = record.client_id.clone();
    let mut state = SessionState::new(session_id, ProtocolVersion::V5);
    state.session_expiry_secs = record.session_expiry_interval_secs;
    state.subscriptions = session
        .subscriptions
        .into_iter()
        .map(|subscription| StoredSubscription {
            raw_filter: Box::from(&*subscription.topic_filter),
            options: subscription.options,
            subscription_id: subscription.subscription_id.unwrap_or(0),
        })
        .collect();
    state.inbound_qos2 = session.inbound_qos2.into_iter().collect();
    for entry in session.outbound_inflight {
        let Some(packet_id) = PacketId::new(entry.packet_id) else {
            continue;
        };
        let (message, message_id, outbound_state) = match entry.state {
            InflightState::Published { message_id } => match shared.get(&message_id) {
                Some(message) => (message.clone(), message_id, OutboundState::Published),
                None => continue,
            },
            InflightState::PubRelSent => (released_placeholder.clone(), 0, OutboundState::Released),
        };
        state.last_packet_id = state.last_packet_id.max(entry.packet_id);
        state.outbound.push_back(Outbound {
            packet_id,
            delivery: Delivery {
                message,
                qos: entry.qos,
                retain: entry.retain,
                subscription_ids: SubscriptionIds::from_vec(entry.subscription_ids),
                stored: StoredRef {
                    queue_seq: 0,
                    message_id,
                },
            },
            state: outbound_state,
        });
    }
    let queue: Vec<Delivery> = session
        .queue
        .into_iter()
        .filter_map(|(queue_seq, entry)| {
            let message = match entry.message {
                Some(inline) => persistence.message_from_record(inline),
                None => shared.get(&entry.message_id)?.clone(),
            };
            Some(Delivery {
                message,
                qos: entry.qos,
                retain: entry.retain,
                subscription_ids: SubscriptionIds::from_vec(entry.subscription_ids),
                stored: StoredRef {
                    queue_seq,
                    message_id: entry.message_id,
                },
            })
        })
        .collect();
    let filters: Vec<_> = state
        .subscriptions
        .iter()
        .map(|subscription| {
            (
                subscription.filter(),
                subscription.options,
                subscription.subscription_id,
            )
        })
        .collect();
    let expiry_secs = state.session_expiry_secs;
    let handle = SessionHandle::new(session_id, client_id.clone(), Box::new(state));
    handle.set_persistent(true);
    handle.restore_queue(queue);
    for (filter, options, subscription_id) in filters {
        router.subscribe(&handle, &filter, options, subscription_id);
    }
    // A session whose client was connected at the crash starts its expiry interval now.
    let expires_at = match record.expiry_deadline_unix_ms {
        Some(deadline) => Some(persistence.instant_of(deadline)),
        None => {
            (expiry_secs != u32::MAX).then(|| now + Duration::from_secs(u64::from(expiry_secs)))
        }
    };
    let will = will.map(|will| {
        let publish_at = match will.publish_deadline_unix_ms {
            Some(deadline) => persistence.instant_of(deadline),
            None => now + Duration::from_secs(u64::from(will.delay_secs)),
        };
        let publish_at = match expires_at {
            Some(expires_at) => publish_at.min(expires_at),
            None => publish_at,
        };
        PendingWill {
            message: persistence.message_from_record(will.message),
            publish_at,
        }
    });
    RestoredSession {
        client_id,
        handle,
        expires_at,
        will,
    }
}
