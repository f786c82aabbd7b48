//! The decisions: which method authenticates a CONNECT, and the ACL checks.
//!
//! Order at CONNECT: the ban list (CONNACK 0x8A); an Authentication Method (only
//! SCRAM-SHA-256, else 0x8C); a verified client certificate on a listener whose
//! `cert_identity` makes its identity the user name; a JWT-shaped password when JWT is configured; a user in the
//! password file (argon2); the HTTP hook for everyone else presenting credentials; then
//! clients without credentials: accepted with a verified certificate, else only with
//! `mqtt.allow_anonymous`. A user name that no configured method can verify is refused with
//! 0x86; with no method configured at all, a user name proves nothing and the client counts as
//! anonymous (the rules never see that name).

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::SystemTime,
};

use bytestring::ByteString;
use metrics::counter;
use starling_core::{
    auth::{
        AuthDecision, AuthFuture, AuthMethod, AuthProvider, ConnectRequest, Principal,
        SubscribeDecision,
    },
    codec::{QoS, ReasonCode},
    session::SessionHandle,
    transport::{ListenerId, PeerCertificate},
};

use super::{
    acl::{self, AclRule, Subject},
    ban_subject,
    http_hook::HookDecision,
    jwt, password, scram, Attributes, NodeAuth,
};

/// The parts of a CONNECT a principal is built from (owned: SCRAM builds it later).
#[derive(Clone)]
struct Seed {
    client_id: ByteString,
    peer: SocketAddr,
    listener: ListenerId,
    listener_name: Arc<str>,
    certificate: Option<PeerCertificate>,
}

impl Seed {
    fn of(request: &ConnectRequest<'_>) -> Seed {
        Seed {
            client_id: ByteString::from(request.client_id),
            peer: request.peer,
            listener: request.listener,
            listener_name: Arc::from(request.listener_name),
            certificate: request.certificate.cloned(),
        }
    }
}

/// Topic lists a token or the hook granted.
type Grants = (Option<Vec<String>>, Option<Vec<String>>);

/// Refuses the attempt; the core counts it in `starling_auth_attempts_total`.
fn refuse(method: AuthMethod, reason_code: ReasonCode, reason: &'static str) -> AuthDecision {
    AuthDecision::Refuse(method, reason_code, reason)
}

impl NodeAuth {
    fn principal(
        &self,
        seed: &Seed,
        username: Option<String>,
        method: AuthMethod,
        expires_at: Option<SystemTime>,
        grants: Option<Grants>,
    ) -> AuthDecision {
        // A new ban may have landed while a slow method (argon2, the hook) ran.
        if let Some(user) = &username {
            if self
                .bans
                .read()
                .matches(&super::bans::BanSubject {
                    client_id: &seed.client_id,
                    username: Some(user),
                    cert_serial: seed.certificate.as_ref().map(|c| c.serial_hex.as_str()),
                    addr: seed.peer.ip(),
                })
                .is_some()
            {
                return refuse(method, ReasonCode::Banned, "banned");
            }
        }
        let mut rules = Vec::new();
        if let Some((publish, subscribe)) = grants {
            if let Some(filters) = publish {
                rules.push(AclRule::grant(
                    true,
                    valid_filters(filters, self.max_topic_levels),
                ));
            }
            if let Some(filters) = subscribe {
                rules.push(AclRule::grant(
                    false,
                    valid_filters(filters, self.max_topic_levels),
                ));
            }
        }
        let restricted = !rules.is_empty() || !self.acl.read().is_empty();
        AuthDecision::Accept {
            principal: Box::new(Principal {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                client_id: seed.client_id.clone(),
                username: username.map(ByteString::from),
                method,
                enhanced_method: (method == AuthMethod::Scram)
                    .then(|| ByteString::from_static(scram::METHOD)),
                peer: seed.peer,
                listener: seed.listener,
                certificate: seed.certificate.clone(),
                expires_at,
                rate_limits: self.config.rate_limits,
                policy_generation: self.generation.load(Ordering::Acquire),
                restricted,
                attributes: Some(Arc::new(Attributes {
                    listener: seed.listener_name.clone(),
                    grants: rules,
                })),
            }),
            data: None,
        }
    }

    fn start_scram(
        &self,
        seed: Seed,
        data: Option<&[u8]>,
        expected_user: Option<&str>,
    ) -> AuthDecision {
        let passwords = self.passwords.read().clone();
        let me = self.me.clone();
        scram::start(
            data,
            |user| passwords.get(user).and_then(|entry| entry.scram.clone()),
            &self.fake_secret,
            expected_user,
            Box::new(move |user: &str| match me.upgrade() {
                Some(auth) => {
                    auth.principal(&seed, Some(user.to_string()), AuthMethod::Scram, None, None)
                }
                None => refuse(
                    AuthMethod::Scram,
                    ReasonCode::ServerUnavailable,
                    "shutting down",
                ),
            }),
        )
    }

