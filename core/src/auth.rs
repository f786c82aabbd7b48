//! The authentication and authorization hook of the broker.
//!
//! The core knows no password file, token format or HTTP service: it asks an [`AuthProvider`]
//! (held by the broker as an `Option<Arc<dyn AuthProvider>>`, none by default) at these points:
//!
//! - CONNECT: [`AuthProvider::authenticate`] returns a [`Principal`], a refusal reason code, or
//!   the first step of an MQTT 5 enhanced authentication ([`AuthExchange`], AUTH packets).
//! - AUTH 0x19 after CONNECT: [`AuthProvider::reauthenticate`] (same exchange mechanism).
//! - PUBLISH, SUBSCRIBE (and the will at CONNECT): `authorize_publish` / `authorize_subscribe`.
//! - Delivery of a message through a subscription the provider granted only in part (a wildcard
//!   reaching both allowed and forbidden topics) and retained messages sent on such a
//!   subscription: `authorize_read`.
//!
//! Per connection the core keeps one `Option<Box<ConnectionAuth>>`: `None` (8 bytes, no
//! allocation) without a provider; with one, the shared [`Principal`], the publish rate bucket
//! and an enhanced re-authentication in progress.

mod bucket;
mod metrics;

use std::{any::Any, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::SystemTime};

use bytes::Bytes;
use bytestring::ByteString;

use crate::{
    codec::{ProtocolVersion, QoS, ReasonCode},
    session::SessionHandle,
    transport::{ListenerId, PeerCertificate},
};

pub use bucket::{Exceeded, RateLimitAction, RateLimits, TokenBucket};
pub use metrics::{AclAction, AuthAttempts, AuthMethod, AuthResult, LimitKind, SecurityMetrics};

/// The authenticated identity of one connection, built by the provider at CONNECT and shared
/// (read-only) between the connection task and the provider.
#[derive(Debug)]
pub struct Principal {
    /// Unique per authentication (a re-authentication makes a new principal).
    pub id: u64,
    /// Client identifier of the connection.
    pub client_id: ByteString,
    /// The authenticated user name, if any.
    pub username: Option<ByteString>,
    /// How the client was authenticated.
    pub method: AuthMethod,
    /// The MQTT 5 Authentication Method of an enhanced authentication; re-authentication must
    /// use the same one [MQTT-4.12.1-1].
    pub enhanced_method: Option<ByteString>,
    /// Remote address.
    pub peer: SocketAddr,
    /// Listener the connection arrived on.
    pub listener: ListenerId,
    /// Verified client certificate (mutual TLS).
    pub certificate: Option<PeerCertificate>,
    /// When the credentials expire (a token's `exp`): the provider closes the connection then.
    pub expires_at: Option<SystemTime>,
    /// Per-client publish limits; `None` leaves publishing unlimited.
    pub rate_limits: Option<RateLimits>,
    /// The provider's policy generation when this principal was made (see
    /// [`AuthProvider::policy_generation`]).
    pub policy_generation: u64,
    /// Whether any ACL applies to this principal: `false` lets the connection skip every check.
    pub restricted: bool,
    /// Provider data (for example the topic permissions a token carries).
    pub attributes: Option<Arc<dyn Any + Send + Sync>>,
}

/// What a CONNECT presents to the provider.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// Client identifier (assigned by the broker if the client sent none).
    pub client_id: &'a str,
    /// User Name field, or the verified certificate's identity when the listener takes the user
    /// name from the certificate (see `username_from_certificate`).
    pub username: Option<&'a str>,
    /// The user name is the identity of the verified client certificate, because the listener's
    /// `CertIdentityPolicy` says so (`cert_identity = "username"` or `"both"`): the certificate
    /// has authenticated it, no password is needed, and the CONNECT user name was ignored.
    pub username_from_certificate: bool,
    /// Password field.
    pub password: Option<&'a [u8]>,
    /// MQTT 5 Authentication Method.
    pub method: Option<&'a str>,
    /// MQTT 5 Authentication Data.
    pub data: Option<&'a [u8]>,
    /// Remote address.
    pub peer: SocketAddr,
    /// Listener id and name.
    pub listener: ListenerId,
    /// Name of the listener.
    pub listener_name: &'a str,
    /// Verified client certificate (mutual TLS).
    pub certificate: Option<&'a PeerCertificate>,
    /// Protocol version.
    pub protocol: ProtocolVersion,
}

