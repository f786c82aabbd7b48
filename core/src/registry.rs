//! The session registry: ractor actors that supervise sessions, sharded by client id.
//!
//! Each `RegistryShard` owns the map from client id to [`SessionHandle`] for its share of the
//! client ids, decides on CONNECT whether a session is resumed, replaced (clean start) or
//! created, and runs the session timers on a periodic tick: closing clients silent for 1.5x
//! their keep alive, publishing delayed wills and ending expired sessions. Offline sessions cost
//! an entry here and their parked state, no task.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytestring::ByteString;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

mod inspect;
mod sessions;
mod shard_ref;

pub use inspect::{
    ConnectionInfo, DeleteSessionOutcome, DepthBuckets, RegistryStats, RegistryUnavailable,
    SessionInfo, SessionQuery, SESSION_DEPTH_BOUNDS,
};

use crate::{
    codec::{ProtocolVersion, ReasonCode},
    message::{Message, SessionId},
    metrics::BrokerMetrics,
    router::Router,
    session::{SessionHandle, SessionState},
    storage::WriteBatch,
};

/// How often each registry shard checks keep-alive deadlines, will delays and session expiry
/// (and once a second, expired queued messages of offline sessions).
pub const REGISTRY_TICK: Duration = Duration::from_millis(100);

/// Timeout of calls into a registry shard.
const REGISTRY_CALL_TIMEOUT_MS: u64 = 10_000;

/// A will message waiting for its delay to pass.
pub(crate) struct PendingWill {
    pub(crate) message: Arc<Message>,
    pub(crate) publish_at: Instant,
}

/// Result of registering a connecting client.
pub(crate) struct RegisterOutcome {
    /// The session the connection runs.
    pub(crate) session: SessionHandle,
    /// Whether an existing session was resumed (CONNACK Session Present).
    pub(crate) session_present: bool,
    /// Connection epoch: notices from older connections of this client are ignored.
    pub(crate) epoch: u64,
    /// The previous session, replaced because of clean start; its state must be discarded.
    pub(crate) discarded: Option<SessionHandle>,
}

/// Notice that a connection closed and its session lives on.
pub(crate) struct OfflineNotice {
    pub(crate) client_id: ByteString,
    pub(crate) epoch: u64,
    /// When the session expires; `None` never.
    pub(crate) expires_at: Option<Instant>,
    pub(crate) will: Option<PendingWill>,
}

/// Requests to a registry shard. Each connection has at most one call in flight, and sends one
/// notice when it closes, so the unbounded ractor mailbox is bounded by the connection count.
pub(crate) enum RegistryMessage {
    Register(
        ByteString,
        bool,
        ProtocolVersion,
        RpcReplyPort<RegisterOutcome>,
    ),
    SessionOffline(OfflineNotice),
    SessionEnded {
        client_id: ByteString,
        epoch: u64,
    },
    /// The periodic timer tick, with the time it was sent (for the mailbox wait histogram).
    Tick(Instant),
    KickAll(ReasonCode, RpcReplyPort<usize>),
    Count(RpcReplyPort<(usize, usize)>),
    /// A connection finished CONNECT: its details, for operators.
    ConnectionAttached {
        client_id: ByteString,
        epoch: u64,
        info: Box<ConnectionInfo>,
    },
    /// An operator query (admin API, metrics, `$SYS`).
    Admin(inspect::AdminRequest),
    /// A session recovered from the store at start-up, offline.
    Restore(Box<RestoredSession>),
}

/// A session rebuilt from the store, to be registered offline.
pub(crate) struct RestoredSession {
    pub(crate) client_id: ByteString,
    pub(crate) handle: SessionHandle,
    pub(crate) expires_at: Option<Instant>,
    pub(crate) will: Option<PendingWill>,
}

struct Entry {
    /// Also the entry's key: its client id (see `sessions`).
    handle: SessionHandle,
    epoch: u64,
    online: bool,
    expires_at: Option<Instant>,
    /// Boxed: rare, and the entry is part of every connection's memory.
    will: Option<Box<PendingWill>>,
    /// The latest connection's details, for operators; boxed to keep idle entries small.
    connection: Option<Box<ConnectionInfo>>,
}

