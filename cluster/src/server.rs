//! The node's side of the `starling.cluster.v1.PeerService` gRPC service and its accept loop.
//!
//! `Hello` and `Heartbeat` are answered for real. `UpdateRoutes`, `Deliver` and
//! `TakeoverSession` answer `UNIMPLEMENTED` until remote routing and takeover land.

use starling_proto::cluster::v1::{
    peer_service_server::{PeerService, PeerServiceServer},
    DeliverAck, DeliverRequest, HeartbeatRequest, HeartbeatResponse, HelloRequest, HelloResponse,
    RouteUpdate, RouteUpdateAck, TakeoverRequest, TakeoverResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    transport::{server::TcpIncoming, Server},
    Request, Response, Status, Streaming,
};

use crate::{ClusterConfig, PEER_PROTOCOL_VERSION};

/// The oldest peer protocol version this node still understands.
pub const MIN_PEER_PROTOCOL_VERSION: u32 = 1;

/// Why the peer service refused a call.
///
/// [`PeerServiceError::to_status`] is the one table from these errors to gRPC status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerServiceError {
    /// The caller sent an empty node id.
    #[error("peer sent an empty node id")]
    EmptyNodeId,
    /// The caller belongs to another cluster.
    #[error("peer belongs to cluster `{received}`, this node to cluster `{expected}`")]
    ClusterNameMismatch {
        /// This node's cluster name.
        expected: String,
        /// The caller's cluster name.
        received: String,
    },
    /// The caller speaks a protocol version this node does not understand.
    #[error("peer speaks protocol version {received}, this node understands {min}..={max}")]
    UnsupportedProtocolVersion {
        /// The caller's protocol version.
        received: u32,
        /// The oldest version this node understands.
        min: u32,
        /// The newest version this node understands.
        max: u32,
    },
    /// The call came from this very node, e.g. because discovery returned its own address.
    #[error("peer call came from this node itself")]
    SelfConnection,
    /// Another node uses this node's id: two nodes are misconfigured with the same id.
    #[error("another node uses this node's id `{node_id}`")]
    DuplicateNodeId {
        /// The contested node id.
        node_id: String,
    },
    /// The RPC exists in the schema but this node does not serve it yet.
    #[error("peer rpc {rpc} is not implemented by this node yet")]
    NotImplemented {
        /// Name of the RPC.
        rpc: &'static str,
    },
}

impl PeerServiceError {
    /// Maps the error to the gRPC status sent to the caller.
    pub fn to_status(&self) -> Status {
        let message = self.to_string();
        match self {
            PeerServiceError::EmptyNodeId => Status::invalid_argument(message),
            PeerServiceError::ClusterNameMismatch { .. } => Status::failed_precondition(message),
            PeerServiceError::UnsupportedProtocolVersion { .. } => {
                Status::failed_precondition(message)
            }
            PeerServiceError::SelfConnection => Status::failed_precondition(message),
            PeerServiceError::DuplicateNodeId { .. } => Status::already_exists(message),
            PeerServiceError::NotImplemented { .. } => Status::unimplemented(message),
        }
    }
}

impl From<PeerServiceError> for Status {
    fn from(error: PeerServiceError) -> Status {
        error.to_status()
    }
}

/// Implements `PeerService` for one node.
///
/// Holds only this node's immutable identity; it keeps no state about peers yet.
#[derive(Debug, Clone)]
pub struct PeerServer {
    /// This node's id.
    node_id: String,
    /// This node's cluster name.
    cluster_name: String,
    /// Where peers reach this node, as `host:port`.
    advertise_addr: String,
    /// Distinguishes this run of the node from its earlier runs.
    incarnation: u64,
}

impl PeerServer {
    /// Creates the service of the node described by `config`, in its run `incarnation`.
    ///
    /// The node picks a new `incarnation` on every start, e.g. its start time in milliseconds.
    pub fn new(config: &ClusterConfig, incarnation: u64) -> PeerServer {
        PeerServer {
            node_id: config.node_id.clone(),
            cluster_name: config.cluster_name.clone(),
            advertise_addr: config.advertise_addr.clone(),
            incarnation,
        }
    }

