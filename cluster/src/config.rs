//! Plain cluster settings, built and validated by `starling-node` and handed to this crate.

/// Settings of this node's cluster membership.
///
/// The node owns the defaults and reads them from its configuration file and environment;
/// this crate only receives the result. There is deliberately no `Default` implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Stable identifier of this node, unique in the cluster (the pod name in Kubernetes).
    pub node_id: String,
    /// Name of the cluster; peers with another name are refused in `Hello`.
    pub cluster_name: String,
    /// Address, as `host:port`, on which peers reach this node's peer service.
    pub advertise_addr: String,
    /// DNS name that resolves to the addresses of all nodes, e.g. a Kubernetes headless service
    /// `starling-peers.starling.svc.cluster.local`.
    pub seed_dns_name: String,
    /// Port of the peer service on every node; combined with each address the seed name resolves to.
    pub peer_port: u16,
}

impl ClusterConfig {
    /// Returns a configuration for a single node on the loopback interface.
    #[cfg(any(test, feature = "testsuite"))]
    pub fn for_test() -> ClusterConfig {
        ClusterConfig {
            node_id: "starling-test-0".to_owned(),
            cluster_name: "starling-test".to_owned(),
            advertise_addr: "127.0.0.1:7946".to_owned(),
            seed_dns_name: "localhost".to_owned(),
            peer_port: 7946,
        }
    }
}
