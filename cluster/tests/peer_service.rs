//! Starts the peer gRPC service on a loopback port and calls it through the generated client.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use starling_cluster::{
    server::{serve, PeerServer, ServeError},
    ClusterConfig, PEER_PROTOCOL_VERSION,
};
use starling_proto::cluster::v1::{
    peer_service_client::PeerServiceClient, HeartbeatRequest, HelloRequest, TakeoverRequest,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A peer service running in the background of one test.
struct TestPeerService {
    /// Where the service listens.
    addr: SocketAddr,
    /// Cancelling it stops the service.
    shutdown: CancellationToken,
    /// The serve task; ends after `shutdown` is cancelled.
    serve_task: JoinHandle<Result<(), ServeError>>,
}

async fn start_peer_service(incarnation: u64) -> TestPeerService {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ClusterConfig::for_test();
    config.advertise_addr = addr.to_string();
    let shutdown = CancellationToken::new();
    let serve_task = tokio::spawn(serve(
        listener,
        PeerServer::new(&config, incarnation),
        shutdown.clone(),
    ));
    TestPeerService {
        addr,
        shutdown,
        serve_task,
    }
}

async fn connect(addr: SocketAddr) -> PeerServiceClient<Channel> {
    PeerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn hello_for_test() -> HelloRequest {
    HelloRequest {
        node_id: "starling-test-1".to_owned(),
        cluster_name: "starling-test".to_owned(),
        advertise_address: "127.0.0.1:7947".to_owned(),
        protocol_version: PEER_PROTOCOL_VERSION,
        incarnation: 7,
    }
}

#[tokio::test]
async fn hello_and_heartbeat_are_answered_over_grpc() {
    let peer_service = start_peer_service(1234).await;
    let mut client = connect(peer_service.addr).await;

    let hello_response = client.hello(hello_for_test()).await.unwrap().into_inner();
    assert_eq!(hello_response.node_id, "starling-test-0");
    assert_eq!(hello_response.cluster_name, "starling-test");
    assert_eq!(
        hello_response.advertise_address,
        peer_service.addr.to_string()
    );
    assert_eq!(hello_response.protocol_version, PEER_PROTOCOL_VERSION);
    assert_eq!(hello_response.incarnation, 1234);

    for sequence in 1..=3 {
        let heartbeat_response = client
            .heartbeat(HeartbeatRequest {
                node_id: "starling-test-1".to_owned(),
                incarnation: 7,
                sequence,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(heartbeat_response.node_id, "starling-test-0");
        assert_eq!(heartbeat_response.incarnation, 1234);
        assert_eq!(heartbeat_response.sequence, sequence);
    }

    peer_service.shutdown.cancel();
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), peer_service.serve_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn hello_from_another_cluster_is_refused_over_grpc() {
    let peer_service = start_peer_service(1).await;
    let mut client = connect(peer_service.addr).await;
    let mut hello = hello_for_test();
    hello.cluster_name = "someone-else".to_owned();
    let status = client.hello(hello).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("someone-else"),
        "{}",
        status.message()
    );
    peer_service.shutdown.cancel();
}

#[tokio::test]
async fn takeover_is_unimplemented_for_now() {
    let peer_service = start_peer_service(1).await;
    let mut client = connect(peer_service.addr).await;
    let status = client
        .takeover_session(TakeoverRequest {
            client_id: "sensor-1".to_owned(),
            requesting_node_id: "starling-test-1".to_owned(),
            fencing_epoch: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains("TakeoverSession"));
    peer_service.shutdown.cancel();
}

#[tokio::test]
async fn cancelling_shutdown_stops_serving_and_closes_the_listener() {
    let peer_service = start_peer_service(1).await;
    peer_service.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), peer_service.serve_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let connect_result = tokio::net::TcpStream::connect(peer_service.addr).await;
    assert!(connect_result.is_err());
}
