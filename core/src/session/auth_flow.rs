//! Where a connection meets the [`AuthProvider`](crate::auth::AuthProvider): authentication
//! at CONNECT (with the AUTH exchange of MQTT 5 enhanced authentication), re-authentication,
//! and the publish, subscribe and delivery checks. Every check is skipped at the cost of one
//! branch when the broker has no provider.

use std::{io, sync::Arc};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::time::Instant;

use crate::{
    auth::{
        AclAction, AuthDecision, AuthMethod, AuthResult, ConnectRequest, ConnectionAuth, Exceeded,
        LimitKind, RateLimitAction, SubscribeDecision,
    },
    broker::Broker,
    codec::{
        decode_packet, Auth, AuthProperties, Connect, Packet, ProtocolVersion, Publish, QoS,
        ReasonCode,
    },
    session::connection::{refuse, write_all, Blocked, Close, Connection},
    topic::TopicFilter,
    transport::{ListenerId, Transport},
};

/// What authentication at CONNECT produced.
#[derive(Default)]
pub(super) struct Authenticated {
    /// The connection's authentication state (`None` without a provider).
    pub(super) auth: Option<Box<ConnectionAuth>>,
    /// Authentication Method and final data for CONNACK (enhanced authentication).
    pub(super) method: Option<ByteString>,
    pub(super) data: Option<Bytes>,
}

/// How authentication at CONNECT ended, before it is counted and answered.
enum ConnectOutcome {
    Accepted(AuthMethod, Authenticated),
    /// Refused with this CONNACK.
    Refused(AuthMethod, ReasonCode, &'static str),
    /// The AUTH exchange ended without a decision (closed, timed out): no CONNACK.
    Aborted(AuthMethod),
}

/// A CONNECT being authenticated, with where it came from.
pub(super) struct ConnectAttempt<'a, T> {
    pub(super) broker: &'a Broker,
    pub(super) transport: &'a T,
    pub(super) peer: std::net::SocketAddr,
    pub(super) listener: ListenerId,
    pub(super) connect: &'a Connect,
    pub(super) client_id: &'a str,
}

/// Authenticates a CONNECT; on refusal the CONNACK is sent, the socket closed and `None`
/// returned. This is the one place a CONNECT's attempt is counted in
/// `starling_auth_attempts_total`, with a provider or without.
pub(super) async fn authenticate_connect<T: Transport>(
    attempt: &ConnectAttempt<'_, T>,
    rbuf: &mut BytesMut,
) -> Option<Authenticated> {
    let &ConnectAttempt {
        broker,
        transport,
        connect,
        ..
    } = attempt;
    let outcome = decide_connect(attempt, rbuf).await;
    let attempts = &broker.inner.metrics.auth;
    match outcome {
        ConnectOutcome::Accepted(method, authenticated) => {
            attempts.count(method, AuthResult::Success);
            Some(authenticated)
        }
        ConnectOutcome::Refused(method, reason_code, reason) => {
            attempts.count(method, AuthResult::of_refusal(reason_code));
            refuse(transport, connect.protocol, reason_code, reason).await;
            None
        }
        ConnectOutcome::Aborted(method) => {
            attempts.count(method, AuthResult::Aborted);
            None
        }
    }
}