/// The outcome of one authentication step.
pub enum AuthDecision {
    /// Accepted; `data` is the final Authentication Data for CONNACK or AUTH 0x00.
    Accept {
        /// The authenticated identity.
        principal: Box<Principal>,
        /// Final server data of an enhanced authentication (SCRAM's server signature).
        data: Option<Bytes>,
    },
    /// Enhanced authentication continues: send AUTH 0x18 with `data`, feed the client's next
    /// AUTH to `exchange`.
    Continue {
        /// The method of the exchange (counted if the exchange ends without a decision).
        method: AuthMethod,
        /// Server data of this step.
        data: Bytes,
        /// The exchange waiting for the client's answer.
        exchange: Box<dyn AuthExchange>,
    },
    /// Refused by `method` with this reason code (0x86, 0x87, 0x8A, 0x8C, 0x88, ...) and
    /// reason string.
    Refuse(AuthMethod, ReasonCode, &'static str),
}

impl std::fmt::Debug for AuthDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthDecision::Accept { principal, .. } => {
                f.debug_tuple("Accept").field(&principal.id).finish()
            }
            AuthDecision::Continue { .. } => f.write_str("Continue"),
            AuthDecision::Refuse(method, code, reason) => f
                .debug_tuple("Refuse")
                .field(method)
                .field(code)
                .field(reason)
                .finish(),
        }
    }
}

/// One enhanced authentication in progress (for example SCRAM's server state between its
/// two messages). Steps are synchronous: they run on the connection task.
pub trait AuthExchange: Send + Sync {
    /// Takes the client's next Authentication Data.
    fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthDecision;
}

/// How a subscription may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Refused: SUBACK 0x87 (MQTT 5) or 0x80 (3.1.1).
    Deny,
    /// Granted at most at `max_qos`. `partial`: the filter reaches topics the principal may not
    /// read, so each delivery through it is checked with [`AuthProvider::authorize_read`].
    Allow {
        /// Highest QoS granted.
        max_qos: QoS,
        /// Whether deliveries must be checked one by one.
        partial: bool,
    },
}

/// A future returned by [`AuthProvider::authenticate`].
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = AuthDecision> + Send + 'a>>;

/// Authentication and authorization decisions, implemented outside the core.
pub trait AuthProvider: Send + Sync + 'static {
    /// Decides a CONNECT (may call out, e.g. to an HTTP service).
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest<'a>) -> AuthFuture<'a>;

    /// Starts a re-authentication (AUTH 0x19) of a connected client; `method` is the one the
    /// client authenticated with at CONNECT.
    fn reauthenticate(
        &self,
        principal: &Arc<Principal>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        let _ = (method, data);
        AuthDecision::Refuse(
            principal.method,
            ReasonCode::BadAuthenticationMethod,
            "re-authentication not supported",
        )
    }

    /// A connection runs `session` as `principal` (after CONNACK or a re-authentication).
    fn connected(&self, principal: &Arc<Principal>, session: &SessionHandle) {
        let _ = (principal, session);
    }

    /// The connection of `principal` closes (or re-authenticated as another principal).
    fn disconnected(&self, principal: &Arc<Principal>) {
        let _ = principal;
    }

    /// May `principal` publish to `topic` at `qos`, with `retain`?
    fn authorize_publish(&self, principal: &Principal, topic: &str, qos: QoS, retain: bool)
        -> bool;

    /// May `principal` subscribe to `filter` (without any `$share/group/` prefix)?
    fn authorize_subscribe(
        &self,
        principal: &Principal,
        filter: &str,
        share_group: Option<&str>,
    ) -> SubscribeDecision;

    /// May `principal` receive a message published to `topic`?
    fn authorize_read(&self, principal: &Principal, topic: &str) -> bool;

    /// Bumped whenever the rules change (ACL file reloaded): connections whose principal was
    /// made under another generation check every delivery.
    fn policy_generation(&self) -> u64 {
        0
    }
}

/// The provider as the broker holds it (cheap to clone, `Debug` for [`crate::BrokerConfig`]).
#[derive(Clone)]
pub struct AuthHook(pub Arc<dyn AuthProvider>);

impl std::fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthHook")
    }
}

/// Authentication state of one connection (boxed, only with a provider).
pub(crate) struct ConnectionAuth {
    pub(crate) principal: Arc<Principal>,
    /// A subscription was granted in part (or resumed under changed rules): check deliveries.
    pub(crate) read_check: bool,
    pub(crate) bucket: Option<TokenBucket>,
    /// An enhanced re-authentication waiting for the client's next AUTH.
    pub(crate) exchange: Option<Box<dyn AuthExchange>>,
}

impl ConnectionAuth {
    pub(crate) fn new(principal: Box<Principal>) -> ConnectionAuth {
        let bucket = principal.rate_limits.map(TokenBucket::new);
        ConnectionAuth {
            principal: Arc::new(*principal),
            read_check: false,
            bucket,
            exchange: None,
        }
    }

    /// Whether publishes and subscriptions must be checked: the principal is under an ACL,
    /// or the rules changed since it was made.
    pub(crate) fn must_check(&self, provider: &dyn AuthProvider) -> bool {
        self.principal.restricted
            || self.principal.policy_generation != provider.policy_generation()
    }

    /// Whether deliveries must be checked one by one.
    pub(crate) fn must_check_reads(&self, provider: &dyn AuthProvider) -> bool {
        (self.principal.restricted && self.read_check)
            || self.principal.policy_generation != provider.policy_generation()
    }
}