/// Shared by every registry shard.
pub(crate) struct RegistryContext {
    pub(crate) router: Router,
    pub(crate) metrics: BrokerMetrics,
    pub(crate) next_session_id: AtomicU64,
    /// Zero point of the keep-alive deadlines stored in session handles.
    pub(crate) epoch: Instant,
    /// Durable storage, when sessions are stored.
    pub(crate) persistence: Option<Arc<crate::persistence::Persistence>>,
}

/// One registry shard actor.
pub(crate) struct RegistryShard {
    context: Arc<RegistryContext>,
}

pub(crate) struct RegistryShardState {
    sessions: sessions::Sessions,
    next_epoch: u64,
    /// Ticks handled, for the work done every [`EXPIRED_PURGE_TICKS`] ticks.
    ticks: u64,
}

/// Every this many ticks (1 s) a shard drops the expired messages of its offline sessions'
/// queues, in memory and in the store.
const EXPIRED_PURGE_TICKS: u64 = 10;

/// Publishes a will: retained update (if flagged) then routing.
pub(crate) fn publish_will(router: &Router, metrics: &BrokerMetrics, message: Arc<Message>) {
    metrics.wills_published.increment(1);
    router.publish(&message);
}

fn end_session(context: &RegistryContext, handle: &SessionHandle) {
    if let Some(mut state) = handle.end() {
        discard_state(&context.router, &mut state);
    }
    if let Some(persistence) = &context.persistence {
        persistence.session_ended(handle);
    }
}

/// Removes the subscriptions of a session state that is being thrown away.
pub(crate) fn discard_state(router: &Router, state: &mut SessionState) {
    let filters = std::mem::take(&mut state.subscriptions)
        .into_iter()
        .map(|s| s.filter());
    router.remove_session(state.id, filters);
}