async fn decide_connect<T: Transport>(
    attempt: &ConnectAttempt<'_, T>,
    rbuf: &mut BytesMut,
) -> ConnectOutcome {
    let &ConnectAttempt {
        broker,
        transport,
        peer,
        listener,
        connect,
        client_id,
    } = attempt;
    let version = connect.protocol;
    let limits = &broker.inner.limits;
    let Some(provider) = broker.inner.auth.clone() else {
        // [MQTT-4.12.0-1] no authentication method without a provider.
        if connect.properties.authentication_method.is_some() {
            return ConnectOutcome::Refused(
                AuthMethod::Enhanced,
                ReasonCode::BadAuthenticationMethod,
                "authentication method not supported",
            );
        }
        if !limits.allow_anonymous && connect.username.is_none() {
            return ConnectOutcome::Refused(
                AuthMethod::Anonymous,
                ReasonCode::NotAuthorized,
                "anonymous access is disabled",
            );
        }
        // Without a provider nothing is verified: every client is anonymous.
        return ConnectOutcome::Accepted(AuthMethod::Anonymous, Authenticated::default());
    };
    let listener_name = broker.listener_name(listener);
    let method = connect.properties.authentication_method.clone();
    // A listener may take the username from the verified client certificate.
    let certificate_username = broker
        .listener_cert_identity(listener)
        .username(transport.peer_certificate());
    let request = ConnectRequest {
        client_id,
        username: certificate_username.or(connect.username.as_deref()),
        username_from_certificate: certificate_username.is_some(),
        password: connect.password.as_deref(),
        method: method.as_deref(),
        data: connect.properties.authentication_data.as_deref(),
        peer,
        listener,
        listener_name: &listener_name,
        certificate: transport.peer_certificate(),
        protocol: version,
    };
    let mut decision = provider.authenticate(&request).await;
    loop {
        match decision {
            AuthDecision::Accept { principal, data } => {
                if let Some(will) = &connect.last_will {
                    let allowed = !principal.restricted
                        || provider.authorize_publish(
                            &principal,
                            &will.topic,
                            will.qos,
                            will.retain,
                        );
                    if !allowed {
                        broker.inner.metrics.security.acl_denied(AclAction::Publish);
                        return ConnectOutcome::Refused(
                            principal.method,
                            ReasonCode::NotAuthorized,
                            "will topic not authorized",
                        );
                    }
                }
                return ConnectOutcome::Accepted(
                    principal.method,
                    Authenticated {
                        auth: Some(Box::new(ConnectionAuth::new(principal))),
                        method: if data.is_some() || method.is_some() {
                            method
                        } else {
                            None
                        },
                        data,
                    },
                );
            }
            AuthDecision::Refuse(auth_method, reason_code, reason) => {
                return ConnectOutcome::Refused(auth_method, reason_code, reason);
            }
            AuthDecision::Continue {
                method: auth_method,
                data,
                exchange,
            } => {
                let Some(method) = method.clone().filter(|_| version.is_v5()) else {
                    return ConnectOutcome::Refused(
                        auth_method,
                        ReasonCode::BadAuthenticationMethod,
                        "authentication method not supported",
                    );
                };
                let auth = Packet::Auth(Auth {
                    reason_code: ReasonCode::ContinueAuthentication,
                    properties: AuthProperties {
                        authentication_method: Some(method.clone()),
                        authentication_data: Some(data),
                        ..AuthProperties::default()
                    },
                });
                let mut out = BytesMut::new();
                auth.encode(version, &mut out);
                if write_all(transport, &out).await.is_err() {
                    return ConnectOutcome::Aborted(auth_method);
                }
                let reply = tokio::time::timeout(
                    limits.connect_timeout,
                    read_auth(transport, rbuf, limits.max_packet_size as usize, version),
                )
                .await;
                let answer = match reply {
                    Ok(Ok(Some(Packet::Auth(answer)))) => answer,
                    Ok(Ok(_)) => {
                        return ConnectOutcome::Refused(
                            auth_method,
                            ReasonCode::ProtocolError,
                            "expected AUTH during authentication",
                        );
                    }
                    Ok(Err(_)) | Err(_) => return ConnectOutcome::Aborted(auth_method),
                };
                if answer.reason_code != ReasonCode::ContinueAuthentication
                    || answer.properties.authentication_method.as_deref() != Some(&*method)
                {
                    return ConnectOutcome::Refused(
                        auth_method,
                        ReasonCode::ProtocolError,
                        "AUTH must continue with the same method",
                    );
                }
                decision = exchange.step(answer.properties.authentication_data.as_deref());
            }
        }
    }
}

