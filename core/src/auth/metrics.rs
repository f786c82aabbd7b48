//! Counters of authorization denials and exceeded per-client limits (bounded labels).

use metrics::{counter, Counter};

/// What an ACL denied: the `action` label of `starling_acl_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    /// A PUBLISH (or a will at CONNECT).
    Publish,
    /// A SUBSCRIBE filter.
    Subscribe,
    /// A delivery (or a retained message) through a partly granted subscription.
    Read,
}

/// Which limit a client hit: the `limit` label of `starling_limits_exceeded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Publish message rate (token bucket).
    PublishRate,
    /// Publish byte rate (token bucket).
    PublishBytes,
    /// `mqtt.max_subscriptions_per_session` (SUBACK 0x97).
    Subscriptions,
    /// `mqtt.max_packet_size_bytes` (DISCONNECT 0x95).
    PacketSize,
    /// `mqtt.max_topic_levels` (DISCONNECT 0x90 or SUBACK 0x8F).
    TopicLevels,
    /// `mqtt.receive_maximum` (DISCONNECT 0x93).
    ReceiveMaximum,
    /// `mqtt.topic_alias_maximum` (DISCONNECT 0x94).
    TopicAlias,
}

impl LimitKind {
    /// Every kind, in label order.
    pub const ALL: [LimitKind; 7] = [
        LimitKind::PublishRate,
        LimitKind::PublishBytes,
        LimitKind::Subscriptions,
        LimitKind::PacketSize,
        LimitKind::TopicLevels,
        LimitKind::ReceiveMaximum,
        LimitKind::TopicAlias,
    ];

    /// Returns the label value.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::PublishRate => "publish_rate",
            LimitKind::PublishBytes => "publish_bytes",
            LimitKind::Subscriptions => "subscriptions",
            LimitKind::PacketSize => "packet_size",
            LimitKind::TopicLevels => "topic_levels",
            LimitKind::ReceiveMaximum => "receive_maximum",
            LimitKind::TopicAlias => "topic_alias",
        }
    }
}

/// `starling_acl_denied_total{action}` and `starling_limits_exceeded_total{limit}`.
#[derive(Clone)]
pub struct SecurityMetrics {
    acl_denied: [Counter; 3],
    limits_exceeded: [Counter; LimitKind::ALL.len()],
}

impl SecurityMetrics {
    /// Registers every series (at 0) with the installed recorder.
    pub fn register() -> SecurityMetrics {
        let denied =
            |action: &'static str| counter!("starling_acl_denied_total", "action" => action);
        SecurityMetrics {
            acl_denied: [denied("publish"), denied("subscribe"), denied("read")],
            limits_exceeded: LimitKind::ALL
                .map(|kind| counter!("starling_limits_exceeded_total", "limit" => kind.label())),
        }
    }

    /// Counts one denial.
    pub fn acl_denied(&self, action: AclAction) {
        self.acl_denied[action as usize].increment(1);
    }

    /// Counts one exceeded limit.
    pub fn limit_exceeded(&self, kind: LimitKind) {
        self.limits_exceeded[kind as usize].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_kinds_index_their_counters_in_label_order() {
        for (idx, kind) in LimitKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, idx, "{}", kind.label());
        }
    }
}
