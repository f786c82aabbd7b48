//! Bridge actor tests against a recording test sink, on paused time.

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use ractor::{rpc::CallResult, Actor, ActorRef};
use starling_core::codec::{ByteString, Publish, PublishProperties, QoS};
use tokio::{sync::Semaphore, time::Instant};

use super::*;
use crate::{
    buffer::{bridge_buffer, BridgeBuffer, BridgeBufferConfig, PushOutcome, WhenFull},
    counters::{DROPPED_MESSAGES_TOTAL, FAILED_SENDS_TOTAL, SENT_MESSAGES_TOTAL},
};

fn publish_for_test(idx: usize) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from_static("bridge/test"),
        packet_id: None,
        properties: PublishProperties::default(),
        payload: Bytes::from(idx.to_string()),
    }
}

fn publishes_for_test(idx_range: std::ops::Range<usize>) -> Vec<Publish> {
    idx_range.map(publish_for_test).collect()
}

/// What the test sink saw, shared between the test and the actor owning the sink.
#[derive(Default)]
struct SinkRecord {
    /// Messages of every accepted batch, in the order the sink accepted them.
    received: Vec<Publish>,
    /// Size of every accepted batch.
    batch_sizes: Vec<usize>,
    /// Calls to `send_batch`, including failed ones.
    num_calls: usize,
    /// Results of the next calls; calls beyond the script succeed.
    scripted_results: VecDeque<Result<(), SinkError>>,
}

/// A test double that records batches and fails as scripted.
#[derive(Clone, Default)]
struct RecordingSink {
    record: Arc<Mutex<SinkRecord>>,
    /// When set, every call first takes one permit, so the test decides when calls proceed.
    gate: Option<Arc<Semaphore>>,
}

impl RecordingSink {
    fn with_script(
        scripted_results: impl IntoIterator<Item = Result<(), SinkError>>,
    ) -> RecordingSink {
        let sink = RecordingSink::default();
        sink.record
            .lock()
            .unwrap()
            .scripted_results
            .extend(scripted_results);
        sink
    }

    fn with_closed_gate() -> (RecordingSink, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let sink = RecordingSink {
            record: Arc::default(),
            gate: Some(gate.clone()),
        };
        (sink, gate)
    }

    fn received(&self) -> Vec<Publish> {
        self.record.lock().unwrap().received.clone()
    }

    fn num_received(&self) -> usize {
        self.record.lock().unwrap().received.len()
    }
}

impl BridgeSink for RecordingSink {
    async fn send_batch(&mut self, batch: &[Publish]) -> Result<(), SinkError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let mut record = self.record.lock().unwrap();
        record.num_calls += 1;
        let result = record.scripted_results.pop_front().unwrap_or(Ok(()));
        if result.is_ok() {
            record.received.extend_from_slice(batch);
            record.batch_sizes.push(batch.len());
        }
        result
    }
}

fn transient_error() -> Result<(), SinkError> {
    Err(SinkError::Transient {
        reason: "broker unreachable".to_owned(),
    })
}

fn buffer_config(max_events: usize, when_full: WhenFull) -> BridgeBufferConfig {
    BridgeBufferConfig {
        max_events: NonZeroUsize::new(max_events).unwrap(),
        when_full,
    }
}

async fn spawn_bridge(
    sink: RecordingSink,
    buffer_receiver: BridgeBufferReceiver,
) -> (ActorRef<BridgeMessage>, tokio::task::JoinHandle<()>) {
    let (actor_ref, join_handle) = Actor::spawn(
        None,
        BridgeActor::new(BridgeActorConfig::for_test()),
        BridgeArgs {
            sink,
            buffer_receiver,
        },
    )
    .await
    .unwrap();
    (actor_ref, join_handle)
}

