//! Authentication, authorization, revocation and per-client limits of the node: the
//! [`AuthProvider`](starling_core::auth::AuthProvider) the core calls, built from `[auth]`,
//! `[acl]` and `[limits]`.
//!
//! - [`password`]: the argon2 password file and `starling passwd`; `password_cache`: successful
//!   argon2 verifications remembered, so reconnects skip the hash.
//! - [`scram`]: SCRAM-SHA-256 enhanced authentication (AUTH packets).
//! - [`jwt`]: JWTs in the password field (HS256, RS256, ES256 from a JWKS file).
//! - [`http_hook`]: the HTTP authentication/authorization hook with its decision cache.
//! - [`acl`]: topic rules with placeholders, first match wins, deny by default.
//! - [`bans`]: the ban list file and `starling ban`.
//! - [`live`]: authenticated connections, kicked on a matching ban or at credential expiry.
//! - `provider`: the decisions themselves; `cli`: the `passwd` and `ban` commands.
//!
//! State: each file's parsed content sits behind an `RwLock<Arc<_>>` swapped whole on reload
//! (a file that fails to parse leaves the previous content in force and is counted); one
//! watcher task polls the files every `auth.reload_interval_ms`, reloads them all on SIGHUP,
//! and closes connections whose token expired.

pub mod acl;
pub mod bans;
pub mod cli;
pub mod http_hook;
pub mod jwt;
pub mod live;
pub mod password;
mod password_cache;
mod provider;
pub mod scram;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::{Duration, SystemTime},
};

use anyhow::Context;
use metrics::counter;
use parking_lot::RwLock;
use starling_core::{auth::AuthHook, codec::ReasonCode};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::AuthConfig;

use self::{
    acl::AclRule,
    bans::{BanList, BanSubject},
    http_hook::HttpHook,
    jwt::JwtKeys,
    live::LiveConnections,
    password::PasswordDb,
    password_cache::PasswordCache,
};

const FILES: [&str; 4] = ["passwords", "acl", "bans", "jwt_keys"];

/// Registers the node's security metrics at 0 (called at every node start, with or without
/// an auth configuration, so the series always exist). `starling_auth_attempts_total` is the
/// core's: it counts every attempt, with a provider or without.
pub fn register_metrics() {
    for reason in ["banned", "expired"] {
        counter!("starling_auth_revocations_total", "reason" => reason).absolute(0);
    }
    for result in ["allow", "deny", "error"] {
        for cached in ["true", "false"] {
            counter!("starling_auth_hook_requests_total", "result" => result, "cached" => cached)
                .absolute(0);
        }
    }
    for cached in ["true", "false"] {
        // Registered, not set: another node of the same process may have counted already.
        counter!("starling_auth_password_checks_total", "cached" => cached).increment(0);
    }
    for file in FILES {
        for result in ["success", "error"] {
            counter!("starling_auth_reloads_total", "file" => file, "result" => result).absolute(0);
        }
    }
}

/// What the provider attaches to each principal.
pub(crate) struct Attributes {
    /// Name of the listener (for `listener = ...` rules).
    pub(crate) listener: Arc<str>,
    /// The principal's own allow rules (a token's or the hook's topic lists).
    pub(crate) grants: Vec<AclRule>,
}

/// The node's auth provider.
pub struct NodeAuth {
    config: AuthConfig,
    max_topic_levels: usize,
    me: Weak<NodeAuth>,
    passwords: RwLock<Arc<PasswordDb>>,
    /// Configured rules followed by the ACL file's.
    acl: RwLock<Arc<Vec<AclRule>>>,
    generation: AtomicU64,
    bans: RwLock<Arc<BanList>>,
    jwt_keys: RwLock<Arc<JwtKeys>>,
    http: Option<HttpHook>,
    live: LiveConnections,
    next_id: AtomicU64,
    /// Makes the SCRAM salts of unknown users stable within a process.
    fake_secret: [u8; 32],
    /// Bounds argon2 verifications running at once (each takes ~20 MiB and tens of ms).
    argon2_slots: Arc<Semaphore>,
    /// Wakes the watcher for an immediate look at the files (after an admin API edit).
    reload_requested: Arc<tokio::sync::Notify>,
    /// Successful argon2 verifications, cleared when the password file reloads.
    password_cache: PasswordCache,
    shutdown: CancellationToken,
}

