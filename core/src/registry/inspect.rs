//! Operator queries on the session registry: list, inspect and delete sessions, aggregate
//! figures for metrics and `$SYS`. Used by the node's admin API; never on the MQTT hot path.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use bytestring::ByteString;
use ractor::RpcReplyPort;
use tokio::time::Instant;

use crate::{
    codec::ProtocolVersion,
    registry::{
        end_session, publish_will, Entry, RegistryContext, RegistryMessage, RegistryShardState,
        SessionRegistry, REGISTRY_CALL_TIMEOUT_MS,
    },
    session::SessionHandle,
};

/// What the registry remembers of a session's latest connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Remote address of the client.
    pub peer: crate::transport::PeerAddr,
    /// Protocol version it connected with.
    pub protocol: ProtocolVersion,
    /// Keep alive in force (after Server Keep Alive), seconds; 0 disables it.
    pub keep_alive_secs: u16,
    /// When CONNECT was accepted, milliseconds since the unix epoch (see
    /// [`ConnectionInfo::connected_at`]); kept small, as every connection has one.
    pub connected_at_unix_ms: u64,
}

impl ConnectionInfo {
    /// When CONNECT was accepted.
    pub fn connected_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(self.connected_at_unix_ms)
    }
}

/// A snapshot of one session as the registry sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Client identifier.
    pub client_id: ByteString,
    /// The session's address: kick it, read its queue depth.
    pub handle: SessionHandle,
    /// Whether a connection runs the session.
    pub online: bool,
    /// The latest connection; `None` until the first one finished CONNECT.
    pub connection: Option<ConnectionInfo>,
    /// Time left before an offline session expires; `None` while online or for a session that
    /// never expires.
    pub expires_in: Option<Duration>,
    /// Whether a delayed will waits to be published.
    pub will_pending: bool,
    /// Messages queued and not yet sent.
    pub num_queued_messages: usize,
}

/// Which sessions [`SessionRegistry::list_sessions`] returns.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only client ids starting with this prefix.
    pub client_id_prefix: String,
    /// Only client ids sorting after this one (the last id of the previous page).
    pub after: Option<String>,
    /// At most this many sessions.
    pub limit: usize,
}

/// Outcome of [`SessionRegistry::delete_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteSessionOutcome {
    /// The session was ended and its state discarded.
    Deleted,
    /// No session has this client id.
    NotFound,
    /// A connection runs the session; kick it first.
    Online,
}

/// Upper bounds of the buckets of [`RegistryStats::sessions_by_inflight`] and
/// [`RegistryStats::sessions_by_queued`]; a last bucket takes everything above.
pub const SESSION_DEPTH_BOUNDS: [usize; 12] = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000];

/// Sessions per depth bucket: `[idx]` counts sessions whose depth is at most
/// `SESSION_DEPTH_BOUNDS[idx]` and above the bound before (not cumulative); the last entry
/// counts those above every bound.
pub type DepthBuckets = [usize; SESSION_DEPTH_BOUNDS.len() + 1];

fn depth_bucket(depth: usize) -> usize {
    SESSION_DEPTH_BOUNDS.partition_point(|bound| *bound < depth)
}

/// Aggregate figures over every registry shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Sessions with a connection.
    pub num_online: usize,
    /// Persistent sessions without a connection.
    pub num_offline: usize,
    /// Messages queued in every session's mailbox.
    pub num_queued_messages: usize,
    /// Delayed wills waiting for their delay or their session's end.
    pub num_pending_wills: usize,
    /// Outbound QoS 1/2 messages in flight (sent, not acknowledged) over every session.
    pub num_inflight_messages: usize,
    /// The largest in-flight count of one session.
    pub max_inflight_messages: usize,
    /// The longest queue of one session.
    pub max_queued_messages: usize,
    /// Sessions by their in-flight count.
    pub sessions_by_inflight: DepthBuckets,
    /// Sessions by their queue length.
    pub sessions_by_queued: DepthBuckets,
}

impl RegistryStats {
    /// Counts one session with `num_queued` queued and `num_inflight` in-flight messages.
    fn add_session(&mut self, num_queued: usize, num_inflight: usize) {
        self.num_queued_messages += num_queued;
        self.num_inflight_messages += num_inflight;
        self.max_queued_messages = self.max_queued_messages.max(num_queued);
        self.max_inflight_messages = self.max_inflight_messages.max(num_inflight);
        self.sessions_by_queued[depth_bucket(num_queued)] += 1;
        self.sessions_by_inflight[depth_bucket(num_inflight)] += 1;
    }