    /// Verifies `password` against `user`'s argon2 hash, or finds that it succeeded before.
    async fn check_password(&self, user: &str, phc: String, password: Vec<u8>) -> bool {
        let key = self.password_cache.key(user, &phc, &password);
        if self.password_cache.contains(&key) {
            counter!("starling_auth_password_checks_total", "cached" => "true").increment(1);
            return true;
        }
        counter!("starling_auth_password_checks_total", "cached" => "false").increment(1);
        let Ok(_slot) = self.argon2_slots.clone().acquire_owned().await else {
            return false;
        };
        let verified =
            tokio::task::spawn_blocking(move || password::verify_password(&phc, &password))
                .await
                .unwrap_or(false);
        if verified {
            self.password_cache.insert(key);
        }
        verified
    }

    async fn decide(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        let seed = Seed::of(request);
        let config = &self.config;
        if let Some(kind) = self.bans.read().matches(&super::bans::BanSubject {
            client_id: request.client_id,
            username: request.username,
            cert_serial: request.certificate.map(|c| c.serial_hex.as_str()),
            addr: request.peer.ip(),
        }) {
            tracing::info!(client_id = request.client_id, peer = %request.peer, kind, "banned client refused");
            return refuse(AuthMethod::Anonymous, ReasonCode::Banned, "banned");
        }
        if let Some(method) = request.method {
            if method == scram::METHOD && config.scram {
                return self.start_scram(seed, request.data, request.username);
            }
            // SCRAM while it is disabled still counts as SCRAM; any other method as such.
            let label = if method == scram::METHOD {
                AuthMethod::Scram
            } else {
                AuthMethod::Enhanced
            };
            return refuse(
                label,
                ReasonCode::BadAuthenticationMethod,
                "authentication method not supported",
            );
        }
        // The listener's `cert_identity` ("username" or "both") made the verified certificate's
        // identity the user name: the TLS handshake authenticated it.
        if let (true, Some(username)) = (request.username_from_certificate, request.username) {
            return self.principal(
                &seed,
                Some(username.to_string()),
                AuthMethod::Certificate,
                None,
                None,
            );
        }
        if let (Some(jwt_config), Some(password)) = (&config.jwt, request.password) {
            if jwt::looks_like_jwt(password) {
                let keys = self.jwt_keys.read().clone();
                return match jwt::verify(
                    password,
                    &keys,
                    jwt_config,
                    request.username,
                    request.client_id,
                    SystemTime::now(),
                ) {
                    Ok(token) => self.principal(
                        &seed,
                        token.username,
                        AuthMethod::Jwt,
                        Some(token.expires_at),
                        Some((token.publish, token.subscribe)),
                    ),
                    Err(error) => {
                        tracing::info!(client_id = request.client_id, %error, "token refused");
                        refuse(
                            AuthMethod::Jwt,
                            ReasonCode::BadUserNameOrPassword,
                            "invalid token",
                        )
                    }
                };
            }
        }
        if let Some(username) = request.username {
            let entry = self
                .passwords
                .read()
                .get(username)
                .and_then(|e| e.argon2.clone());
            if let Some(phc) = entry {
                let password = request.password.unwrap_or_default().to_vec();
                if self.check_password(username, phc, password).await {
                    return self.principal(
                        &seed,
                        Some(username.to_string()),
                        AuthMethod::Password,
                        None,
                        None,
                    );
                }
                return refuse(
                    AuthMethod::Password,
                    ReasonCode::BadUserNameOrPassword,
                    "bad user name or password",
                );
            }
        }
        if request.username.is_some() || request.password.is_some() {
            if let Some(hook) = &self.http {
                return match hook.decide(request).await {
                    Ok((HookDecision::Allow { publish, subscribe }, cached)) => {
                        counter!("starling_auth_hook_requests_total", "result" => "allow", "cached" => if cached { "true" } else { "false" }).increment(1);
                        let grants = (publish.is_some() || subscribe.is_some())
                            .then_some((publish, subscribe));
                        self.principal(
                            &seed,
                            request.username.map(str::to_string),
                            AuthMethod::Http,
                            None,
                            grants,
                        )
                    }
                    Ok((HookDecision::Deny, cached)) => {
                        counter!("starling_auth_hook_requests_total", "result" => "deny", "cached" => if cached { "true" } else { "false" }).increment(1);
                        refuse(
                            AuthMethod::Http,
                            ReasonCode::BadUserNameOrPassword,
                            "bad user name or password",
                        )
                    }
                    Err(error) => {
                        counter!("starling_auth_hook_requests_total", "result" => "error", "cached" => "false").increment(1);
                        tracing::warn!(client_id = request.client_id, %error, "authentication hook failed");
                        refuse(
                            AuthMethod::Http,
                            ReasonCode::ServerUnavailable,
                            "authentication service unavailable",
                        )
                    }
                };
            }
            if config.verifies_users() {
                return refuse(
                    AuthMethod::Password,
                    ReasonCode::BadUserNameOrPassword,
                    "bad user name or password",
                );
            }
        }
        if request.certificate.is_some() {
            return self.principal(&seed, None, AuthMethod::Certificate, None, None);
        }
        if config.allow_anonymous {
            return self.principal(&seed, None, AuthMethod::Anonymous, None, None);
        }
        refuse(
            AuthMethod::Anonymous,
            ReasonCode::NotAuthorized,
            "anonymous access is disabled",
        )
    }

