//! Peer discovery from a DNS name.
//!
//! In Kubernetes the seed name is a headless service (`clusterIP: None`) with
//! `publishNotReadyAddresses: true`, so it resolves to the pod IP of every node, including
//! nodes that are still starting. Resolution includes this node itself, which is removed by
//! comparing against the addresses the advertise address resolves to.

use std::{io, net::SocketAddr};

use crate::ClusterConfig;

/// Why peer discovery failed; the caller retries on its next discovery round.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The seed DNS name is empty, so there is nothing to resolve.
    #[error("seed dns name is empty")]
    EmptySeedDnsName,
    /// The seed DNS name did not resolve.
    #[error("failed to resolve seed dns name `{seed_dns_name}`")]
    ResolveSeed {
        /// The name that failed to resolve.
        seed_dns_name: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// This node's own advertise address did not resolve, so it cannot be excluded.
    #[error("failed to resolve advertise address `{advertise_addr}`")]
    ResolveAdvertiseAddr {
        /// The advertise address that failed to resolve.
        advertise_addr: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

/// Resolves the peer-service addresses of the other nodes of the cluster.
///
/// The result excludes this node, has no duplicates and is sorted, so two rounds with the same
/// membership compare equal. Each lookup may take as long as the system resolver's timeout;
/// callers that need a bound wrap the call in `tokio::time::timeout`.
///
/// # Errors
/// Returns a [`DiscoveryError`] when the seed name is empty or either name does not resolve.
pub async fn discover_peers(config: &ClusterConfig) -> Result<Vec<SocketAddr>, DiscoveryError> {
    if config.seed_dns_name.is_empty() {
        return Err(DiscoveryError::EmptySeedDnsName);
    }
    let seed_addrs: Vec<SocketAddr> =
        match tokio::net::lookup_host((config.seed_dns_name.as_str(), config.peer_port)).await {
            Ok(addrs) => addrs.collect(),
            Err(source) => {
                return Err(DiscoveryError::ResolveSeed {
                    seed_dns_name: config.seed_dns_name.clone(),
                    source,
                })
            }
        };
    let self_addrs: Vec<SocketAddr> =
        match tokio::net::lookup_host(config.advertise_addr.as_str()).await {
            Ok(addrs) => addrs.collect(),
            Err(source) => {
                return Err(DiscoveryError::ResolveAdvertiseAddr {
                    advertise_addr: config.advertise_addr.clone(),
                    source,
                })
            }
        };
    let peer_addrs = select_peers(seed_addrs, &self_addrs);
    tracing::debug!(
        seed_dns_name = %config.seed_dns_name,
        num_peers = peer_addrs.len(),
        "resolved cluster peers"
    );
    Ok(peer_addrs)
}

/// Removes this node's own addresses from `resolved_addrs`, then sorts and deduplicates them.
pub fn select_peers(
    resolved_addrs: impl IntoIterator<Item = SocketAddr>,
    self_addrs: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut peer_addrs: Vec<SocketAddr> = resolved_addrs
        .into_iter()
        .filter(|addr| !self_addrs.contains(addr))
        .collect();
    peer_addrs.sort_unstable();
    peer_addrs.dedup();
    peer_addrs
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn select_peers_excludes_self_and_sorts_and_deduplicates() {
        let resolved_addrs = [
            addr("10.0.0.3:7946"),
            addr("10.0.0.1:7946"),
            addr("10.0.0.2:7946"),
            addr("10.0.0.3:7946"),
            addr("[fd00::1]:7946"),
        ];
        let peer_addrs = select_peers(resolved_addrs, &[addr("10.0.0.2:7946")]);
        assert_eq!(
            peer_addrs,
            [
                addr("10.0.0.1:7946"),
                addr("10.0.0.3:7946"),
                addr("[fd00::1]:7946")
            ]
        );
    }

    #[test]
    fn select_peers_keeps_same_ip_on_another_port() {
        let peer_addrs = select_peers([addr("10.0.0.1:7947")], &[addr("10.0.0.1:7946")]);
        assert_eq!(peer_addrs, [addr("10.0.0.1:7947")]);
    }

    #[test]
    fn select_peers_of_a_lone_node_is_empty() {
        let self_addr = addr("10.0.0.1:7946");
        assert!(select_peers([self_addr, self_addr], &[self_addr]).is_empty());
    }

    #[tokio::test]
    async fn discover_peers_resolves_seed_name_and_excludes_self() {
        // `localhost` resolves from /etc/hosts, so this test sends no DNS query.
        let mut config = ClusterConfig::for_test();
        config.seed_dns_name = "localhost".to_owned();
        config.peer_port = 7946;
        config.advertise_addr = "127.0.0.1:7946".to_owned();
        let peer_addrs = discover_peers(&config).await.unwrap();
        assert!(!peer_addrs.contains(&addr("127.0.0.1:7946")));
        assert!(peer_addrs.windows(2).all(|pair| pair[0] < pair[1]));

        config.advertise_addr = "127.0.0.1:7000".to_owned();
        let peer_addrs = discover_peers(&config).await.unwrap();
        assert!(peer_addrs.contains(&addr("127.0.0.1:7946")));
    }

    #[tokio::test]
    async fn discover_peers_rejects_empty_seed_name() {
        let mut config = ClusterConfig::for_test();
        config.seed_dns_name = String::new();
        let error = discover_peers(&config).await.unwrap_err();
        assert!(matches!(error, DiscoveryError::EmptySeedDnsName));
    }
}
