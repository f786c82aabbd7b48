//! The sharded subscription table and message routing.
//!
//! Topics are split over `N` topic shards by the hash of their first level; filters whose first
//! level is a wildcard live in one extra wildcard shard. Each shard is a ractor actor
//! (`TopicShard`) that owns its table: it removes the subscriptions of ended sessions,
//! purges expired retained messages and reports the shard's gauges (and, with the cluster, will
//! announce route changes to peers). Sessions apply their own subscribe/unsubscribe and
//! retained writes under the shard's write lock, so a route is live before its SUBACK;
//! publishers read under the read lock. A publish touches at most two shards and never one
//! global actor or lock.

mod inspect;
mod retained;
mod shard;
mod table;

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use parking_lot::RwLock;
use ractor::{Actor, ActorRef};
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::{
    codec::SubscriptionOptions,
    config::SessionLimits,
    message::{Delivery, Message, SessionId, SubscriptionIds},
    metrics::BrokerMetrics,
    session::{PushOutcome, SessionHandle},
    topic::TopicFilter,
};

pub use inspect::SubscriptionInfo;
pub(crate) use shard::{ShardMessage, ShardTable, TopicShard};
pub(crate) use table::Subscriber;

struct ShardRef {
    table: Arc<RwLock<ShardTable>>,
    actor: ActorRef<ShardMessage>,
}

struct RouterInner {
    shards: Box<[ShardRef]>,
    limits: Arc<SessionLimits>,
    metrics: BrokerMetrics,
}

/// Handle to the topic shards: routing, subscribing, retained messages. Cheap to clone.
/// What routing one message did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOutcome {
    /// Sessions with a matching subscription.
    pub num_matched: usize,
    /// Sessions the message was queued for (or is held for, under backpressure).
    pub num_queued: usize,
    /// Some session refused it with a full queue ([`crate::QueueFullPolicy::Refuse`]).
    pub refused: bool,
}

enum Delivered {
    Queued,
    Dropped,
    Refused,
}

#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

fn hash_level(level: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    level.hash(&mut hasher);
    hasher.finish()
}

impl Router {
    /// Spawns `num_shards` topic shard actors plus the wildcard shard.
    ///
    /// # Errors
    /// Returns an error if an actor fails to start.
    pub(crate) async fn start(
        num_shards: usize,
        limits: Arc<SessionLimits>,
        metrics: BrokerMetrics,
        supervisor: ractor::ActorCell,
    ) -> Result<(Router, Vec<ActorRef<ShardMessage>>), ractor::SpawnErr> {
        let mut shards = Vec::with_capacity(num_shards + 1);
        let mut actors = Vec::with_capacity(num_shards + 1);
        for shard_idx in 0..=num_shards {
            let table = Arc::new(RwLock::new(ShardTable::default()));
            let (actor, _join) = Actor::spawn_linked(
                None,
                TopicShard {
                    shard_idx,
                    metrics: metrics.clone(),
                },
                table.clone(),
                supervisor.clone(),
            )
            .await?;
            actors.push(actor.clone());
            shards.push(ShardRef { table, actor });
        }
        let inner = RouterInner {
            shards: shards.into_boxed_slice(),
            limits,
            metrics,
        };
        Ok((
            Router {
                inner: Arc::new(inner),
            },
            actors,
        ))
    }

    /// Starts a router under a throwaway supervisor, for tests.
    #[cfg(test)]
    pub(crate) async fn start_for_test(
        num_shards: usize,
        limits: Arc<SessionLimits>,
    ) -> Result<(Router, Vec<ActorRef<ShardMessage>>), ractor::SpawnErr> {
        let supervisor = crate::supervisor::BrokerSupervisor {
            fatal: tokio_util::sync::CancellationToken::new(),
        };
        let (supervisor, _join) = Actor::spawn(None, supervisor, ()).await?;
        Router::start(
            num_shards,
            limits,
            BrokerMetrics::register(),
            supervisor.get_cell(),
        )
        .await
    }

    fn num_literal_shards(&self) -> usize {
        self.inner.shards.len() - 1
    }

    fn shard_for_topic(&self, topic: &str) -> usize {
        let first = topic.split('/').next().unwrap_or_default();
        (hash_level(first) % self.num_literal_shards() as u64) as usize
    }

    fn shard_for_filter(&self, filter: &str) -> usize {
        let first = filter.split('/').next().unwrap_or_default();
        if first == "+" || first == "#" {
            return self.num_literal_shards();
        }
        self.shard_for_topic(filter)
    }

