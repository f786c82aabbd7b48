//! Starling core: the MQTT codec, sessions, sharded topic table and routing of one broker node.
//!
//! # Layout
//! - [`codec`]: zero-copy MQTT 3.1/3.1.1/5.0 packet codec (no tokio, fuzzable alone).
//! - [`topic`]: topic name and filter validation and matching.
//! - [`router`]: topic shard actors, the sharded subscription table, retained messages.
//! - [`session`]: session handles (bounded mailboxes) and the connection task that runs a session.
//! - [`registry`]: session-registry shard actors supervising sessions and their timers.
//! - [`auth`]: the authentication/authorization hook ([`auth::AuthProvider`]) and per-client limits.
//! - [`broker`]: wiring, accept loop and shutdown of one node's engine.
//! - `supervisor`: the ractor supervisor of the shard actors (fail fast on a broken invariant).

pub mod auth;
pub mod broker;
pub mod codec;
pub mod config;
pub mod message;
pub mod metrics;
mod persistence;
pub mod registry;
pub mod router;
pub mod session;
pub mod storage;
mod supervisor;
pub mod topic;
pub mod transport;

pub use broker::{Broker, BrokerError};
pub use config::{BrokerConfig, QueueFullPolicy, SessionLimits, StorageConfig};
