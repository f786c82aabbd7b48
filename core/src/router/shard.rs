//! The topic shard actor: single writer of one shard's subscriptions and retained messages.

use std::{sync::Arc, time::Duration};

use metrics::gauge;
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use crate::{
    message::SessionId,
    metrics::BrokerMetrics,
    router::{retained::RetainedTree, table::SubscriptionTable},
    topic::TopicFilter,
};

/// The data of one shard, read by publishers under the read lock, written only by the actor.
#[derive(Default)]
pub(crate) struct ShardTable {
    pub(crate) subscriptions: SubscriptionTable,
    pub(crate) retained: RetainedTree,
}

/// Requests to a topic shard.
///
/// The mailbox is unbounded (ractor), so every sender is bounded elsewhere: at most one
/// `RemoveSession` per ended session, and one timer message per interval.
pub(crate) enum ShardMessage {
    /// Removes the subscriptions of an ended session.
    RemoveSession {
        session_id: SessionId,
        filters: Vec<TopicFilter>,
    },
    /// Periodic housekeeping: drops expired retained messages, updates gauges. Carries the time
    /// it was sent, for `starling_actor_mailbox_wait_seconds`.
    Housekeeping(Instant),
}

/// One topic shard.
pub(crate) struct TopicShard {
    pub(crate) shard_idx: usize,
    pub(crate) metrics: BrokerMetrics,
}

/// How often a shard purges expired retained messages.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

impl Actor for TopicShard {
    type Msg = ShardMessage;
    type State = Arc<RwLock<ShardTable>>;
    type Arguments = Arc<RwLock<ShardTable>>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        table: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let depth = self.metrics.topic_shard_mailbox_depth.clone();
        myself.send_interval(HOUSEKEEPING_INTERVAL, move || {
            depth.increment(1.0);
            ShardMessage::Housekeeping(Instant::now())
        });
        Ok(table)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        table: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.metrics.topic_shards.handled.increment(1);
        self.metrics.topic_shard_mailbox_depth.decrement(1.0);
        match message {
            ShardMessage::RemoveSession {
                session_id,
                filters,
            } => {
                let mut table = table.write();
                for filter in filters {
                    table.subscriptions.remove(
                        &filter.filter,
                        filter.share_group.as_deref(),
                        session_id,
                    );
                }
            }
            ShardMessage::Housekeeping(sent_at) => {
                self.metrics.topic_shards.tick_handled(sent_at);
                let mut table = table.write();
                table.retained.purge_expired(Instant::now());
                let shard = self.shard_idx.to_string();
                gauge!("starling_retained_messages", "shard" => shard.clone())
                    .set(table.retained.len() as f64);
                gauge!("starling_subscriptions", "shard" => shard)
                    .set(table.subscriptions.len() as f64);
            }
        }
        Ok(())
    }
}