/// Reads the next packet after CONNECT (during an AUTH exchange); `Ok(None)` at EOF.
async fn read_auth<T: Transport>(
    transport: &T,
    rbuf: &mut BytesMut,
    max_packet_size: usize,
    version: ProtocolVersion,
) -> io::Result<Option<Packet>> {
    loop {
        match decode_packet(rbuf, max_packet_size, Some(version)) {
            Ok(Some(packet)) => return Ok(Some(packet)),
            Ok(None) => {}
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
        transport.readable().await?;
        rbuf.reserve(512);
        match transport.try_read_buf(rbuf) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

/// The outcome of the checks on an inbound PUBLISH.
pub(super) enum PublishCheck {
    /// Route it.
    Allow,
    /// Not authorized: acknowledge with this code (QoS 1/2) and drop it.
    Deny(ReasonCode),
}

impl<T: Transport> Connection<T> {
    /// Tells the provider the connection runs its session, and re-checks the subscriptions of
    /// a resumed session against the principal: a forbidden one is removed, a partly allowed
    /// one makes every delivery checked.
    pub(super) fn auth_attached(&mut self) {
        let (Some(auth), Some(provider)) = (self.auth.as_mut(), self.broker.inner.auth.as_ref())
        else {
            return;
        };
        provider.connected(&auth.principal, &self.handle);
        if self.state.subscriptions.is_empty() || !auth.must_check(provider.as_ref()) {
            return;
        }
        let mut removed = Vec::new();
        let principal = auth.principal.clone();
        self.state.subscriptions.retain(|subscription| {
            let filter = subscription.filter();
            match provider.authorize_subscribe(
                &principal,
                &filter.filter,
                filter.share_group.as_deref(),
            ) {
                SubscribeDecision::Deny => {
                    removed.push(filter);
                    false
                }
                SubscribeDecision::Allow { partial, .. } => {
                    auth.read_check |= partial;
                    true
                }
            }
        });
        for filter in removed {
            tracing::info!(client_id = %self.handle.client_id(), filter = %filter.filter, "resumed subscription not authorized; removed");
            self.broker
                .inner
                .metrics
                .security
                .acl_denied(AclAction::Subscribe);
            self.broker.inner.router.unsubscribe(self.state.id, &filter);
        }
    }

    /// Tells the provider the connection closes (a re-authentication still waiting for the
    /// client's AUTH counts as aborted).
    pub(super) fn auth_detached(&mut self) {
        if let (Some(auth), Some(provider)) = (self.auth.as_ref(), self.broker.inner.auth.as_ref())
        {
            if auth.exchange.is_some() {
                self.broker
                    .inner
                    .metrics
                    .auth
                    .count(auth.principal.method, AuthResult::Aborted);
            }
            provider.disconnected(&auth.principal);
        }
    }

    /// Checks an inbound PUBLISH (topic alias already resolved): the ACL, then the rate
    /// limits. Throttling pauses reading after this packet; the disconnect action closes.
    pub(super) fn check_publish(&mut self, publish: &Publish) -> Result<PublishCheck, Close> {
        let (Some(auth), Some(provider)) = (self.auth.as_mut(), self.broker.inner.auth.as_ref())
        else {
            return Ok(PublishCheck::Allow);
        };
        let metrics = &self.broker.inner.metrics;
        if auth.must_check(provider.as_ref())
            && !provider.authorize_publish(
                &auth.principal,
                &publish.topic,
                publish.qos,
                publish.retain,
            )
        {
            metrics.security.acl_denied(AclAction::Publish);
            metrics.dropped_not_authorized.increment(1);
            tracing::debug!(client_id = %self.handle.client_id(), topic = %publish.topic, "publish not authorized");
            // MQTT 3.1.1 has no negative acknowledgement [MQTT-3.3.5-2]: acknowledge and drop.
            let reason_code = if self.version.is_v5() {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::Success
            };
            return Ok(PublishCheck::Deny(reason_code));
        }
        if let Some(bucket) = auth.bucket.as_mut() {
            let size = publish.payload.len() + publish.topic.len();
            let now = Instant::now();
            if let Some((exceeded, wait)) = bucket.take(size, now) {
                metrics.security.limit_exceeded(match exceeded {
                    Exceeded::Messages => LimitKind::PublishRate,
                    Exceeded::Bytes => LimitKind::PublishBytes,
                });
                match bucket.limits().action {
                    RateLimitAction::Disconnect => {
                        return Err(Close::Kicked(ReasonCode::MessageRateTooHigh));
                    }
                    RateLimitAction::Throttle => {
                        // This publish goes through; reading pauses until the debt is paid.
                        if self.blocked.is_none() {
                            self.blocked = Some(Box::new(Blocked::until(now + wait)));
                        }
                    }
                }
            }
        }
        Ok(PublishCheck::Allow)
    }

    /// Decides a subscription; `partial` grants make every later delivery checked.
    pub(super) fn check_subscribe(&mut self, filter: &TopicFilter) -> SubscribeDecision {
        let allow_all = SubscribeDecision::Allow {
            max_qos: QoS::ExactlyOnce,
            partial: false,
        };
        let (Some(auth), Some(provider)) = (self.auth.as_mut(), self.broker.inner.auth.as_ref())
        else {
            return allow_all;
        };
        if !auth.must_check(provider.as_ref()) {
            return allow_all;
        }
        let decision = provider.authorize_subscribe(
            &auth.principal,
            &filter.filter,
            filter.share_group.as_deref(),
        );
        match decision {
            SubscribeDecision::Deny => {
                self.broker
                    .inner
                    .metrics
                    .security
                    .acl_denied(AclAction::Subscribe);
                tracing::debug!(client_id = %self.handle.client_id(), filter = %filter.filter, "subscription not authorized");
            }
            SubscribeDecision::Allow { partial, .. } => auth.read_check |= partial,
        }
        decision
    }

    /// Whether a message on `topic` may be delivered to this connection (checked only after a
    /// partial grant or a change of the rules).
    pub(super) fn may_read(&self, topic: &str) -> bool {
        let (Some(auth), Some(provider)) = (self.auth.as_ref(), self.broker.inner.auth.as_ref())
        else {
            return true;
        };
        if !auth.must_check_reads(provider.as_ref())
            || provider.authorize_read(&auth.principal, topic)
        {
            return true;
        }
        let metrics = &self.broker.inner.metrics;
        metrics.security.acl_denied(AclAction::Read);
        metrics.dropped_not_authorized.increment(1);
        false
    }

    /// Handles AUTH after CONNECT: re-authentication (0x19) and its continuation (0x18).
    pub(super) fn on_auth(&mut self, packet: Auth) -> Result<(), Close> {
        let provider = self.broker.inner.auth.clone();
        let (Some(provider), Some(auth)) = (provider, self.auth.as_mut()) else {
            return Err(Close::Protocol(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
            ));
        };
        let Some(method) = auth.principal.enhanced_method.clone() else {
            // [MQTT-4.12.0-7] no AUTH unless CONNECT carried an Authentication Method.
            return Err(Close::Protocol(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
            ));
        };
        if packet.properties.authentication_method.as_deref() != Some(&*method) {
            // [MQTT-4.12.1-1] re-authentication uses the method of CONNECT.
            return Err(Close::Protocol(
                ReasonCode::ProtocolError,
                "AUTH with another authentication method",
            ));
        }
        let data = packet.properties.authentication_data.as_deref();
        let attempts = &self.broker.inner.metrics.auth;
        let decision = match (packet.reason_code, auth.exchange.take()) {
            (ReasonCode::ReAuthenticate, None) => {
                provider.reauthenticate(&auth.principal, &method, data)
            }
            (ReasonCode::ContinueAuthentication, Some(exchange)) => exchange.step(data),
            (_, exchange) => {
                if exchange.is_some() {
                    attempts.count(auth.principal.method, AuthResult::Aborted);
                }
                return Err(Close::Protocol(
                    ReasonCode::ProtocolError,
                    "unexpected AUTH reason code",
                ));
            }
        };
        match decision {
            AuthDecision::Continue { data, exchange, .. } => {
                auth.exchange = Some(exchange);
                self.write_auth(ReasonCode::ContinueAuthentication, method, Some(data));
                Ok(())
            }
            AuthDecision::Accept { principal, data } => {
                attempts.count(principal.method, AuthResult::Success);
                let principal = Arc::new(*principal);
                provider.disconnected(&auth.principal);
                if auth.principal.rate_limits != principal.rate_limits {
                    auth.bucket = principal.rate_limits.map(crate::auth::TokenBucket::new);
                }
                // The new principal may read less than the old one: check deliveries from now on.
                auth.read_check |= auth.principal.restricted || principal.restricted;
                auth.principal = principal;
                provider.connected(&auth.principal, &self.handle);
                tracing::info!(client_id = %self.handle.client_id(), "client re-authenticated");
                self.write_auth(ReasonCode::Success, method, data);
                Ok(())
            }
            AuthDecision::Refuse(auth_method, reason_code, reason) => {
                tracing::info!(client_id = %self.handle.client_id(), reason, "re-authentication failed");
                attempts.count(auth_method, AuthResult::of_refusal(reason_code));
                // [MQTT-4.12.1-2] a failed re-authentication ends with DISCONNECT.
                let reason_code = match reason_code {
                    ReasonCode::BadAuthenticationMethod => ReasonCode::BadAuthenticationMethod,
                    _ => ReasonCode::NotAuthorized,
                };
                Err(Close::Kicked(reason_code))
            }
        }
    }

    fn write_auth(&mut self, reason_code: ReasonCode, method: ByteString, data: Option<Bytes>) {
        self.write_packet(Packet::Auth(Auth {
            reason_code,
            properties: AuthProperties {
                authentication_method: Some(method),
                authentication_data: data,
                ..AuthProperties::default()
            },
        }));
    }
}