    /// Adds the figures of another shard.
    fn merge(&mut self, other: &RegistryStats) {
        self.num_online += other.num_online;
        self.num_offline += other.num_offline;
        self.num_queued_messages += other.num_queued_messages;
        self.num_pending_wills += other.num_pending_wills;
        self.num_inflight_messages += other.num_inflight_messages;
        self.max_queued_messages = self.max_queued_messages.max(other.max_queued_messages);
        self.max_inflight_messages = self.max_inflight_messages.max(other.max_inflight_messages);
        for (total, part) in self
            .sessions_by_queued
            .iter_mut()
            .zip(other.sessions_by_queued)
        {
            *total += part;
        }
        for (total, part) in self
            .sessions_by_inflight
            .iter_mut()
            .zip(other.sessions_by_inflight)
        {
            *total += part;
        }
    }
}

/// Operator requests to a registry shard; one at a time per admin request, so the unbounded
/// mailbox stays bounded by the admin API's concurrency.
pub(crate) enum AdminRequest {
    List {
        query: SessionQuery,
        reply: RpcReplyPort<Vec<SessionInfo>>,
    },
    Get {
        client_id: ByteString,
        reply: RpcReplyPort<Option<SessionInfo>>,
    },
    Delete {
        client_id: ByteString,
        reply: RpcReplyPort<DeleteSessionOutcome>,
    },
    Stats {
        reply: RpcReplyPort<RegistryStats>,
    },
}

fn session_info(client_id: &ByteString, entry: &Entry, now: Instant) -> SessionInfo {
    SessionInfo {
        client_id: client_id.clone(),
        handle: entry.handle.clone(),
        online: entry.online,
        connection: entry.connection.as_deref().cloned(),
        expires_in: if entry.online {
            None
        } else {
            entry.expires_at.map(|at| at.saturating_duration_since(now))
        },
        will_pending: entry.will.is_some(),
        num_queued_messages: entry.handle.queue_len(),
    }
}

/// Records the details of a connection that finished CONNECT, unless a newer one replaced it.
pub(super) fn connection_attached(
    state: &mut RegistryShardState,
    client_id: &ByteString,
    epoch: u64,
    info: Box<ConnectionInfo>,
) {
    if let Some(entry) = state.sessions.get_mut(client_id) {
        if entry.epoch == epoch {
            entry.connection = Some(info);
        }
    }
}

/// Answers one operator request.
pub(super) fn handle(
    context: &RegistryContext,
    state: &mut RegistryShardState,
    request: AdminRequest,
) {
    let now = Instant::now();
    match request {
        AdminRequest::List { query, reply } => {
            let mut client_ids: Vec<&ByteString> = state
                .sessions
                .keys()
                .filter(|client_id| client_id.starts_with(query.client_id_prefix.as_str()))
                .filter(|client_id| {
                    query
                        .after
                        .as_deref()
                        .is_none_or(|after| &***client_id > after)
                })
                .collect();
            if client_ids.len() > query.limit {
                if query.limit == 0 {
                    client_ids.clear();
                } else {
                    client_ids.select_nth_unstable(query.limit - 1);
                    client_ids.truncate(query.limit);
                }
            }
            client_ids.sort_unstable();
            let sessions = client_ids
                .into_iter()
                .filter_map(|client_id| {
                    let entry = state.sessions.get(client_id)?;
                    Some(session_info(client_id, entry, now))
                })
                .collect();
            let _ = reply.send(sessions);
        }
        AdminRequest::Get { client_id, reply } => {
            let info = state
                .sessions
                .get(&client_id)
                .map(|entry| session_info(&client_id, entry, now));
            let _ = reply.send(info);
        }
        AdminRequest::Delete { client_id, reply } => {
            let outcome = match state.sessions.get(&client_id) {
                None => DeleteSessionOutcome::NotFound,
                Some(entry) if entry.online => DeleteSessionOutcome::Online,
                Some(_) => {
                    let entry = state.sessions.remove(&client_id).expect("checked above");
                    // The session ends now, so its delayed will is due now [MQTT-3.1.3-9].
                    if let Some(will) = entry.will {
                        publish_will(&context.router, &context.metrics, will.message);
                    }
                    end_session(context, &entry.handle);
                    tracing::info!(%client_id, "session deleted by an operator");
                    DeleteSessionOutcome::Deleted
                }
            };
            let _ = reply.send(outcome);
        }
        AdminRequest::Stats { reply } => {
            let mut stats = RegistryStats::default();
            for entry in state.sessions.values() {
                if entry.online {
                    stats.num_online += 1;
                } else {
                    stats.num_offline += 1;
                }
                stats.add_session(entry.handle.queue_len(), entry.handle.num_inflight());
                stats.num_pending_wills += usize::from(entry.will.is_some());
            }
            let _ = reply.send(stats);
        }
    }
}

/// Error of an operator query: a registry shard did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("session registry unavailable: {0}")]
pub struct RegistryUnavailable(String);