async fn get_counters(actor_ref: &ActorRef<BridgeMessage>) -> BridgeCounters {
    let call_result = actor_ref
        .call(
            |reply| BridgeMessage::GetCounters { reply },
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    match call_result {
        CallResult::Success(bridge_counters) => bridge_counters,
        other => panic!("counters call failed: {other:?}"),
    }
}

/// Polls `condition` every 10 ms of (paused) time, failing after 60 s.
async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn push_all(buffer: &BridgeBuffer, publishes: Vec<Publish>) -> Vec<PushOutcome> {
    let mut push_outcomes = Vec::new();
    for publish in publishes {
        push_outcomes.push(buffer.push(publish).await.unwrap());
    }
    push_outcomes
}

#[tokio::test(start_paused = true)]
async fn messages_arrive_in_order_in_bounded_batches() {
    let (buffer, buffer_receiver) = bridge_buffer("test", &buffer_config(64, WhenFull::DropNewest));
    let sink = RecordingSink::default();
    let (actor_ref, _join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;

    push_all(&buffer, publishes_for_test(0..10)).await;
    wait_until(|| sink.num_received() == 10).await;
    push_all(&buffer, publishes_for_test(10..15)).await;
    wait_until(|| sink.num_received() == 15).await;

    assert_eq!(sink.received(), publishes_for_test(0..15));
    let batch_sizes = sink.record.lock().unwrap().batch_sizes.clone();
    assert!(
        batch_sizes
            .iter()
            .all(|&batch_size| (1..=4).contains(&batch_size)),
        "{batch_sizes:?}"
    );
    let bridge_counters = get_counters(&actor_ref).await;
    assert_eq!(
        bridge_counters,
        BridgeCounters {
            num_sent_messages: 15,
            num_dropped_messages: 0,
            num_failed_sends: 0,
            num_buffered_messages: 0,
        }
    );
    actor_ref.stop(None);
}

#[tokio::test(start_paused = true)]
async fn drop_newest_drops_and_counts_when_full() {
    let (buffer, buffer_receiver) = bridge_buffer("test", &buffer_config(2, WhenFull::DropNewest));
    // The sink holds the first batch, so the buffer fills up behind it.
    let (sink, gate) = RecordingSink::with_closed_gate();
    let (actor_ref, _join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;
    buffer.push(publish_for_test(0)).await.unwrap();
    wait_until(|| buffer_is_empty(&buffer)).await;

    let push_outcomes = push_all(&buffer, publishes_for_test(1..6)).await;
    assert_eq!(
        push_outcomes,
        [
            PushOutcome::Accepted,
            PushOutcome::Accepted,
            PushOutcome::Dropped,
            PushOutcome::Dropped,
            PushOutcome::Dropped,
        ]
    );
    assert_eq!(buffer.num_dropped(), 3);

    gate.add_permits(100);
    wait_until(|| sink.num_received() == 3).await;
    assert_eq!(sink.received(), publishes_for_test(0..3));
    let bridge_counters = get_counters(&actor_ref).await;
    assert_eq!(bridge_counters.num_sent_messages, 3);
    assert_eq!(bridge_counters.num_dropped_messages, 3);
    assert_eq!(bridge_counters.num_failed_sends, 0);
    actor_ref.stop(None);
}

/// Returns true once the actor has taken everything out of the buffer.
fn buffer_is_empty(buffer: &BridgeBuffer) -> bool {
    buffer.num_buffered() == 0
}

#[tokio::test(start_paused = true)]
async fn block_makes_the_producer_wait_for_a_slow_sink() {
    let (buffer, buffer_receiver) = bridge_buffer("test", &buffer_config(2, WhenFull::Block));
    let (sink, gate) = RecordingSink::with_closed_gate();
    let (actor_ref, _join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;

    let producer_buffer = buffer.clone();
    let producer =
        tokio::spawn(async move { push_all(&producer_buffer, publishes_for_test(0..20)).await });
    // Far less than the sink's send timeout, far more than any scheduling delay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !producer.is_finished(),
        "producer did not wait for the blocked sink"
    );
    assert_eq!(sink.num_received(), 0);
    assert_eq!(buffer.num_buffered(), 2);

    gate.add_permits(100);
    let push_outcomes = producer.await.unwrap();
    assert!(push_outcomes
        .iter()
        .all(|&outcome| outcome == PushOutcome::Accepted));
    wait_until(|| sink.num_received() == 20).await;
    assert_eq!(sink.received(), publishes_for_test(0..20));
    let bridge_counters = get_counters(&actor_ref).await;
    assert_eq!(bridge_counters.num_dropped_messages, 0);
    assert_eq!(bridge_counters.num_sent_messages, 20);
    actor_ref.stop(None);
}

#[tokio::test(start_paused = true)]
async fn failed_batch_is_retried_with_backoff_before_later_messages() {
    let (buffer, buffer_receiver) = bridge_buffer("test", &buffer_config(64, WhenFull::DropNewest));
    let sink = RecordingSink::with_script([transient_error(), transient_error()]);
    let (actor_ref, _join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;

    let started_at = Instant::now();
    push_all(&buffer, publishes_for_test(0..3)).await;
    wait_until(|| sink.num_received() >= 3).await;
    push_all(&buffer, publishes_for_test(3..6)).await;
    wait_until(|| sink.num_received() == 6).await;

    // Backoffs of 100 ms and then 200 ms passed before the first batch got through.
    assert!(
        started_at.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started_at.elapsed()
    );
    assert_eq!(sink.received(), publishes_for_test(0..6));
    let bridge_counters = get_counters(&actor_ref).await;
    assert_eq!(bridge_counters.num_failed_sends, 2);
    assert_eq!(bridge_counters.num_sent_messages, 6);
    assert_eq!(bridge_counters.num_dropped_messages, 0);
    actor_ref.stop(None);
}

#[tokio::test(start_paused = true)]
async fn rejected_batch_is_dropped_and_counted_and_the_next_one_sent() {
    let (buffer, buffer_receiver) = bridge_buffer("test", &buffer_config(64, WhenFull::DropNewest));
    let sink = RecordingSink::with_script([Err(SinkError::Rejected {
        reason: "message too large".to_owned(),
    })]);
    push_all(&buffer, publishes_for_test(0..2)).await;
    let (actor_ref, _join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;
    wait_until(|| sink.record.lock().unwrap().num_calls == 1).await;

    push_all(&buffer, publishes_for_test(2..4)).await;
    wait_until(|| sink.num_received() == 2).await;
    assert_eq!(sink.received(), publishes_for_test(2..4));
    let bridge_counters = get_counters(&actor_ref).await;
    assert_eq!(bridge_counters.num_failed_sends, 1);
    assert_eq!(bridge_counters.num_dropped_messages, 2);
    assert_eq!(bridge_counters.num_sent_messages, 2);
    actor_ref.stop(None);
}

#[tokio::test(start_paused = true)]
async fn actor_drains_everything_and_stops_after_every_buffer_handle_is_dropped() {
    let (buffer, buffer_receiver) = bridge_buffer("test", &buffer_config(64, WhenFull::DropNewest));
    push_all(&buffer, publishes_for_test(0..9)).await;
    drop(buffer);
    let sink = RecordingSink::default();
    let (_actor_ref, join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;
    tokio::time::timeout(Duration::from_secs(60), join_handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sink.received(), publishes_for_test(0..9));
}

#[test]
fn retry_backoff_doubles_and_is_capped() {
    let initial = Duration::from_millis(100);
    let max = Duration::from_secs(2);
    let backoffs: Vec<Duration> = (1..=7)
        .map(|num_failures| retry_backoff(initial, max, num_failures))
        .collect();
    let expected_ms = [100, 200, 400, 800, 1600, 2000, 2000];
    assert_eq!(backoffs, expected_ms.map(Duration::from_millis));
    assert_eq!(retry_backoff(initial, max, u32::MAX), max);
    assert_eq!(
        retry_backoff(Duration::MAX, Duration::MAX, 40),
        Duration::MAX
    );
}

/// A metrics recorder that keeps every counter and gauge in memory, keyed by name and labels.
#[derive(Default)]
struct TestRecorder {
    metrics: Mutex<HashMap<String, Arc<TestMetric>>>,
}

/// A counter value, or a gauge's `f64` bits.
#[derive(Default)]
struct TestMetric(AtomicU64);

impl CounterFn for TestMetric {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for TestMetric {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + value);
    }

    fn decrement(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for TestMetric {
    fn record(&self, _value: f64) {}
}

impl TestRecorder {
    fn metric(&self, key: &Key) -> Arc<TestMetric> {
        let labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.metrics
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .clone()
    }

    fn counter_value(&self, name: &str) -> u64 {
        let metrics = self.metrics.lock().unwrap();
        metrics
            .get(name)
            .map_or(0, |metric| metric.0.load(Ordering::Relaxed))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.metric(key))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.metric(key))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.metric(key))
    }
}

#[tokio::test(start_paused = true)]
async fn counters_are_exported_as_starling_bridge_metrics() {
    let recorder = TestRecorder::default();
    // Handles registered here keep reporting to `recorder` after the closure returns.
    let (buffer, buffer_receiver) = metrics::with_local_recorder(&recorder, || {
        bridge_buffer("kafka-audit", &buffer_config(2, WhenFull::DropNewest))
    });
    push_all(&buffer, publishes_for_test(0..3)).await;
    let sink = RecordingSink::with_script([transient_error()]);
    let (actor_ref, _join_handle) = spawn_bridge(sink.clone(), buffer_receiver).await;
    wait_until(|| sink.num_received() == 2).await;

    let label = "{bridge=kafka-audit}";
    assert_eq!(
        recorder.counter_value(&format!("{SENT_MESSAGES_TOTAL}{label}")),
        2
    );
    assert_eq!(
        recorder.counter_value(&format!("{DROPPED_MESSAGES_TOTAL}{label}")),
        1
    );
    assert_eq!(
        recorder.counter_value(&format!("{FAILED_SENDS_TOTAL}{label}")),
        1
    );
    actor_ref.stop(None);
}
