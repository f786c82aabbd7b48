//! One swarm client task: connects on schedule, waits for the start, then publishes at its
//! rate, receives and acknowledges, answers commands, reconnects (churn), and finally reports
//! what it received.
//!
//! The per-message work (building publishes, handling incoming packets) is in
//! `client/traffic.rs`; this file holds the task's lifecycle.

mod traffic;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use starling_core::codec::{
    ByteString, Disconnect, DisconnectProperties, Packet, ReasonCode, RetainHandling,
    SubscriptionOptions,
};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::{sleep, sleep_until, Instant};

use crate::conn::{ConnectError, ConnectParams, MqttConn};
use crate::payload::{now_ns, FastRng, PayloadShape};
use crate::scenario::{qos_of, Scenario};
use crate::stats::{bump, WorkerStats};
use crate::topic::render;
use crate::tracker::{RangeSet, SeqTracker};

use traffic::{InflightEntry, PublishPlan};

/// Reconnect attempts after a lost connection before the client gives up.
const MAX_RECONNECT_ATTEMPTS: u32 = 5;
/// Longest wait between reconnect attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// Time the broker gets to close the connection after the final DISCONNECT.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Time the broker gets to close the connection after a churn DISCONNECT (short: the client
/// is meant to come back quickly).
const CHURN_CLOSE_LINGER: Duration = Duration::from_millis(50);

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Subscriber,
    Publisher,
    /// Sends commands and measures the round trip of the responses.
    Backend,
    /// Answers commands.
    Device,
}

/// One client of the plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSpec {
    /// Index over all clients of the run: connect order, worker assignment, publisher id.
    pub(crate) global_idx: u32,
    /// Index within its group: the `{id}` of templates.
    pub(crate) group_idx: u32,
    pub(crate) role: Role,
}

/// Where the run is; set by the worker, watched by every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Connecting,
    Running {
        epoch: Instant,
        publish_end: Instant,
    },
    Stopped,
}

/// Counts first connection attempts still in progress; the worker waits for zero.
#[derive(Debug)]
pub(crate) struct PendingConnects {
    remaining: AtomicUsize,
    notify: Notify,
}

impl PendingConnects {
    pub(crate) fn new(count: usize) -> PendingConnects {
        PendingConnects {
            remaining: AtomicUsize::new(count),
            notify: Notify::new(),
        }
    }

    fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until every client finished its first attempt.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What the clients of one worker share.
pub(crate) struct ClientContext {
    pub(crate) scenario: Scenario,
    pub(crate) run_id: u16,
    pub(crate) broker: SocketAddr,
    pub(crate) sources: Vec<IpAddr>,
    pub(crate) client_id_prefix: String,
    pub(crate) stats: Arc<WorkerStats>,
    /// Bounds handshakes in progress (`max_concurrent_connects`).
    pub(crate) connect_slots: Semaphore,
    pub(crate) connect_start: Instant,
    pub(crate) pending_connects: PendingConnects,
    pub(crate) payload: Option<PayloadShape>,
    /// Command topics of all devices, indexed by device (request/response only).
    pub(crate) command_topics: Vec<ByteString>,
    pub(crate) phase: watch::Receiver<Phase>,
    /// TLS settings shared by every connection, when the scenario asks for TLS.
    pub(crate) tls: Option<crate::tls::TlsClient>,
    /// Each publishing client sends `(global index, messages sent)` once; sized for all of
    /// them, so sending never waits.
    pub(crate) publish_done: mpsc::Sender<(u32, u64)>,
}

/// What a client reports when it ends.
#[derive(Debug)]
pub(crate) struct ClientOutcome {
    pub(crate) connected: bool,
    /// Distinct deliveries received (not shared-subscription members).
    pub(crate) unique: u64,
    /// Received sets per publisher, for shared-subscription members, with their shared
    /// filter.
    pub(crate) shared: Vec<(u32, RangeSet)>,
    pub(crate) shared_filter: Option<String>,
}

/// Returns when client `idx` (in global connect order) starts connecting.
pub(crate) fn connect_offset(idx: u64, rate: Option<f64>, ramp_secs: f64) -> Duration {
    let Some(rate) = rate else {
        return Duration::ZERO;
    };
    let idx = idx as f64;
    // During the ramp the rate grows linearly, so `idx` clients have started by
    // t = sqrt(2 * ramp * idx / rate).
    let ramp_count = rate * ramp_secs / 2.0;
    let secs = if ramp_secs > 0.0 && idx < ramp_count {
        (2.0 * ramp_secs * idx / rate).sqrt()
    } else {
        ramp_secs + (idx - ramp_count) / rate
    };
    Duration::from_secs_f64(secs.max(0.0))
}

/// The state of one client.
struct Client {
    ctx: Arc<ClientContext>,
    spec: ClientSpec,
    params: ConnectParams,
    /// A session that survives disconnects, so reconnects resume it.
    persistent: bool,
    filters: Vec<(String, SubscriptionOptions)>,
    shared_member: bool,
    publish: Option<PublishPlan>,
    /// Sequence number of the next message published.
    seq: u64,
    publishing_done: bool,
    inflight: HashMap<u16, InflightEntry>,
    next_packet_id: u16,
    window: usize,
    trackers: HashMap<u32, SeqTracker>,
    /// QoS 2 packet ids received and not yet released by PUBREL.
    awaiting_rel: HashSet<u16>,
    consume_rate: Option<f64>,
    consumed: u64,
    consume_start: Option<Instant>,
    reconnect_every: Option<Duration>,
    offline: Duration,
    rng: FastRng,
    /// Latencies and counts batched between locks or atomic updates.
    latencies_us: Vec<u64>,
    ack_latencies_us: Vec<u64>,
}

/// Runs one client from its first connect to its final report.
pub(crate) async fn run_client(ctx: Arc<ClientContext>, spec: ClientSpec) -> ClientOutcome {
    let mut client = Client::new(ctx.clone(), spec);
    let mut outcome = ClientOutcome {
        connected: false,
        unique: 0,
        shared: Vec::new(),
        shared_filter: None,
    };
    let scenario = &ctx.scenario;
    let offset = connect_offset(
        u64::from(spec.global_idx),
        scenario.connect_rate,
        scenario.ramp_secs,
    );
    sleep_until(ctx.connect_start + offset).await;
    let established = {
        let _slot = ctx
            .connect_slots
            .acquire()
            .await
            .expect("connect semaphore is never closed");
        bump(&ctx.stats.counters.connect_attempts, 1);
        let started = Instant::now();
        let result = client.establish(true).await;
        if result.is_ok() {
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            ctx.stats.record_connect_latency(elapsed_us);
        }
        result
    };
    ctx.stats
        .last_connect_done_ns
        .fetch_max(now_ns(), Ordering::Relaxed);
    let conn = match established {
        Ok((conn, _)) => {
            bump(&ctx.stats.counters.connected, 1);
            ctx.pending_connects.done();
            conn
        }
        Err(error) => {
            bump(&ctx.stats.counters.connect_failed, 1);
            if spec.role == Role::Subscriber {
                ctx.stats
                    .failed_subscribers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(spec.global_idx);
            }
            client.record_error("", &error);
            ctx.pending_connects.done();
            client.finish_publishing().await;
            return outcome;
        }
    };
    outcome.connected = true;
    let mut phase_rx = ctx.phase.clone();
    let phase = match phase_rx.wait_for(|phase| *phase != Phase::Connecting).await {
        Ok(phase) => *phase,
        Err(_) => Phase::Stopped,
    };
    if let Phase::Running { epoch, publish_end } = phase {
        client.run(conn, &mut phase_rx, epoch, publish_end).await;
    } else {
        client.disconnect(conn).await;
    }
    client.finish_publishing().await;
    client.fill_outcome(&mut outcome);
    outcome
}

impl Client {
    fn new(ctx: Arc<ClientContext>, spec: ClientSpec) -> Client {
        let scenario = &ctx.scenario;
        let version = scenario.protocol.version();
        let client_id = match spec.role {
            Role::Subscriber => format!("{}sub-{}", ctx.client_id_prefix, spec.group_idx),
            Role::Publisher => format!("{}pub-{}", ctx.client_id_prefix, spec.group_idx),
            Role::Backend => format!("{}backend-{}", ctx.client_id_prefix, spec.group_idx),
            Role::Device => format!("{}dev-{}", ctx.client_id_prefix, spec.group_idx),
        };
        let (clean_start, session_expiry_secs) = match spec.role {
            Role::Subscriber => scenario.subscribers.as_ref().map_or((true, 0), |group| {
                (group.clean_start, group.session_expiry_secs)
            }),
            Role::Publisher => scenario.publishers.as_ref().map_or((true, 0), |group| {
                (group.clean_start, group.session_expiry_secs)
            }),
            Role::Backend | Role::Device => (true, 0),
        };
        let persistent = if version.is_v5() {
            session_expiry_secs > 0
        } else {
            !clean_start
        };
        let mut filters = Vec::new();
        let mut shared_member = false;
        let mut consume_rate = None;
        let mut reconnect_every = None;
        let mut offline = Duration::ZERO;
        let options = |qos: u8| SubscriptionOptions {
            qos: qos_of(qos),
            retain_handling: RetainHandling::SendAtSubscribe,
            ..SubscriptionOptions::default()
        };
        match (
            spec.role,
            &scenario.subscribers,
            &scenario.publishers,
            &scenario.commands,
        ) {
            (Role::Subscriber, Some(group), _, _) => {
                let filter = render(&group.filter, spec.group_idx);
                let filter = match &group.shared_group {
                    Some(name) => {
                        shared_member = true;
                        format!("$share/{name}/{filter}")
                    }
                    None => filter,
                };
                filters.push((filter, options(group.qos)));
                consume_rate = group.consume_rate;
                reconnect_every = group.reconnect_every_secs.map(Duration::from_secs_f64);
                offline = Duration::from_millis(group.offline_ms);
            }
            (Role::Publisher, _, Some(group), _) => {
                reconnect_every = group.reconnect_every_secs.map(Duration::from_secs_f64);
                offline = Duration::from_millis(group.offline_ms);
            }
            (Role::Backend, _, _, Some(commands)) => {
                filters.push((
                    render(&commands.response_topic, spec.group_idx),
                    options(commands.qos),
                ));
            }
            (Role::Device, _, _, Some(commands)) => {
                filters.push((
                    render(&commands.command_topic, spec.group_idx),
                    options(commands.qos),
                ));
            }
            _ => {}
        }
        let publish = PublishPlan::for_client(&ctx, spec);
        let window = publish
            .as_ref()
            .map_or(usize::from(u16::MAX), |plan| plan.window);
        let source = match ctx.sources.len() {
            0 => None,
            len => Some(ctx.sources[spec.global_idx as usize % len]),
        };
        let params = ConnectParams {
            broker: ctx.broker,
            source,
            client_id,
            version,
            clean_start,
            keep_alive_secs: scenario.keep_alive_secs,
            session_expiry_secs,
            timeout: Duration::from_millis(scenario.connect_timeout_ms),
            slow_reader: consume_rate.is_some(),
            tls: ctx.tls.clone(),
        };
        Client {
            spec,
            params,
            persistent,
            filters,
            shared_member,
            publish,
            seq: 0,
            publishing_done: false,
            inflight: HashMap::new(),
            next_packet_id: 0,
            window,
            trackers: HashMap::new(),
            awaiting_rel: HashSet::new(),
            consume_rate,
            consumed: 0,
            consume_start: None,
            reconnect_every,
            offline,
            rng: FastRng::new(u64::from(spec.global_idx) ^ u64::from(ctx.run_id) << 32),
            latencies_us: Vec::new(),
            ack_latencies_us: Vec::new(),
            ctx,
        }
    }