    /// Adds a subscription; returns true if the session already had one for this filter.
    ///
    /// The write is applied at once under the shard's write lock, so the route is live before
    /// the SUBACK leaves: a message published right after the SUBACK reaches the subscriber.
    pub fn subscribe(
        &self,
        session: &SessionHandle,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        subscription_id: u32,
    ) -> bool {
        let shard = &self.inner.shards[self.shard_for_filter(&filter.filter)];
        let subscriber = Subscriber {
            session: session.clone(),
            options,
            subscription_id,
        };
        shard.table.write().subscriptions.insert(
            &filter.filter,
            filter.share_group.as_deref(),
            subscriber,
        )
    }

    /// Removes a subscription; returns true if it existed.
    pub fn unsubscribe(&self, session_id: SessionId, filter: &TopicFilter) -> bool {
        let shard = &self.inner.shards[self.shard_for_filter(&filter.filter)];
        shard.table.write().subscriptions.remove(
            &filter.filter,
            filter.share_group.as_deref(),
            session_id,
        )
    }

    /// Removes every listed subscription of an ended session (fire and forget).
    pub fn remove_session(
        &self,
        session_id: SessionId,
        filters: impl IntoIterator<Item = TopicFilter>,
    ) {
        let mut per_shard: Vec<Vec<TopicFilter>> = vec![Vec::new(); self.inner.shards.len()];
        for filter in filters {
            per_shard[self.shard_for_filter(&filter.filter)].push(filter);
        }
        for (shard_idx, filters) in per_shard.into_iter().enumerate() {
            if filters.is_empty() {
                continue;
            }
            let message = ShardMessage::RemoveSession {
                session_id,
                filters,
            };
            // Counted before the send, so the handler's decrement never comes first.
            let depth = &self.inner.metrics.topic_shard_mailbox_depth;
            depth.increment(1.0);
            if let Err(error) = self.inner.shards[shard_idx].actor.cast(message) {
                depth.decrement(1.0);
                tracing::error!(%error, shard_idx, "topic shard unavailable");
            }
        }
    }

    /// Sets (`Some`) or clears (`None`) the retained message of `topic`, applied at once.
    pub fn set_retained(&self, topic: &str, message: Option<Arc<Message>>) {
        let shard = &self.inner.shards[self.shard_for_topic(topic)];
        shard.table.write().retained.set(topic, message);
    }

    /// Publishes a message: updates the retained store if RETAIN is set (an empty payload
    /// clears it [MQTT-3.3.1-6], [MQTT-3.3.1-7]), then routes it. Returns the number of
    /// sessions it was queued for.
    pub fn publish(&self, message: &Arc<Message>) -> usize {
        self.publish_with_backpressure(message, None).num_queued
    }

    /// Like [`Router::publish`], but a QoS 1/2 delivery to a connected session whose queue is
    /// full is handed back in `blocked` instead of being dropped: the publishing connection
    /// retries it and withholds its PUBACK/PUBREC meanwhile (backpressure, not loss).
    pub fn publish_with_backpressure(
        &self,
        message: &Arc<Message>,
        blocked: Option<&mut Vec<(SessionHandle, Delivery)>>,
    ) -> RouteOutcome {
        if message.retain {
            let retained = (!message.payload.is_empty()).then(|| message.clone());
            self.set_retained(&message.topic, retained);
        }
        self.route_inner(message, blocked)
    }

    /// Updates the retained message (for a RETAIN publish) and collects the deliveries of
    /// `message` without queueing them: the durable publish path stores them first.
    pub(crate) fn collect_deliveries(
        &self,
        message: &Arc<Message>,
        out: &mut Vec<(SessionHandle, Delivery)>,
    ) {
        if message.retain {
            let retained = (!message.payload.is_empty()).then(|| message.clone());
            self.set_retained(&message.topic, retained);
        }
        self.route_each(message, |session, delivery| {
            out.push((session.clone(), delivery))
        });
    }

    pub fn retained_for(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let mut out = Vec::new();
        let shard_idx = self.shard_for_filter(filter);
        if shard_idx < self.num_literal_shards() {
            self.inner.shards[shard_idx]
                .table
                .read()
                .retained
                .collect(filter, now, &mut out);
        } else {
            for shard in self.inner.shards.iter() {
                shard.table.read().retained.collect(filter, now, &mut out);
            }
        }
        out
    }