impl Actor for RegistryShard {
    type Msg = RegistryMessage;
    type State = RegistryShardState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let depth = self.context.metrics.registry_mailbox_depth.clone();
        myself.send_interval(REGISTRY_TICK, move || {
            depth.sent();
            RegistryMessage::Tick(Instant::now())
        });
        Ok(RegistryShardState {
            sessions: sessions::Sessions::default(),
            next_epoch: 1,
            ticks: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let context = &self.context;
        context.metrics.registry_shards.handled.increment(1);
        context.metrics.registry_mailbox_depth.taken();
        match message {
            RegistryMessage::Register(client_id, clean_start, protocol, reply) => {
                let epoch = state.next_epoch;
                state.next_epoch += 1;
                let outcome = match state.sessions.get_mut(&client_id) {
                    Some(entry) if !clean_start => {
                        entry.epoch = epoch;
                        entry.online = true;
                        entry.expires_at = None;
                        // [MQTT-3.1.3-9] a reconnect before the will delay passed cancels the will.
                        entry.will = None;
                        RegisterOutcome {
                            session: entry.handle.clone(),
                            session_present: true,
                            epoch,
                            discarded: None,
                        }
                    }
                    existing => {
                        let session_id =
                            SessionId(context.next_session_id.fetch_add(1, Ordering::Relaxed));
                        let session_state = Box::new(SessionState::new(session_id, protocol));
                        let handle =
                            SessionHandle::new(session_id, client_id.clone(), session_state);
                        let entry = Entry {
                            handle: handle.clone(),
                            epoch,
                            online: true,
                            expires_at: None,
                            will: None,
                            connection: None,
                        };
                        let discarded = match existing {
                            Some(_) => state.sessions.insert(entry).map(|old| {
                                // The old session ends now, so its pending will is due now.
                                if let Some(will) = old.will {
                                    publish_will(&context.router, &context.metrics, will.message);
                                }
                                old.handle
                            }),
                            None => {
                                state.sessions.insert(entry);
                                None
                            }
                        };
                        RegisterOutcome {
                            session: handle,
                            session_present: false,
                            epoch,
                            discarded,
                        }
                    }
                };
                let _ = reply.send(outcome);
            }
            RegistryMessage::SessionOffline(notice) => {
                let Some(entry) = state.sessions.get_mut(&notice.client_id) else {
                    return Ok(());
                };
                if entry.epoch != notice.epoch {
                    return Ok(());
                }
                entry.online = false;
                entry.expires_at = notice.expires_at;
                entry.will = notice.will.map(Box::new);
            }
            RegistryMessage::SessionEnded { client_id, epoch } => {
                if state
                    .sessions
                    .get(&client_id)
                    .is_some_and(|entry| entry.epoch == epoch)
                {
                    if let Some(entry) = state.sessions.remove(&client_id) {
                        end_session(context, &entry.handle);
                    }
                }
            }
            RegistryMessage::Tick(sent_at) => {
                context.metrics.registry_shards.tick_handled(sent_at);
                let now = Instant::now();
                let now_ms = now.duration_since(context.epoch).as_millis() as u64;
                let mut expired = Vec::new();
                state.ticks += 1;
                let purge = state.ticks % EXPIRED_PURGE_TICKS == 0;
                let mut purged = Vec::new();
                let mut num_purged = 0;
                let mut purged_batch = WriteBatch::new();
                for entry in state.sessions.values_mut() {
                    if entry.online {
                        let deadline_ms = entry.handle.keep_alive_deadline_ms();
                        if deadline_ms != 0 && deadline_ms < now_ms {
                            entry.handle.kick(ReasonCode::KeepAliveTimeout);
                        }
                        continue;
                    }
                    if entry
                        .will
                        .as_ref()
                        .is_some_and(|will| will.publish_at <= now)
                    {
                        let will = entry.will.take().expect("checked above");
                        publish_will(&context.router, &context.metrics, will.message);
                        if let Some(persistence) = &context.persistence {
                            persistence.will_done(&entry.handle);
                        }
                    }
                    if entry.expires_at.is_some_and(|at| at <= now) {
                        expired.push(entry.handle.client_id().clone());
                        continue;
                    }
                    if purge {
                        purged.clear();
                        num_purged += entry.handle.purge_expired(now, &mut purged);
                        for stored in purged.iter().filter(|stored| stored.queue_seq != 0) {
                            purged_batch.remove_queue(
                                entry.handle.client_id(),
                                stored.queue_seq,
                                stored.message_id,
                            );
                        }
                    }
                }
                if num_purged > 0 {
                    context.metrics.dropped_expired.increment(num_purged as u64);
                    // Submitted after the batches that stored them: their publishers submitted
                    // those before pushing the deliveries.
                    if let (Some(persistence), false) =
                        (&context.persistence, purged_batch.is_empty())
                    {
                        persistence.submit_detached(purged_batch);
                    }
                }
                for client_id in expired {
                    if let Some(entry) = state.sessions.remove(&client_id) {
                        tracing::debug!(%client_id, "session expired");
                        context.metrics.sessions_expired.increment(1);
                        end_session(context, &entry.handle);
                    }
                }
            }
            RegistryMessage::KickAll(reason_code, reply) => {
                let mut num_kicked = 0;
                for entry in state.sessions.values().filter(|entry| entry.online) {
                    entry.handle.kick(reason_code);
                    num_kicked += 1;
                }
                let _ = reply.send(num_kicked);
            }
            RegistryMessage::Count(reply) => {
                let num_online = state.sessions.values().filter(|entry| entry.online).count();
                let _ = reply.send((num_online, state.sessions.len() - num_online));
            }
            RegistryMessage::ConnectionAttached {
                client_id,
                epoch,
                info,
            } => inspect::connection_attached(state, &client_id, epoch, info),
            RegistryMessage::Admin(request) => inspect::handle(context, state, request),
            RegistryMessage::Restore(restored) => {
                let RestoredSession {
                    client_id,
                    handle,
                    expires_at,
                    will,
                } = *restored;
                let epoch = state.next_epoch;
                state.next_epoch += 1;
                debug_assert_eq!(client_id, *handle.client_id());
                state.sessions.insert(Entry {
                    handle,
                    epoch,
                    online: false,
                    expires_at,
                    will: will.map(Box::new),
                    connection: None,
                });
            }
        }
        Ok(())
    }
}

/// Handle to the registry shards. Cheap to clone.
#[derive(Clone)]
pub struct SessionRegistry {
    /// Every send to a shard goes through its `ShardRef`, which counts the mailbox depth.
    shards: Arc<[shard_ref::ShardRef]>,
    context: Arc<RegistryContext>,
}

impl SessionRegistry {
    /// Spawns `num_shards` registry shard actors.
    pub(crate) async fn start(
        num_shards: usize,
        context: RegistryContext,
        supervisor: ractor::ActorCell,
    ) -> Result<SessionRegistry, ractor::SpawnErr> {
        let context = Arc::new(context);
        let mut shards = Vec::with_capacity(num_shards);
        for _ in 0..num_shards {
            let (actor, _join) = Actor::spawn_linked(
                None,
                RegistryShard {
                    context: context.clone(),
                },
                (),
                supervisor.clone(),
            )
            .await?;
            shards.push(shard_ref::ShardRef::new(
                actor,
                context.metrics.registry_mailbox_depth.clone(),
            ));
        }
        Ok(SessionRegistry {
            shards: shards.into(),
            context,
        })
    }