    fn rules_for<'a>(
        &self,
        principal: &'a Principal,
    ) -> Option<(Arc<Vec<AclRule>>, &'a Attributes)> {
        let attributes = principal
            .attributes
            .as_ref()
            .and_then(|a| a.downcast_ref::<Attributes>())?;
        Some((self.acl.read().clone(), attributes))
    }
}

fn valid_filters(filters: Vec<String>, max_levels: usize) -> Vec<String> {
    filters
        .into_iter()
        .filter(|f| {
            let probe = f.replace("%c", "x").replace("%u", "x").replace("%i", "x");
            starling_core::topic::validate_topic_filter(&probe, max_levels).is_ok()
        })
        .collect()
}

fn subject<'a>(principal: &'a Principal, attributes: &'a Attributes) -> Subject<'a> {
    Subject {
        client_id: &principal.client_id,
        username: principal.username.as_deref(),
        certificate_cn: principal
            .certificate
            .as_ref()
            .and_then(|c| c.common_name.as_deref()),
        listener: &attributes.listener,
    }
}

impl AuthProvider for NodeAuth {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest<'a>) -> AuthFuture<'a> {
        Box::pin(self.decide(request))
    }

    fn reauthenticate(
        &self,
        principal: &Arc<Principal>,
        method: &str,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        if method != scram::METHOD || !self.config.scram {
            return refuse(
                principal.method,
                ReasonCode::BadAuthenticationMethod,
                "method not supported",
            );
        }
        let attributes = principal
            .attributes
            .as_ref()
            .and_then(|a| a.downcast_ref::<Attributes>());
        let seed = Seed {
            client_id: principal.client_id.clone(),
            peer: principal.peer,
            listener: principal.listener,
            listener_name: attributes.map_or_else(|| Arc::from("default"), |a| a.listener.clone()),
            certificate: principal.certificate.clone(),
        };
        self.start_scram(seed, data, principal.username.as_deref())
    }

    fn connected(&self, principal: &Arc<Principal>, session: &SessionHandle) {
        self.live.insert(principal, session);
        // A ban that landed between the check at CONNECT and now still applies.
        if self.bans.read().matches(&ban_subject(principal)).is_some() {
            self.live
                .kick(principal.id, ReasonCode::AdministrativeAction);
        }
    }

    fn disconnected(&self, principal: &Arc<Principal>) {
        self.live.remove(principal);
    }

    fn authorize_publish(
        &self,
        principal: &Principal,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> bool {
        let Some((rules, attributes)) = self.rules_for(principal) else {
            return false;
        };
        if rules.is_empty() && attributes.grants.is_empty() {
            return true;
        }
        acl::check_publish(
            rules.iter().chain(attributes.grants.iter()),
            &subject(principal, attributes),
            topic,
            qos,
            retain,
        )
    }

    fn authorize_subscribe(
        &self,
        principal: &Principal,
        filter: &str,
        _share_group: Option<&str>,
    ) -> SubscribeDecision {
        let Some((rules, attributes)) = self.rules_for(principal) else {
            return SubscribeDecision::Deny;
        };
        if rules.is_empty() && attributes.grants.is_empty() {
            return SubscribeDecision::Allow {
                max_qos: QoS::ExactlyOnce,
                partial: false,
            };
        }
        acl::check_subscribe(
            rules.iter().chain(attributes.grants.iter()),
            &subject(principal, attributes),
            filter,
        )
    }

    fn authorize_read(&self, principal: &Principal, topic: &str) -> bool {
        let Some((rules, attributes)) = self.rules_for(principal) else {
            return false;
        };
        if rules.is_empty() && attributes.grants.is_empty() {
            return true;
        }
        acl::check_read(
            rules.iter().chain(attributes.grants.iter()),
            &subject(principal, attributes),
            topic,
        )
    }

    fn policy_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