    /// Connects and (when the session is not resumed) subscribes.
    async fn establish(&mut self, first: bool) -> Result<(MqttConn, bool), ConnectError> {
        let mut params = self.params.clone();
        if !first && self.persistent {
            params.clean_start = false;
        }
        let (mut conn, connack) = MqttConn::connect(&params).await?;
        if let Some(receive_maximum) = connack.properties.receive_maximum {
            if let Some(plan) = &self.publish {
                self.window = plan.window.min(usize::from(receive_maximum));
            }
        }
        if !connack.session_present && !self.filters.is_empty() {
            conn.subscribe(&self.filters, params.timeout).await?;
        }
        Ok((conn, connack.session_present))
    }

    fn record_error(&self, context: &str, error: &ConnectError) {
        let broker = self.ctx.broker;
        let kind = format!("{context}{}", error.kind());
        self.ctx.stats.record_error(&kind, || {
            format!("{context}{broker} ({}): {error}", self.params.client_id)
        });
    }

    /// The main loop of the measured phase.
    async fn run(
        &mut self,
        mut conn: MqttConn,
        phase_rx: &mut watch::Receiver<Phase>,
        epoch: Instant,
        publish_end: Instant,
    ) {
        let keep_alive = Duration::from_secs(u64::from(self.params.keep_alive_secs));
        let send_start = epoch
            + self
                .publish
                .as_ref()
                .map_or(Duration::ZERO, |plan| plan.phase_offset);
        let group_fraction = self.group_fraction();
        let mut next_churn = self
            .reconnect_every
            .map(|every| epoch + every.mul_f64(group_fraction));
        let mut last_send = Instant::now();
        loop {
            let send_at = self.next_send_at(send_start, publish_end);
            let paused_until = self.consume_paused_until();
            let mut housekeeping_at = if keep_alive.is_zero() {
                publish_end + Duration::from_secs(86_400)
            } else {
                last_send + keep_alive
            };
            if self.publish.is_some() && !self.publishing_done {
                housekeeping_at = housekeeping_at.min(publish_end);
            }
            if let Some(churn_at) = next_churn {
                housekeeping_at = housekeeping_at.min(churn_at);
            }
            let lost: Option<String> = tokio::select! {
                biased;
                changed = phase_rx.changed() => {
                    if changed.is_err() || *phase_rx.borrow() == Phase::Stopped {
                        break;
                    }
                    None
                }
                read = conn.read_some(), if paused_until.is_none() => match read {
                    Ok(0) => Some("closed by broker".to_owned()),
                    Ok(_) => self.handle_incoming(&mut conn).await.err(),
                    Err(error) => Some(format!("read: {error}")),
                },
                _ = sleep_until(paused_until.unwrap_or(epoch)), if paused_until.is_some() => None,
                _ = wait_until(send_at), if send_at.is_some() => {
                    last_send = Instant::now();
                    self.send_batch(&mut conn, send_start, publish_end).await.err()
                }
                _ = sleep_until(housekeeping_at) => {
                    let now = Instant::now();
                    if self.publish.is_some() && !self.publishing_done && now >= publish_end {
                        self.finish_publishing().await;
                    }
                    if !keep_alive.is_zero() && now >= last_send + keep_alive {
                        conn.queue(&Packet::PingReq);
                        last_send = now;
                        conn.flush().await.err().map(|error| format!("write: {error}"))
                    } else if next_churn.is_some_and(|churn_at| now >= churn_at) {
                        next_churn = next_churn.zip(self.reconnect_every).map(|(at, every)| at + every);
                        self.disconnect_keeping_session(conn).await;
                        match self.reconnect(phase_rx, self.offline).await {
                            Some(new_conn) => {
                                conn = new_conn;
                                last_send = Instant::now();
                                continue;
                            }
                            None => return,
                        }
                    } else {
                        None
                    }
                }
            };
            if let Some(reason) = lost {
                bump(&self.ctx.stats.counters.connections_lost, 1);
                let broker = self.ctx.broker;
                let client_id = self.params.client_id.clone();
                self.ctx
                    .stats
                    .record_error(&format!("lost: {}", short_reason(&reason)), || {
                        format!("connection lost: {broker} ({client_id}): {reason}")
                    });
                match self
                    .reconnect(phase_rx, self.offline.max(Duration::from_millis(100)))
                    .await
                {
                    Some(new_conn) => {
                        conn = new_conn;
                        last_send = Instant::now();
                    }
                    None => return,
                }
            }
        }
        self.disconnect(conn).await;
    }

