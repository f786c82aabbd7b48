//! Operator queries on the topic shards: a session's subscriptions, subscription counts,
//! retained messages. Used by the node's admin API, metrics and `$SYS`; these walk whole
//! tables under the read lock, so they are never on the MQTT hot path.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bytestring::ByteString;

use crate::{
    codec::SubscriptionOptions,
    message::{Message, SessionId},
    router::Router,
};

/// One subscription as a topic shard holds it.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    /// The filter topics are matched against (without any `$share/{group}/` prefix).
    pub filter: ByteString,
    /// Share name of a shared subscription.
    pub share_group: Option<ByteString>,
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription identifier, 0 when none.
    pub subscription_id: u32,
}

impl Router {
    /// Returns every subscription of one session, sorted by filter (walks every shard).
    pub fn subscriptions_of(&self, session_id: SessionId) -> Vec<SubscriptionInfo> {
        let mut subscriptions = Vec::new();
        for shard in self.inner.shards.iter() {
            shard.table.read().subscriptions.for_each_subscription(
                |filter, share_group, subscriber| {
                    if subscriber.session.id() == session_id {
                        subscriptions.push(SubscriptionInfo {
                            filter: ByteString::from(filter),
                            share_group: share_group.map(ByteString::from),
                            options: subscriber.options,
                            subscription_id: subscriber.subscription_id,
                        });
                    }
                },
            );
        }
        subscriptions.sort_by(|a, b| (&a.filter, &a.share_group).cmp(&(&b.filter, &b.share_group)));
        subscriptions
    }

    /// Counts the subscriptions of each session in `session_ids` in one walk of every shard.
    pub fn subscription_counts(
        &self,
        session_ids: &HashSet<SessionId>,
    ) -> HashMap<SessionId, usize> {
        let mut counts: HashMap<SessionId, usize> = session_ids.iter().map(|&id| (id, 0)).collect();
        if session_ids.is_empty() {
            return counts;
        }
        for shard in self.inner.shards.iter() {
            shard
                .table
                .read()
                .subscriptions
                .for_each_subscription(|_, _, subscriber| {
                    if let Some(count) = counts.get_mut(&subscriber.session.id()) {
                        *count += 1;
                    }
                });
        }
        counts
    }

    /// Returns the number of shared-subscription groups over all shards.
    pub fn num_shared_groups(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.table.read().subscriptions.num_shared_groups())
            .sum()
    }

    /// Returns true if at least one subscription (shared or not) matches `topic`.
    pub fn has_matching_subscribers(&self, topic: &str) -> bool {
        let literal_idx = self.shard_for_topic(topic);
        [literal_idx, self.num_literal_shards()]
            .into_iter()
            .any(|shard_idx| {
                self.inner.shards[shard_idx]
                    .table
                    .read()
                    .subscriptions
                    .has_match(topic)
            })
    }

    /// Returns up to `limit` unexpired retained messages matching `filter`, sorted by topic.
    pub fn list_retained(&self, filter: &str, limit: usize) -> Vec<Arc<Message>> {
        let mut messages = self.retained_for(filter);
        messages.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        messages.truncate(limit);
        messages
    }

    /// Clears every retained message matching `filter`; returns how many were cleared.
    pub fn clear_retained(&self, filter: &str) -> usize {
        let topics: Vec<ByteString> = self
            .retained_for(filter)
            .into_iter()
            .map(|message| message.topic.clone())
            .collect();
        for topic in &topics {
            self.set_retained(topic, None);
        }
        topics.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        codec::{ProtocolVersion, PublishProperties, QoS},
        config::SessionLimits,
        session::{SessionHandle, SessionState},
        topic::TopicFilter,
    };

    fn session_for_test(id: u64) -> SessionHandle {
        let client_id = ByteString::from(format!("client-{id}"));
        let state = SessionState::new(SessionId(id), ProtocolVersion::V5);
        SessionHandle::new(SessionId(id), client_id, Box::new(state))
    }

    fn retained_for_test(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: ByteString::from(topic),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: SessionId::SYSTEM,
            received_at: crate::message::ReceivedAt::UNKNOWN,
        })
    }

    #[tokio::test]
    async fn subscriptions_of_rebuilds_every_kind_of_filter() {
        let limits = Arc::new(SessionLimits::for_test());
        let (router, _) = Router::start_for_test(4, limits).await.unwrap();
        let session = session_for_test(1);
        let other = session_for_test(2);
        let raw_filters = [
            "a/b",
            "a/+/c",
            "a/#",
            "#",
            "+",
            "/+",
            "+/x/#",
            "$share/g1/s/+",
        ];
        for raw in raw_filters {
            let filter = TopicFilter::parse(&ByteString::from(raw), 16).unwrap();
            router.subscribe(&session, &filter, SubscriptionOptions::default(), 7);
        }
        let filter = TopicFilter::parse(&ByteString::from("a/b"), 16).unwrap();
        router.subscribe(&other, &filter, SubscriptionOptions::default(), 0);

        let mut listed: Vec<String> = router
            .subscriptions_of(session.id())
            .into_iter()
            .map(|s| match s.share_group {
                Some(group) => format!("$share/{group}/{}", s.filter),
                None => s.filter.to_string(),
            })
            .collect();
        listed.sort();
        let mut expected: Vec<String> = raw_filters.iter().map(|f| f.to_string()).collect();
        expected.sort();
        assert_eq!(listed, expected);

        let ids = HashSet::from([session.id(), other.id(), SessionId(3)]);
        let counts = router.subscription_counts(&ids);
        assert_eq!(counts[&session.id()], raw_filters.len());
        assert_eq!(counts[&other.id()], 1);
        assert_eq!(counts[&SessionId(3)], 0);
        assert_eq!(router.num_shared_groups(), 1);
        assert!(router.has_matching_subscribers("s/1"));
        assert!(!router.has_matching_subscribers("$SYS/broker/uptime"));
    }

    #[tokio::test]
    async fn retained_messages_are_listed_and_cleared_by_filter() {
        let limits = Arc::new(SessionLimits::for_test());
        let (router, _) = Router::start_for_test(4, limits).await.unwrap();
        for topic in ["a/1", "a/2", "b/1", "$SYS/x"] {
            router.set_retained(topic, Some(retained_for_test(topic)));
        }
        let topics = |messages: Vec<Arc<Message>>| -> Vec<String> {
            messages.iter().map(|m| m.topic.to_string()).collect()
        };
        assert_eq!(topics(router.list_retained("#", 10)), ["a/1", "a/2", "b/1"]);
        assert_eq!(topics(router.list_retained("#", 2)), ["a/1", "a/2"]);
        assert_eq!(topics(router.list_retained("$SYS/#", 10)), ["$SYS/x"]);
        assert_eq!(router.clear_retained("a/+"), 2);
        assert_eq!(topics(router.list_retained("#", 10)), ["b/1"]);
        assert_eq!(router.counts().0, 2);
    }
}