    fn shard(&self, client_id: &str) -> &shard_ref::ShardRef {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        client_id.hash(&mut hasher);
        &self.shards[(hasher.finish() % self.shards.len() as u64) as usize]
    }

    /// Returns the messages sent to the registry shards and not yet handled.
    pub fn mailbox_depth(&self) -> i64 {
        self.context.metrics.registry_mailbox_depth.get()
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.context.epoch
    }

    pub(crate) async fn register(
        &self,
        client_id: ByteString,
        clean_start: bool,
        protocol: ProtocolVersion,
    ) -> Result<RegisterOutcome, String> {
        let shard = self.shard(&client_id);
        ractor::call_t!(
            shard,
            RegistryMessage::Register,
            REGISTRY_CALL_TIMEOUT_MS,
            client_id,
            clean_start,
            protocol
        )
        .map_err(|e| e.to_string())
    }

    /// Registers a session recovered from the store (offline).
    pub(crate) fn restore(&self, restored: RestoredSession) {
        let _ = self
            .shard(&restored.client_id)
            .cast(RegistryMessage::Restore(Box::new(restored)));
    }

    pub(crate) fn session_offline(&self, notice: OfflineNotice) {
        let _ = self
            .shard(&notice.client_id)
            .cast(RegistryMessage::SessionOffline(notice));
    }

    pub(crate) fn session_ended(&self, client_id: ByteString, epoch: u64) {
        let _ = self
            .shard(&client_id)
            .cast(RegistryMessage::SessionEnded { client_id, epoch });
    }

    /// Asks every connected session to close with `reason_code`; returns how many were asked.
    pub async fn kick_all(&self, reason_code: ReasonCode) -> usize {
        let mut num_kicked = 0;
        for shard in self.shards.iter() {
            num_kicked += ractor::call_t!(
                shard,
                RegistryMessage::KickAll,
                REGISTRY_CALL_TIMEOUT_MS,
                reason_code
            )
            .unwrap_or(0);
        }
        num_kicked
    }

    /// Returns the number of online and offline sessions.
    pub async fn count(&self) -> (usize, usize) {
        let mut totals = (0, 0);
        for shard in self.shards.iter() {
            if let Ok((online, offline)) =
                ractor::call_t!(shard, RegistryMessage::Count, REGISTRY_CALL_TIMEOUT_MS)
            {
                totals.0 += online;
                totals.1 += offline;
            }
        }
        totals
    }
}