    /// Checks a `Hello` and builds the answer describing this node.
    fn answer_hello(&self, hello: &HelloRequest) -> Result<HelloResponse, PeerServiceError> {
        self.check_node_id(&hello.node_id, hello.incarnation)?;
        if hello.cluster_name != self.cluster_name {
            return Err(PeerServiceError::ClusterNameMismatch {
                expected: self.cluster_name.clone(),
                received: hello.cluster_name.clone(),
            });
        }
        // Newer peers talk down to us; the caller uses the lower of both versions.
        if hello.protocol_version < MIN_PEER_PROTOCOL_VERSION {
            return Err(PeerServiceError::UnsupportedProtocolVersion {
                received: hello.protocol_version,
                min: MIN_PEER_PROTOCOL_VERSION,
                max: PEER_PROTOCOL_VERSION,
            });
        }
        Ok(HelloResponse {
            node_id: self.node_id.clone(),
            cluster_name: self.cluster_name.clone(),
            advertise_address: self.advertise_addr.clone(),
            protocol_version: PEER_PROTOCOL_VERSION,
            incarnation: self.incarnation,
        })
    }

    /// Checks a `Heartbeat` and builds the answer echoing its sequence.
    fn answer_heartbeat(
        &self,
        heartbeat: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, PeerServiceError> {
        self.check_node_id(&heartbeat.node_id, heartbeat.incarnation)?;
        Ok(HeartbeatResponse {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation,
            sequence: heartbeat.sequence,
        })
    }

    /// Refuses an empty node id, this node's own calls and another node with this node's id.
    fn check_node_id(&self, node_id: &str, incarnation: u64) -> Result<(), PeerServiceError> {
        if node_id.is_empty() {
            return Err(PeerServiceError::EmptyNodeId);
        }
        if node_id == self.node_id {
            if incarnation == self.incarnation {
                return Err(PeerServiceError::SelfConnection);
            }
            return Err(PeerServiceError::DuplicateNodeId {
                node_id: node_id.to_owned(),
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl PeerService for PeerServer {
    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let hello = request.into_inner();
        match self.answer_hello(&hello) {
            Ok(hello_response) => {
                tracing::info!(
                    peer_node_id = %hello.node_id,
                    peer_advertise_address = %hello.advertise_address,
                    peer_incarnation = hello.incarnation,
                    peer_protocol_version = hello.protocol_version,
                    "peer said hello"
                );
                Ok(Response::new(hello_response))
            }
            Err(error) => {
                tracing::warn!(
                    peer_node_id = %hello.node_id,
                    peer_advertise_address = %hello.advertise_address,
                    %error,
                    "refused peer hello"
                );
                Err(error.to_status())
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let heartbeat = request.into_inner();
        match self.answer_heartbeat(&heartbeat) {
            Ok(heartbeat_response) => {
                tracing::trace!(
                    peer_node_id = %heartbeat.node_id,
                    sequence = heartbeat.sequence,
                    "peer heartbeat"
                );
                Ok(Response::new(heartbeat_response))
            }
            Err(error) => {
                tracing::warn!(peer_node_id = %heartbeat.node_id, %error, "refused peer heartbeat");
                Err(error.to_status())
            }
        }
    }

    async fn update_routes(
        &self,
        _request: Request<RouteUpdate>,
    ) -> Result<Response<RouteUpdateAck>, Status> {
        Err(PeerServiceError::NotImplemented {
            rpc: "UpdateRoutes",
        }
        .to_status())
    }

    async fn deliver(
        &self,
        _request: Request<Streaming<DeliverRequest>>,
    ) -> Result<Response<DeliverAck>, Status> {
        Err(PeerServiceError::NotImplemented { rpc: "Deliver" }.to_status())
    }

    async fn takeover_session(
        &self,
        _request: Request<TakeoverRequest>,
    ) -> Result<Response<TakeoverResponse>, Status> {
        Err(PeerServiceError::NotImplemented {
            rpc: "TakeoverSession",
        }
        .to_status())
    }
}

/// Why the peer service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC transport failed, e.g. accepting connections failed for good.
    #[error("peer grpc transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `peer_server` on `listener` until `shutdown` is cancelled.
///
/// The node binds the listener; this function only accepts on it. On cancellation it stops
/// accepting, closes the listener and waits for open peer connections to finish.
///
/// # Errors
/// Returns [`ServeError::Transport`] when the transport fails before shutdown.
pub async fn serve(
    listener: TcpListener,
    peer_server: PeerServer,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let local_addr = listener.local_addr().ok();
    tracing::info!(?local_addr, node_id = %peer_server.node_id, "serving peer grpc");
    // Peer traffic is small request/response calls; Nagle's delay would only add latency.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .serve_with_incoming_shutdown(
            PeerServiceServer::new(peer_server),
            incoming,
            shutdown.cancelled_owned(),
        )
        .await?;
    tracing::info!(?local_addr, "peer grpc stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_for_test() -> HelloRequest {
        HelloRequest {
            node_id: "starling-test-1".to_owned(),
            cluster_name: "starling-test".to_owned(),
            advertise_address: "127.0.0.1:7947".to_owned(),
            protocol_version: PEER_PROTOCOL_VERSION,
            incarnation: 1,
        }
    }

    /// Edits a valid `Hello` into one case of a test table.
    type HelloEdit = fn(&mut HelloRequest);

    fn peer_server_for_test() -> PeerServer {
        PeerServer::new(&ClusterConfig::for_test(), 100)
    }

    #[test]
    fn hello_from_a_peer_of_the_same_cluster_is_answered_with_this_node() {
        let hello_response = peer_server_for_test()
            .answer_hello(&hello_for_test())
            .unwrap();
        assert_eq!(hello_response.node_id, "starling-test-0");
        assert_eq!(hello_response.cluster_name, "starling-test");
        assert_eq!(hello_response.advertise_address, "127.0.0.1:7946");
        assert_eq!(hello_response.protocol_version, PEER_PROTOCOL_VERSION);
        assert_eq!(hello_response.incarnation, 100);
    }

    #[test]
    fn hello_from_a_newer_protocol_version_is_accepted() {
        let mut hello = hello_for_test();
        hello.protocol_version = PEER_PROTOCOL_VERSION + 1;
        assert!(peer_server_for_test().answer_hello(&hello).is_ok());
    }

    #[test]
    fn refused_hellos_map_to_one_status_code_each() {
        let table: [(HelloEdit, tonic::Code); 5] = [
            (|hello| hello.node_id.clear(), tonic::Code::InvalidArgument),
            (
                |hello| hello.cluster_name = "other".to_owned(),
                tonic::Code::FailedPrecondition,
            ),
            (
                |hello| hello.protocol_version = 0,
                tonic::Code::FailedPrecondition,
            ),
            (
                |hello| {
                    hello.node_id = "starling-test-0".to_owned();
                    hello.incarnation = 100;
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                |hello| hello.node_id = "starling-test-0".to_owned(),
                tonic::Code::AlreadyExists,
            ),
        ];
        let peer_server = peer_server_for_test();
        for (edit, expected_code) in table {
            let mut hello = hello_for_test();
            edit(&mut hello);
            let error = peer_server.answer_hello(&hello).unwrap_err();
            assert_eq!(error.to_status().code(), expected_code, "{error}");
        }
    }

    #[test]
    fn not_implemented_rpcs_answer_unimplemented_and_name_the_rpc() {
        let status = PeerServiceError::NotImplemented { rpc: "Deliver" }.to_status();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("Deliver"));
    }
}
