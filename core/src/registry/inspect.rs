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
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    /// Remote address of the client.
    pub peer: SocketAddr,
    /// Protocol version it connected with.
    pub protocol: ProtocolVersion,
    /// Keep alive in force (after Server Keep Alive), seconds; 0 disables it.
    pub keep_alive_secs: u16,
    /// When CONNECT was accepted.
    pub connected_at: SystemTime,
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
        connection: entry.connection.as_deref().copied(),
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
                .map(|client_id| session_info(client_id, &state.sessions[client_id], now))
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
                stats.num_queued_messages += entry.handle.queue_len();
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
            peer,
            protocol,
            keep_alive_secs,
            connected_at: SystemTime::now(),
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

    /// Returns aggregate figures over every shard (each shard walks its sessions once).
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
            totals.num_online += stats.num_online;
            totals.num_offline += stats.num_offline;
            totals.num_queued_messages += stats.num_queued_messages;
            totals.num_pending_wills += stats.num_pending_wills;
        }
        Ok(totals)
    }
}