    fn group_fraction(&self) -> f64 {
        let count = match self.spec.role {
            Role::Subscriber => self
                .ctx
                .scenario
                .subscribers
                .as_ref()
                .map_or(1, |group| group.count),
            Role::Publisher => self
                .ctx
                .scenario
                .publishers
                .as_ref()
                .map_or(1, |group| group.count),
            Role::Backend | Role::Device => 1,
        };
        (f64::from(self.spec.group_idx) + 1.0) / count.max(1) as f64
    }

    /// Returns when the slow consumer may read again, if it must wait.
    fn consume_paused_until(&mut self) -> Option<Instant> {
        let rate = self.consume_rate?;
        let start = *self.consume_start.get_or_insert_with(Instant::now);
        let allowed_at = start + Duration::from_secs_f64(self.consumed as f64 / rate);
        (allowed_at > Instant::now()).then_some(allowed_at)
    }

    /// Waits `delay`, then reconnects; `None` when the run stopped or every attempt failed.
    async fn reconnect(
        &mut self,
        phase_rx: &mut watch::Receiver<Phase>,
        mut delay: Duration,
    ) -> Option<MqttConn> {
        for _ in 0..MAX_RECONNECT_ATTEMPTS {
            tokio::select! {
                _ = sleep(delay) => {}
                _ = phase_rx.wait_for(|phase| *phase == Phase::Stopped) => return None,
            }
            bump(&self.ctx.stats.counters.connect_attempts, 1);
            match self.establish(false).await {
                Ok((mut conn, session_present)) => {
                    bump(&self.ctx.stats.counters.reconnects, 1);
                    bump(
                        &self.ctx.stats.counters.sessions_resumed,
                        u64::from(session_present),
                    );
                    self.resend_inflight(&mut conn);
                    if conn.flush().await.is_ok() {
                        return Some(conn);
                    }
                }
                Err(error) => self.record_error("reconnect: ", &error),
            }
            delay = (delay * 2).clamp(Duration::from_millis(100), MAX_RECONNECT_BACKOFF);
        }
        None
    }

