//! The interface each bridge kind implements to write messages to its external system.

use std::future::Future;

use starling_core::codec::Publish;

/// Why a sink did not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The external system is unreachable or overloaded; the same batch is retried after a backoff.
    #[error("transient sink failure: {reason}")]
    Transient {
        /// What went wrong, for the log.
        reason: String,
    },
    /// The external system refused the batch for good; it is dropped and counted.
    #[error("sink rejected the batch: {reason}")]
    Rejected {
        /// What went wrong, for the log.
        reason: String,
    },
}

/// Writes batches of messages to an external system (a Kafka topic, an HTTP endpoint, ...).
///
/// The bridge actor owns its sink and calls it with one batch at a time, in buffer order.
pub trait BridgeSink: Send + 'static {
    /// Sends `batch` as a whole, in order.
    ///
    /// After an error the actor calls again with the same batch, so a sink that may have
    /// written part of it should deduplicate or accept duplicates (at-least-once delivery).
    ///
    /// # Errors
    /// Returns [`SinkError::Transient`] to have the batch retried, [`SinkError::Rejected`] to
    /// have it dropped.
    fn send_batch(
        &mut self,
        batch: &[Publish],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}
