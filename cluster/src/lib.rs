//! Starling cluster: membership, the inter-node gRPC service and the protobuf wire conversions.
//!
//! A node discovers its peers from a DNS name (a Kubernetes headless service), talks to them
//! with the `starling.cluster.v1.PeerService` gRPC service, and forwards publishes to the nodes
//! that have matching subscribers. This crate is the only one that knows the wire format.
//!
//! # Layout
//! - [`config`]: [`ClusterConfig`], the plain settings this crate is given by the node.
//! - [`discovery`]: resolves peer addresses from the seed DNS name.
//! - [`wire`]: conversions between `starling_core::codec` types and protobuf messages.
//! - [`server`]: the `PeerService` implementation and [`server::serve`], its accept loop.
#![warn(missing_docs)]

pub mod config;
pub mod discovery;
pub mod server;
pub mod wire;

pub use config::ClusterConfig;

/// Version of the inter-node protocol this build speaks, exchanged in `Hello`.
///
/// Raised when the meaning of an existing field of `starling.cluster.v1` changes; purely additive
/// schema changes keep it.
pub const PEER_PROTOCOL_VERSION: u32 = 1;
