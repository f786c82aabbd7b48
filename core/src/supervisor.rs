//! The root supervisor of one broker's actors (topic shards and session-registry shards).
//!
//! Policy: a shard actor ends only on a broken invariant or a panic, and its state (routes,
//! session timers) cannot be trusted afterwards. The supervisor therefore does not restart it in
//! place: it logs the failure, counts it in `starling_actor_failures_total` and raises the
//! broker's fatal signal, on which the node shuts down and exits non-zero so that the process
//! supervisor (Kubernetes, systemd) restarts it cleanly. Clients reconnect; persistent sessions
//! come back from the store.

use metrics::counter;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio_util::sync::CancellationToken;

/// The supervisor actor; its children are linked to it with `spawn_linked`.
pub(crate) struct BrokerSupervisor {
    /// Cancelled when a child fails; watched by the node.
    pub(crate) fatal: CancellationToken,
}

/// The supervisor takes no messages of its own; it only receives supervision events.
pub(crate) enum SupervisorMessage {}

impl Actor for BrokerSupervisor {
    type Msg = SupervisorMessage;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor_id = %cell.get_id(), %error, "shard actor failed; shutting the node down");
                counter!("starling_actor_failures_total").increment(1);
                self.fatal.cancel();
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Shards never stop on their own while the broker runs.
                tracing::error!(actor_id = %cell.get_id(), ?reason, "shard actor stopped; shutting the node down");
                counter!("starling_actor_failures_total").increment(1);
                self.fatal.cancel();
            }
            _ => {}
        }
        Ok(())
    }
}