    /// Churn: DISCONNECT keeping the session, and close.
    async fn disconnect_keeping_session(&mut self, mut conn: MqttConn) {
        conn.queue(&Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: DisconnectProperties::default(),
        }));
        conn.close(CHURN_CLOSE_LINGER).await;
    }

    /// End of run: DISCONNECT, discarding an MQTT 5 session so it does not outlive the run.
    async fn disconnect(&mut self, mut conn: MqttConn) {
        let discard_session = conn.version.is_v5() && self.params.session_expiry_secs > 0;
        conn.queue(&Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: DisconnectProperties {
                session_expiry_interval: discard_session.then_some(0),
                ..DisconnectProperties::default()
            },
        }));
        conn.close(CLOSE_LINGER).await;
    }

    /// Reports the number of messages sent, once, if this client publishes.
    async fn finish_publishing(&mut self) {
        if self.publish.is_none() || self.publishing_done {
            return;
        }
        self.publishing_done = true;
        let _ = self
            .ctx
            .publish_done
            .send((self.spec.global_idx, self.seq))
            .await;
    }

    fn fill_outcome(&mut self, outcome: &mut ClientOutcome) {
        self.flush_batches();
        bump(&self.ctx.stats.counters.unacked, self.inflight.len() as u64);
        if self.shared_member {
            outcome.shared_filter = self.filters.first().map(|(filter, _)| filter.clone());
            outcome.shared = self
                .trackers
                .iter()
                .map(|(&publisher_id, tracker)| (publisher_id, tracker.to_ranges()))
                .collect();
        } else {
            outcome.unique = self.trackers.values().map(SeqTracker::unique).sum();
        }
    }
}

/// Waits until `at`, or not at all when `at` is `None` (the branch is disabled then).
async fn wait_until(at: Option<Instant>) {
    if let Some(at) = at {
        if at > Instant::now() {
            sleep_until(at).await;
        }
    }
}

/// Shortens an error message to a kind for counting.
fn short_reason(reason: &str) -> &str {
    reason.split(" (os error").next().unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_schedule_follows_the_rate() {
        assert_eq!(connect_offset(500, None, 0.0), Duration::ZERO);
        let offset = connect_offset(500, Some(1000.0), 0.0);
        assert!((offset.as_secs_f64() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn connect_schedule_ramps_linearly() {
        // 1000/s reached after a 2 s ramp: 1000 clients connect during the ramp.
        let at_ramp_end = connect_offset(1000, Some(1000.0), 2.0).as_secs_f64();
        assert!((at_ramp_end - 2.0).abs() < 1e-9);
        let quarter = connect_offset(250, Some(1000.0), 2.0).as_secs_f64();
        assert!((quarter - 1.0).abs() < 1e-9);
        let after = connect_offset(2000, Some(1000.0), 2.0).as_secs_f64();
        assert!((after - 3.0).abs() < 1e-9);
    }
}