    /// Returns the number of retained messages and subscriptions over all shards.
    pub fn counts(&self) -> (usize, usize) {
        self.inner
            .shards
            .iter()
            .fold((0, 0), |(retained, subscriptions), shard| {
                let table = shard.table.read();
                (
                    retained + table.retained.len(),
                    subscriptions + table.subscriptions.len(),
                )
            })
    }

    /// Delivers `message` to every matching session; returns the number of sessions it was
    /// queued for.
    pub fn route(&self, message: &Arc<Message>) -> usize {
        self.route_inner(message, None).num_queued
    }

    fn route_inner(
        &self,
        message: &Arc<Message>,
        mut blocked: Option<&mut Vec<(SessionHandle, Delivery)>>,
    ) -> RouteOutcome {
        let mut outcome = RouteOutcome::default();
        self.route_each(message, |session, delivery| {
            outcome.num_matched += 1;
            match self.deliver(session, delivery, blocked.as_deref_mut()) {
                Delivered::Queued => outcome.num_queued += 1,
                Delivered::Dropped => {}
                Delivered::Refused => outcome.refused = true,
            }
        });
        if outcome.num_matched == 0 {
            self.inner.metrics.dropped_no_subscribers.increment(1);
        }
        outcome
    }

    /// Calls `sink` with the delivery of `message` to every matching session.
    fn route_each(&self, message: &Arc<Message>, mut sink: impl FnMut(&SessionHandle, Delivery)) {
        let topic: &str = &message.topic;
        let mut matches: SmallVec<[(SessionHandle, SubscriptionOptions, u32); 4]> = SmallVec::new();
        let mut shared: SmallVec<[(SessionHandle, SubscriptionOptions, u32); 2]> = SmallVec::new();
        let literal_idx = self.shard_for_topic(topic);
        for shard_idx in [literal_idx, self.num_literal_shards()] {
            let table = self.inner.shards[shard_idx].table.read();
            table.subscriptions.for_each_match(topic, |s| {
                matches.push((s.session.clone(), s.options, s.subscription_id));
            });
            table.subscriptions.for_each_shared_match(topic, |s| {
                shared.push((s.session.clone(), s.options, s.subscription_id));
            });
        }
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|(session, _, _)| session.id());
        }
        let mut idx = 0;
        while idx < matches.len() {
            let session_id = matches[idx].0.id();
            let mut end = idx + 1;
            while end < matches.len() && matches[end].0.id() == session_id {
                end += 1;
            }
            // Overlapping subscriptions of one session: one delivery at the maximum granted QoS,
            // carrying every subscription identifier [MQTT-3.3.4-3], [MQTT-3.3.4-5].
            let mut max_qos = None;
            let mut retain = false;
            let mut subscription_ids = SubscriptionIds::new();
            for (_, options, subscription_id) in &matches[idx..end] {
                // [MQTT-3.8.3-3] No Local: never back to the publishing session.
                if options.no_local && session_id == message.publisher {
                    continue;
                }
                max_qos = max_qos.max(Some(options.qos));
                retain |= options.retain_as_published && message.retain;
                if *subscription_id != 0 {
                    subscription_ids.push(*subscription_id);
                }
            }
            if let Some(max_qos) = max_qos {
                let delivery = Delivery::new(
                    message.clone(),
                    message.qos.min(max_qos),
                    retain,
                    subscription_ids,
                );
                sink(&matches[idx].0, delivery);
            }
            idx = end;
        }
        for (session, options, subscription_id) in shared {
            let mut subscription_ids = SubscriptionIds::new();
            if subscription_id != 0 {
                subscription_ids.push(subscription_id);
            }
            let retain = options.retain_as_published && message.retain;
            let delivery = Delivery::new(
                message.clone(),
                message.qos.min(options.qos),
                retain,
                subscription_ids,
            );
            sink(&session, delivery);
        }
    }

    /// Queues one delivery (or holds it for the publisher to retry, under backpressure).
    fn deliver(
        &self,
        session: &SessionHandle,
        delivery: Delivery,
        blocked: Option<&mut Vec<(SessionHandle, Delivery)>>,
    ) -> Delivered {
        let backpressure = blocked.is_some();
        match session.push(
            delivery,
            &self.inner.limits,
            &self.inner.metrics,
            backpressure,
        ) {
            PushOutcome::Queued | PushOutcome::QueuedEvicting(_) => Delivered::Queued,
            PushOutcome::Dropped => Delivered::Dropped,
            PushOutcome::Refused => Delivered::Refused,
            PushOutcome::Full(delivery) => {
                if let Some(blocked) = blocked {
                    blocked.push((session.clone(), delivery));
                }
                Delivered::Queued
            }
        }
    }
}
