//! Counters of authentication attempts, authorization denials and exceeded per-client limits
//! (bounded labels).

use metrics::{counter, Counter};

use crate::codec::ReasonCode;

/// How a client authenticated (or tried to): the `method` label of
/// `starling_auth_attempts_total`, and [`Principal::method`](super::Principal::method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No credentials (or a user name no configured method verifies), and clients of a broker
    /// without a provider.
    Anonymous,
    /// A user name and password from the password file (argon2).
    Password,
    /// A JWT in the password field.
    Jwt,
    /// The HTTP authentication hook.
    Http,
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256 (CONNECT and re-authentication).
    Scram,
    /// Another MQTT 5 Authentication Method (refused with 0x8C).
    Enhanced,
    /// A verified client certificate (mutual TLS).
    Certificate,
}

impl AuthMethod {
    /// Every method, in label order.
    pub const ALL: [AuthMethod; 7] = [
        AuthMethod::Anonymous,
        AuthMethod::Password,
        AuthMethod::Jwt,
        AuthMethod::Http,
        AuthMethod::Scram,
        AuthMethod::Enhanced,
        AuthMethod::Certificate,
    ];

    /// Returns the label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Password => "password",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Http => "http",
            AuthMethod::Scram => "scram",
            AuthMethod::Enhanced => "enhanced",
            AuthMethod::Certificate => "certificate",
        }
    }
}

/// How an authentication attempt ended: the `result` label of `starling_auth_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// Accepted (CONNACK 0x00, AUTH 0x00 after a re-authentication).
    Success,
    /// 0x86 Bad user name or password.
    BadCredentials,
    /// 0x87 Not authorized (anonymous access disabled, a will topic the ACL denies, a failed
    /// re-authentication), 0x8C Bad authentication method, and other refusals.
    NotAuthorized,
    /// 0x8A Banned.
    Banned,
    /// 0x88 Server unavailable or 0x89 Server busy: the backend (the HTTP hook) failed.
    Unavailable,
    /// An enhanced authentication that ended without a decision: the client closed, timed out
    /// or broke the AUTH exchange (0x82 Protocol error).
    Aborted,
}

impl AuthResult {
    /// Every result, in label order.
    pub const ALL: [AuthResult; 6] = [
        AuthResult::Success,
        AuthResult::BadCredentials,
        AuthResult::NotAuthorized,
        AuthResult::Banned,
        AuthResult::Unavailable,
        AuthResult::Aborted,
    ];

    /// Returns the label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthResult::Success => "success",
            AuthResult::BadCredentials => "bad_credentials",
            AuthResult::NotAuthorized => "not_authorized",
            AuthResult::Banned => "banned",
            AuthResult::Unavailable => "unavailable",
            AuthResult::Aborted => "aborted",
        }
    }

    /// Returns the result of a refusal with `reason_code` (the one table from reason codes).
    pub fn of_refusal(reason_code: ReasonCode) -> AuthResult {
        match reason_code {
            ReasonCode::BadUserNameOrPassword => AuthResult::BadCredentials,
            ReasonCode::Banned => AuthResult::Banned,
            ReasonCode::ServerUnavailable | ReasonCode::ServerBusy => AuthResult::Unavailable,
            // The client broke the AUTH exchange.
            ReasonCode::ProtocolError => AuthResult::Aborted,
            _ => AuthResult::NotAuthorized,
        }
    }
}

/// `starling_auth_attempts_total{method,result}`: every CONNECT and every re-authentication,
/// counted once when it ends, with or without a provider. Every series exists from the start.
#[derive(Clone)]
pub struct AuthAttempts {
    counters: [[Counter; AuthResult::ALL.len()]; AuthMethod::ALL.len()],
}

impl AuthAttempts {
    /// Registers every series with the installed recorder (rendered at 0 until counted).
    pub fn register() -> AuthAttempts {
        AuthAttempts {
            counters: AuthMethod::ALL.map(|method| {
                AuthResult::ALL.map(|result| {
                    counter!(
                        "starling_auth_attempts_total",
                        "method" => method.label(),
                        "result" => result.label()
                    )
                })
            }),
        }
    }

    /// Counts one attempt that ended.
    pub fn count(&self, method: AuthMethod, result: AuthResult) {
        self.counters[method as usize][result as usize].increment(1);
    }
}

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
    fn methods_and_results_index_their_counters_in_label_order() {
        for (idx, method) in AuthMethod::ALL.iter().enumerate() {
            assert_eq!(*method as usize, idx, "{}", method.label());
        }
        for (idx, result) in AuthResult::ALL.iter().enumerate() {
            assert_eq!(*result as usize, idx, "{}", result.label());
        }
        assert_eq!(
            AuthResult::of_refusal(ReasonCode::BadAuthenticationMethod),
            AuthResult::NotAuthorized
        );
        assert_eq!(
            AuthResult::of_refusal(ReasonCode::ServerUnavailable),
            AuthResult::Unavailable
        );
    }

    #[test]
    fn limit_kinds_index_their_counters_in_label_order() {
        for (idx, kind) in LimitKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, idx, "{}", kind.label());
        }
    }
}