fn read_optional(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl NodeAuth {
    /// Loads every configured file; `None` when the configuration needs no provider.
    ///
    /// # Errors
    /// Returns an error naming the file when one cannot be read or parsed.
    pub fn build(
        config: &AuthConfig,
        max_topic_levels: usize,
    ) -> anyhow::Result<Option<Arc<NodeAuth>>> {
        if !config.is_needed() {
            return Ok(None);
        }
        let http = config.http.clone().map(HttpHook::new).transpose()?;
        let auth = Arc::new_cyclic(|me| NodeAuth {
            config: config.clone(),
            max_topic_levels,
            me: me.clone(),
            passwords: RwLock::new(Arc::new(PasswordDb::default())),
            acl: RwLock::new(Arc::new(config.acl_rules.clone())),
            generation: AtomicU64::new(1),
            bans: RwLock::new(Arc::new(BanList::default())),
            jwt_keys: RwLock::new(Arc::new(JwtKeys::default())),
            http,
            live: LiveConnections::default(),
            next_id: AtomicU64::new(1),
            fake_secret: rand::random(),
            argon2_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            reload_requested: Arc::new(tokio::sync::Notify::new()),
            password_cache: PasswordCache::new(config.password_cache_max_entries),
            shutdown: CancellationToken::new(),
        });
        for file in FILES {
            auth.reload(file)?;
        }
        if config.allow_anonymous && config.verifies_users() {
            tracing::warn!("mqtt.allow_anonymous = true: clients without credentials are accepted next to authenticated ones");
        }
        tracing::info!(
            users = auth.passwords.read().len(),
            acl_rules = auth.acl.read().len(),
            bans = auth.bans.read().len(),
            jwt = config.jwt.is_some(),
            http_hook = config.http.as_ref().map(|http| http.url.as_str()),
            scram = config.scram,
            "authentication configured"
        );
        Ok(Some(auth))
    }

    /// The hook to hand to the broker.
    pub fn hook(self: &Arc<Self>) -> AuthHook {
        AuthHook(self.clone())
    }

    fn path_of(&self, file: &str) -> Option<&PathBuf> {
        match file {
            "passwords" => self.config.password_file.as_ref(),
            "acl" => self.config.acl_file.as_ref(),
            "bans" => self.config.ban_file.as_ref(),
            "jwt_keys" => self
                .config
                .jwt
                .as_ref()
                .and_then(|jwt| jwt.jwks_file.as_ref().or(jwt.hs256_secret_file.as_ref())),
            _ => None,
        }
    }

    /// Reloads one file (kind from [`FILES`]); on error the previous content stays in force.
    fn reload(&self, file: &'static str) -> anyhow::Result<()> {
        let result = self.load(file);
        let label = if result.is_ok() { "success" } else { "error" };
        if self.path_of(file).is_some() {
            counter!("starling_auth_reloads_total", "file" => file, "result" => label).increment(1);
        }
        result
    }

    fn load(&self, file: &'static str) -> anyhow::Result<()> {
        match file {
            "passwords" => {
                if let Some(path) = &self.config.password_file {
                    let db = PasswordDb::parse(&read_optional(path)?)
                        .with_context(|| format!("invalid password file {}", path.display()))?;
                    *self.passwords.write() = Arc::new(db);
                    // Entries of changed hashes could never match again; drop them all at once.
                    self.password_cache.clear();
                }
            }
            "acl" => {
                if let Some(path) = &self.config.acl_file {
                    let text = read_optional(path)?;
                    let file_rules =
                        acl::parse_acl_file(&text, self.max_topic_levels).map_err(|error| {
                            anyhow::anyhow!("invalid ACL file {}: {error}", path.display())
                        })?;
                    let mut rules = self.config.acl_rules.clone();
                    rules.extend(file_rules);
                    *self.acl.write() = Arc::new(rules);
                    self.generation.fetch_add(1, Ordering::Release);
                }
            }
            "bans" => {
                if let Some(path) = &self.config.ban_file {
                    let bans = BanList::parse(&read_optional(path)?).map_err(|error| {
                        anyhow::anyhow!("invalid ban file {}: {error}", path.display())
                    })?;
                    let bans = Arc::new(bans);
                    *self.bans.write() = bans.clone();
                    self.enforce_bans(&bans);
                }
            }
            "jwt_keys" => {
                if let Some(jwt) = &self.config.jwt {
                    *self.jwt_keys.write() = Arc::new(jwt::load_keys(jwt)?);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Kicks connected clients a ban now matches (DISCONNECT 0x98).
    fn enforce_bans(&self, bans: &BanList) {
        if bans.len() == 0 {
            return;
        }
        let kicked = self
            .live
            .kick_matching(ReasonCode::AdministrativeAction, |principal| {
                bans.matches(&ban_subject(principal)).is_some()
            });
        if kicked > 0 {
            tracing::info!(kicked, "banned clients disconnected");
            counter!("starling_auth_revocations_total", "reason" => "banned")
                .increment(kicked as u64);
        }
    }

    /// Watches the files (poll and SIGHUP) and expires connections until the node stops.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.reload_interval;
        let shutdown = self.shutdown.clone();
        let reload_requested = self.reload_requested.clone();
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut stamps: Vec<Option<FileStamp>> = {
                let Some(auth) = weak.upgrade() else { return };
                FILES
                    .iter()
                    .map(|file| auth.path_of(file).and_then(|p| stamp(p)))
                    .collect()
            };
            let mut reload_tick = tokio::time::interval(interval);
            let mut expiry_tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                let forced = tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = reload_tick.tick() => false,
                    () = reload_requested.notified() => false,
                    _ = expiry_tick.tick() => {
                        let Some(auth) = weak.upgrade() else { return };
                        let expired = auth.live.kick_expired(SystemTime::now());
                        if expired > 0 {
                            tracing::info!(expired, "connections closed at credential expiry (0xA0)");
                            counter!("starling_auth_revocations_total", "reason" => "expired").increment(expired as u64);
                        }
                        continue;
                    }
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                let Some(auth) = weak.upgrade() else { return };
                for (idx, file) in FILES.iter().enumerate() {
                    let Some(path) = auth.path_of(file) else {
                        continue;
                    };
                    let now = stamp(path);
                    if forced || now != stamps[idx] {
                        stamps[idx] = now;
                        match auth.reload(file) {
                            Ok(()) => tracing::info!(file, path = %path.display(), "reloaded"),
                            Err(error) => {
                                tracing::error!(file, %error, "reload failed; the previous content stays in force")
                            }
                        }
                    }
                }
            }
        });
    }

    /// Makes the watcher look at the files now instead of at its next tick; a changed file is
    /// reloaded (and a new ban enforced) at once.
    pub fn request_reload(&self) {
        self.reload_requested.notify_one();
    }

    /// Stops the watcher task.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Number of connections the provider tracks.
    pub fn num_connections(&self) -> usize {
        self.live.len()
    }
}

/// What identifies a version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

fn ban_subject(principal: &starling_core::auth::Principal) -> BanSubject<'_> {
    BanSubject {
        client_id: &principal.client_id,
        username: principal.username.as_deref(),
        cert_serial: principal
            .certificate
            .as_ref()
            .map(|c| c.serial_hex.as_str()),
        addr: principal.peer.ip(),
    }
}
