//! Starling bridges: outbound copies of MQTT traffic to external systems.
//!
//! The router pushes publishes into a [`BridgeBuffer`], a bounded queue with an overflow policy
//! ([`WhenFull`]); a [`BridgeActor`] drains it in batches into a [`BridgeSink`], retrying failed
//! batches with capped exponential backoff. **Architecture Invariant:** with
//! [`WhenFull::DropNewest`] (the default policy) a slow bridge never slows MQTT routing; only
//! [`WhenFull::Block`] back-pressures the publishers feeding the bridge.
//!
//! Each bridge kind (Kafka, HTTP, MQTT, ...) implements [`BridgeSink`] behind its own cargo
//! feature; the default features are pure Rust and contain none yet.
//!
//! # Layout
//! - [`buffer`]: [`BridgeBuffer`] and its receiving half, with the drop counter.
//! - [`sink`]: the [`BridgeSink`] trait a bridge kind implements.
//! - [`actor`]: [`BridgeActor`], the drain loop with retry and backoff.
//! - [`counters`]: [`BridgeCounters`] and the `starling_bridge_*` metrics.
#![warn(missing_docs)]

pub mod actor;
pub mod buffer;
pub mod counters;
pub mod sink;

pub use actor::{BridgeActor, BridgeActorConfig, BridgeArgs, BridgeMessage};
pub use buffer::{
    bridge_buffer, BridgeBuffer, BridgeBufferConfig, BridgeBufferReceiver, BridgeClosed,
    PushOutcome, WhenFull,
};
pub use counters::{describe_bridge_metrics, BridgeCounters};
pub use sink::{BridgeSink, SinkError};