impl SessionRegistry {
    pub(crate) fn connection_attached(
        &self,
        client_id: ByteString,
        epoch: u64,
        peer: SocketAddr,
        protocol: ProtocolVersion,
        keep_alive_secs: u16,
    ) {
        let info = Box::new(ConnectionInfo {
            peer: peer.into(),
            protocol,
            keep_alive_secs,
            connected_at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
        });
        let _ = self
            .shard(&client_id)
            .cast(RegistryMessage::ConnectionAttached {
                client_id,
                epoch,
                info,
            });
    }

    /// Returns up to `query.limit` sessions matching `query`, sorted by client id.
    ///
    /// # Errors
    /// Returns [`RegistryUnavailable`] if a shard does not answer in time.
    pub async fn list_sessions(
        &self,
        query: SessionQuery,
    ) -> Result<Vec<SessionInfo>, RegistryUnavailable> {
        let mut sessions = Vec::new();
        for shard in self.shards.iter() {
            let part = ractor::call_t!(
                shard,
                |reply| RegistryMessage::Admin(AdminRequest::List {
                    query: query.clone(),
                    reply
                }),
                REGISTRY_CALL_TIMEOUT_MS
            )
            .map_err(|error| RegistryUnavailable(error.to_string()))?;
            sessions.extend(part);
        }
        sessions.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions.truncate(query.limit);
        Ok(sessions)
    }

    /// Returns the session of `client_id`, if there is one.
    ///
    /// # Errors
    /// Returns [`RegistryUnavailable`] if the shard does not answer in time.
    pub async fn get_session(
        &self,
        client_id: &str,
    ) -> Result<Option<SessionInfo>, RegistryUnavailable> {
        let client_id = ByteString::from(client_id);
        ractor::call_t!(
            self.shard(&client_id),
            |reply| RegistryMessage::Admin(AdminRequest::Get {
                client_id: client_id.clone(),
                reply
            }),
            REGISTRY_CALL_TIMEOUT_MS
        )
        .map_err(|error| RegistryUnavailable(error.to_string()))
    }

    /// Ends an offline session: publishes its pending will, discards its subscriptions and
    /// queued messages. A session with a connection is left alone ([`DeleteSessionOutcome::Online`]).
    ///
    /// # Errors
    /// Returns [`RegistryUnavailable`] if the shard does not answer in time.
    pub async fn delete_session(
        &self,
        client_id: &str,
    ) -> Result<DeleteSessionOutcome, RegistryUnavailable> {
        let client_id = ByteString::from(client_id);
        ractor::call_t!(
            self.shard(&client_id),
            |reply| RegistryMessage::Admin(AdminRequest::Delete {
                client_id: client_id.clone(),
                reply
            }),
            REGISTRY_CALL_TIMEOUT_MS
        )
        .map_err(|error| RegistryUnavailable(error.to_string()))
    }

    /// Returns aggregate figures over every shard (each shard walks its sessions once, reading
    /// each session's queue length and last reported in-flight count).
    ///
    /// # Errors
    /// Returns [`RegistryUnavailable`] if a shard does not answer in time.
    pub async fn stats(&self) -> Result<RegistryStats, RegistryUnavailable> {
        let mut totals = RegistryStats::default();
        for shard in self.shards.iter() {
            let stats = ractor::call_t!(
                shard,
                |reply| RegistryMessage::Admin(AdminRequest::Stats { reply }),
                REGISTRY_CALL_TIMEOUT_MS
            )
            .map_err(|error| RegistryUnavailable(error.to_string()))?;
            totals.merge(&stats);
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_in_the_bucket_of_their_depth() {
        assert_eq!(depth_bucket(0), 0);
        assert_eq!(depth_bucket(1), 1);
        assert_eq!(depth_bucket(3), 3);
        assert_eq!(depth_bucket(10_000), SESSION_DEPTH_BOUNDS.len() - 1);
        assert_eq!(depth_bucket(10_001), SESSION_DEPTH_BOUNDS.len());
        let mut shard_a = RegistryStats::default();
        shard_a.add_session(0, 7);
        let mut shard_b = RegistryStats::default();
        shard_b.add_session(3, 0);
        shard_b.add_session(20_000, 1);
        shard_a.merge(&shard_b);
        assert_eq!(shard_a.num_inflight_messages, 8);
        assert_eq!(shard_a.max_inflight_messages, 7);
        assert_eq!(shard_a.max_queued_messages, 20_000);
        assert_eq!(shard_a.sessions_by_inflight[0], 1);
        assert_eq!(shard_a.sessions_by_inflight[1], 1);
        assert_eq!(shard_a.sessions_by_inflight[4], 1);
        assert_eq!(shard_a.sessions_by_queued[SESSION_DEPTH_BOUNDS.len()], 1);
        assert_eq!(shard_a.sessions_by_queued.iter().sum::<usize>(), 3);
    }
}
