//! Scenarios: the TOML file format (`deny_unknown_fields`, errors naming key and line), its
//! validation, and the derived numbers (client counts, rates, source addresses).
//!
//! A scenario has up to three groups of clients: `[publishers]` publish to a topic template,
//! `[subscribers]` subscribe to a filter template (optionally as one shared group), and
//! `[commands]` is MQTT 5 request/response between backends and devices. Connection storms,
//! idle fleets, fan-in, fan-out, 1:1 pairs, shared consumers, reconnect churn and slow
//! consumers are all settings of these groups; see [`EXAMPLE_SCENARIO_TOML`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use starling_core::codec::{ProtocolVersion, QoS};

use crate::payload::{PayloadShape, Template, HEADER_LEN};

/// A commented scenario with every key, printed by `swarm example`.
pub const EXAMPLE_SCENARIO_TOML: &str = include_str!("scenario/example.toml");

/// The MQTT protocol version the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.
    #[serde(rename = "3.1")]
    V3_1,
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V3_1_1,
    /// MQTT 5.0.
    #[serde(rename = "5", alias = "5.0")]
    V5,
}

impl Protocol {
    /// Returns the codec's protocol version.
    pub fn version(self) -> ProtocolVersion {
        match self {
            Protocol::V3_1 => ProtocolVersion::V3_1,
            Protocol::V3_1_1 => ProtocolVersion::V3_1_1,
            Protocol::V5 => ProtocolVersion::V5,
        }
    }

    /// Returns the name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V3_1 => "3.1",
            Protocol::V3_1_1 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// One load test.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// Broker address, `host:port`.
    #[serde(default = "default_broker")]
    pub broker: String,
    /// MQTT version of every client.
    #[serde(default)]
    pub protocol: Protocol,
    /// Length of the measured phase (publishing, or holding idle connections), seconds.
    #[serde(default = "default_duration_secs")]
    pub duration_secs: f64,
    /// Worker processes; default: one per 15,000 clients.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Runtime threads per worker process.
    #[serde(default = "default_threads_per_worker")]
    pub threads_per_worker: usize,
    /// Local addresses to connect from, e.g. `127.0.0.1-127.0.0.8` or `127.0.0.2,127.0.0.3`;
    /// default: the system's choice, or a 127.0.0.x range for more than 16,000 clients.
    #[serde(default)]
    pub source_addresses: Option<String>,
    /// New connections per second over all workers; default: as fast as
    /// `max_concurrent_connects` allows.
    #[serde(default)]
    pub connect_rate: Option<f64>,
    /// The connect rate rises linearly from 0 over this many seconds.
    #[serde(default)]
    pub ramp_secs: f64,
    /// Handshakes in progress at once over all workers (more overflow accept backlogs, and
    /// SYN retries then add a second to a connect).
    #[serde(default = "default_max_concurrent_connects")]
    pub max_concurrent_connects: usize,
    /// Time allowed for TCP connect, CONNACK and SUBACK.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Keep alive of every client.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u16,
    /// Client id prefix; default `swarm-<run id>-`.
    #[serde(default)]
    pub client_id_prefix: Option<String>,
    /// Pause between the last connection and the measured phase (also when idle RSS is read).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// After publishing, stop once nothing arrived for this long.
    #[serde(default = "default_drain_quiet_ms")]
    pub drain_quiet_ms: u64,
    /// After publishing, stop after this long in any case.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Publishing clients.
    #[serde(default)]
    pub publishers: Option<Publishers>,
    /// Subscribing clients.
    #[serde(default)]
    pub subscribers: Option<Subscribers>,
    /// MQTT 5 request/response between backends and devices.
    #[serde(default)]
    pub commands: Option<Commands>,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// The `[tls]` table: TLS for every client.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file with the client certificate chain (mutual TLS).
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// PEM file with the client's private key.
    #[serde(default)]
    pub client_key_file: Option<String>,
    /// Name checked against the broker's certificate; default: the host of `broker`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any broker certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// The `[publishers]` group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publishers {
    /// Number of publishing clients.
    pub count: usize,
    /// Topic template; `{id}` is the publisher's index.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// QoS of every PUBLISH.
    #[serde(default)]
    pub qos: u8,
    /// Messages per second per publisher (exclusive with `total_rate`); default: unthrottled.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Messages per second over all publishers (the offered load).
    #[serde(default)]
    pub total_rate: Option<f64>,
    /// Stop after this many messages per publisher.
    #[serde(default)]
    pub max_messages: Option<u64>,
    /// Payload size for binary payloads (at least the 24-byte header).
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: usize,
    /// Text payload template instead of a binary payload.
    #[serde(default)]
    pub payload_template: Option<String>,
    /// RETAIN flag.
    #[serde(default)]
    pub retain: bool,
    /// Unacknowledged QoS 1/2 messages per publisher (also capped by the broker's receive
    /// maximum).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Clean start (clean session) at the first connect.
    #[serde(default = "default_true")]
    pub clean_start: bool,
    /// Session expiry interval (MQTT 5).
    #[serde(default)]
    pub session_expiry_secs: u32,
    /// Reconnect churn: disconnect and come back this often.
    #[serde(default)]
    pub reconnect_every_secs: Option<f64>,
    /// Time offline during churn.
    #[serde(default = "default_offline_ms")]
    pub offline_ms: u64,
}

/// The `[subscribers]` group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribers {
    /// Number of subscribing clients.
    pub count: usize,
    /// Filter template; `{id}` is the subscriber's index.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Maximum QoS of the subscription.
    #[serde(default)]
    pub qos: u8,
    /// Subscribe as members of `$share/<group>/<filter>`.
    #[serde(default)]
    pub shared_group: Option<String>,
    /// Clean start (clean session) at the first connect.
    #[serde(default = "default_true")]
    pub clean_start: bool,
    /// Session expiry interval (MQTT 5).
    #[serde(default)]
    pub session_expiry_secs: u32,
    /// Slow consumer: read at most this many messages per second per subscriber.
    #[serde(default)]
    pub consume_rate: Option<f64>,
    /// Reconnect churn: disconnect and come back this often.
    #[serde(default)]
    pub reconnect_every_secs: Option<f64>,
    /// Time offline during churn.
    #[serde(default = "default_offline_ms")]
    pub offline_ms: u64,
}

/// The `[commands]` group: backends send commands, devices answer (MQTT 5 response topic and
/// correlation data); latency is the round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// Backends sending commands.
    #[serde(default = "default_one")]
    pub backends: usize,
    /// Devices answering commands.
    pub devices: usize,
    /// Topic a device listens on; `{id}` is the device index.
    #[serde(default = "default_command_topic")]
    pub command_topic: String,
    /// Topic a backend receives responses on; `{id}` is the backend index.
    #[serde(default = "default_response_topic")]
    pub response_topic: String,
    /// Commands per second over all backends; default: unthrottled, bounded by
    /// `max_outstanding`.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Commands without a response yet, per backend.
    #[serde(default = "default_max_outstanding")]
    pub max_outstanding: u16,
    /// QoS of commands, responses and subscriptions.
    #[serde(default = "default_one_u8")]
    pub qos: u8,
    /// Command payload size.
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: usize,
}

fn default_name() -> String {
    "custom".to_owned()
}
fn default_broker() -> String {
    "127.0.0.1:1883".to_owned()
}
fn default_duration_secs() -> f64 {
    10.0
}
fn default_threads_per_worker() -> usize {
    1
}
fn default_max_concurrent_connects() -> usize {
    64
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_keep_alive_secs() -> u16 {
    60
}
fn default_settle_ms() -> u64 {
    500
}
fn default_drain_quiet_ms() -> u64 {
    1_000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}
fn default_topic() -> String {
    "swarm/{id}".to_owned()
}
fn default_filter() -> String {
    "swarm/#".to_owned()
}
fn default_payload_bytes() -> usize {
    64
}
fn default_max_inflight() -> u16 {
    64
}
fn default_true() -> bool {
    true
}
fn default_offline_ms() -> u64 {
    500
}
fn default_one() -> usize {
    1
}
fn default_one_u8() -> u8 {
    1
}
fn default_command_topic() -> String {
    "fleet/{id}/cmd".to_owned()
}
fn default_response_topic() -> String {
    "fleet/backend/{id}/responses".to_owned()
}
fn default_max_outstanding() -> u16 {
    64
}

/// A validation failure: which key, and why.
#[derive(Debug)]
struct Invalid {
    table: Option<&'static str>,
    key: &'static str,
    message: String,
}

fn invalid(table: Option<&'static str>, key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        table,
        key,
        message: message.into(),
    }
}

impl Invalid {
    fn full_key(&self) -> String {
        match self.table {
            Some(table) => format!("{table}.{}", self.key),
            None => self.key.to_owned(),
        }
    }
}

/// Returns the 1-based line of byte `offset` in `text`.
fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// Finds the 1-based line where `key` is set inside `[table]` (or at the top level).
fn line_of_key(text: &str, table: Option<&str>, key: &str) -> Option<usize> {
    let mut in_table = table.is_none();
    for (idx, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            let name = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("");
            in_table = Some(name.trim()) == table;
            continue;
        }
        if in_table {
            if let Some(rest) = trimmed.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(idx + 1);
                }
            }
        }
    }
    None
}

impl Scenario {
    /// Parses and validates a scenario file; `source` names it in errors.
    ///
    /// # Errors
    /// Returns an error naming the line and key of a TOML error, an unknown key (a typo) or an
    /// invalid value.
    pub fn from_toml(text: &str, source: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| {
            let message = error.message().trim().to_owned();
            match error.span() {
                Some(span) => {
                    let line = line_of_offset(text, span.start);
                    let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
                    anyhow!("invalid scenario {source}, line {line}: {message} (`{snippet}`)")
                }
                None => anyhow!("invalid scenario {source}: {message}"),
            }
        })?;
        if let Err(invalid) = scenario.validate() {
            let key = invalid.full_key();
            return Err(match line_of_key(text, invalid.table, invalid.key) {
                Some(line) => anyhow!(
                    "invalid scenario {source}, line {line}: `{key}` {}",
                    invalid.message
                ),
                None => anyhow!("invalid scenario {source}: `{key}` {}", invalid.message),
            });
        }
        Ok(scenario)
    }

    /// Validates a scenario built from flags.
    ///
    /// # Errors
    /// Returns an error naming the invalid key.
    pub fn check(&self) -> anyhow::Result<()> {
        self.validate().map_err(|invalid| {
            anyhow!(
                "invalid scenario: `{}` {}",
                invalid.full_key(),
                invalid.message
            )
        })
    }

    fn validate(&self) -> Result<(), Invalid> {
        if !(self.duration_secs > 0.0 && self.duration_secs <= 86_400.0) {
            return Err(invalid(
                None,
                "duration_secs",
                "must be between 0 and 86400",
            ));
        }
        if self.threads_per_worker == 0 {
            return Err(invalid(None, "threads_per_worker", "must be at least 1"));
        }
        if self.workers == Some(0) {
            return Err(invalid(None, "workers", "must be at least 1"));
        }
        if self.max_concurrent_connects == 0 {
            return Err(invalid(
                None,
                "max_concurrent_connects",
                "must be at least 1",
            ));
        }
        if let Some(rate) = self.connect_rate {
            if rate <= 0.0 || rate.is_nan() {
                return Err(invalid(None, "connect_rate", "must be positive"));
            }
        }
        if self.ramp_secs < 0.0 {
            return Err(invalid(None, "ramp_secs", "must not be negative"));
        }
        if let Some(spec) = &self.source_addresses {
            parse_source_addresses(spec)
                .map_err(|error| invalid(None, "source_addresses", error.to_string()))?;
        }
        if self.total_clients() == 0 {
            return Err(invalid(
                None,
                "publishers",
                "or [subscribers] or [commands] must define at least one client",
            ));
        }
        if let Some(publishers) = &self.publishers {
            validate_publishers(publishers)?;
        }
        if let Some(subscribers) = &self.subscribers {
            validate_subscribers(subscribers)?;
        }
        if let Some(commands) = &self.commands {
            validate_commands(commands, self.protocol)?;
        }
        if let Some(tls) = &self.tls {
            validate_tls(tls)?;
        }
        Ok(())
    }

    /// Returns the host part of `broker`, the default TLS server name.
    pub fn broker_host(&self) -> &str {
        let host = match self.broker.rsplit_once(':') {
            Some((host, _)) => host,
            None => &self.broker,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Returns the number of clients over all groups.
    pub fn total_clients(&self) -> usize {
        self.subscribers.as_ref().map_or(0, |group| group.count)
            + self.publishers.as_ref().map_or(0, |group| group.count)
            + self
                .commands
                .as_ref()
                .map_or(0, |commands| commands.backends + commands.devices)
    }

    /// Returns the number of worker processes to use.
    pub fn num_workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| self.total_clients().div_ceil(15_000))
            .clamp(1, self.total_clients().max(1))
    }

    /// Returns the offered load in messages per second over all publishers (or commands),
    /// `None` when unthrottled.
    pub fn offered_rate(&self) -> Option<f64> {
        if let Some(publishers) = &self.publishers {
            return publishers
                .total_rate
                .or(publishers.rate.map(|rate| rate * publishers.count as f64));
        }
        self.commands.as_ref().and_then(|commands| commands.rate)
    }

    /// Sets the offered load (used by sweeps).
    pub fn set_offered_rate(&mut self, rate: f64) {
        if let Some(publishers) = &mut self.publishers {
            publishers.total_rate = Some(rate);
            publishers.rate = None;
        } else if let Some(commands) = &mut self.commands {
            commands.rate = Some(rate);
        }
    }

    /// Resolves the broker address.
    ///
    /// # Errors
    /// Returns an error naming the address when it does not resolve.
    pub fn broker_addr(&self) -> anyhow::Result<SocketAddr> {
        self.broker
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve broker address `{}`", self.broker))?
            .next()
            .ok_or_else(|| anyhow!("broker address `{}` resolves to nothing", self.broker))
    }

    /// Returns the local addresses to connect from; empty means the system's choice.
    ///
    /// # Errors
    /// Returns an error for an invalid `source_addresses`.
    pub fn source_addresses(&self, broker: SocketAddr) -> anyhow::Result<Vec<IpAddr>> {
        if let Some(spec) = &self.source_addresses {
            return parse_source_addresses(spec);
        }
        // Past ~28,000 connections one source address runs out of ephemeral ports.
        let total = self.total_clients();
        if broker.ip().is_loopback() && broker.is_ipv4() && total > 16_000 {
            let count = u8::try_from(total.div_ceil(16_000) + 1).unwrap_or(u8::MAX - 1);
            return Ok((1..=count)
                .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
                .collect());
        }
        Ok(Vec::new())
    }
}

/// Returns the payload shape of a publisher group.
///
/// # Errors
/// Returns an error for an invalid template.
pub(crate) fn payload_shape(publishers: &Publishers) -> anyhow::Result<PayloadShape> {
    match &publishers.payload_template {
        Some(template) => Ok(PayloadShape::Template(Template::parse(template)?)),
        None => Ok(PayloadShape::Binary {
            size: publishers.payload_bytes,
        }),
    }
}

/// Converts a validated QoS number.
pub(crate) fn qos_of(value: u8) -> QoS {
    match value {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Parses `a.b.c.d-a.b.c.e` ranges and comma-separated lists of IPv4/IPv6 addresses.
///
/// # Errors
/// Returns an error for an unparsable or empty list.
pub fn parse_source_addresses(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for part in spec
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        if let Some((first, last)) = part.split_once('-') {
            let first: Ipv4Addr = first
                .trim()
                .parse()
                .with_context(|| format!("`{first}` is not an IPv4 address"))?;
            let last: Ipv4Addr = last
                .trim()
                .parse()
                .with_context(|| format!("`{last}` is not an IPv4 address"))?;
            let (first, last) = (u32::from(first), u32::from(last));
            if !(first <= last && last - first < 65_536) {
                return Err(anyhow!(
                    "range `{part}` must be ascending and at most 65536 addresses"
                ));
            }
            addresses.extend((first..=last).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
        } else {
            addresses.push(
                part.parse()
                    .with_context(|| format!("`{part}` is not an IP address"))?,
            );
        }
    }
    if addresses.is_empty() {
        return Err(anyhow!("lists no address"));
    }
    Ok(addresses)
}

fn validate_qos(table: &'static str, key: &'static str, qos: u8) -> Result<(), Invalid> {
    if qos > 2 {
        return Err(invalid(Some(table), key, "must be 0, 1 or 2"));
    }
    Ok(())
}

fn validate_rate(table: &'static str, key: &'static str, rate: Option<f64>) -> Result<(), Invalid> {
    match rate {
        Some(rate) if !(rate > 0.0 && rate.is_finite()) => {
            Err(invalid(Some(table), key, "must be a positive number"))
        }
        _ => Ok(()),
    }
}

fn validate_topic_name(table: &'static str, key: &'static str, topic: &str) -> Result<(), Invalid> {
    // [MQTT-4.7.1-1] wildcards are not allowed in topic names.
    if topic.is_empty() || topic.contains('+') || topic.contains('#') {
        return Err(invalid(
            Some(table),
            key,
            "must be a non-empty topic name without wildcards",
        ));
    }
    Ok(())
}

fn validate_publishers(publishers: &Publishers) -> Result<(), Invalid> {
    const TABLE: &str = "publishers";
    validate_qos(TABLE, "qos", publishers.qos)?;
    validate_rate(TABLE, "rate", publishers.rate)?;
    validate_rate(TABLE, "total_rate", publishers.total_rate)?;
    validate_topic_name(TABLE, "topic", &publishers.topic)?;
    if publishers.rate.is_some() && publishers.total_rate.is_some() {
        return Err(invalid(
            Some(TABLE),
            "total_rate",
            "cannot be combined with `rate`",
        ));
    }
    if publishers.payload_template.is_none() && publishers.payload_bytes < HEADER_LEN {
        return Err(invalid(
            Some(TABLE),
            "payload_bytes",
            format!("must be at least {HEADER_LEN} (the swarm header)"),
        ));
    }
    if let Some(template) = &publishers.payload_template {
        Template::parse(template)
            .map_err(|error| invalid(Some(TABLE), "payload_template", error.to_string()))?;
    }
    if publishers.max_inflight == 0 {
        return Err(invalid(Some(TABLE), "max_inflight", "must be at least 1"));
    }
    validate_rate(
        TABLE,
        "reconnect_every_secs",
        publishers.reconnect_every_secs,
    )?;
    Ok(())
}

fn validate_subscribers(subscribers: &Subscribers) -> Result<(), Invalid> {
    const TABLE: &str = "subscribers";
    validate_qos(TABLE, "qos", subscribers.qos)?;
    validate_rate(TABLE, "consume_rate", subscribers.consume_rate)?;
    validate_rate(
        TABLE,
        "reconnect_every_secs",
        subscribers.reconnect_every_secs,
    )?;
    if subscribers.filter.is_empty() {
        return Err(invalid(Some(TABLE), "filter", "must not be empty"));
    }
    if let Some(group) = &subscribers.shared_group {
        // [MQTT-4.8.2-2] the share name has no `/`, `+` or `#`.
        if group.is_empty() || group.contains(['/', '+', '#']) {
            return Err(invalid(
                Some(TABLE),
                "shared_group",
                "must be a non-empty name without `/`, `+` or `#`",
            ));
        }
    }
    Ok(())
}

fn validate_tls(tls: &TlsSettings) -> Result<(), Invalid> {
    const TABLE: &str = "tls";
    if tls.ca_file.is_none() && !tls.insecure_skip_verify {
        return Err(invalid(
            Some(TABLE),
            "ca_file",
            "is needed (or `insecure_skip_verify = true`)",
        ));
    }
    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
        return Err(invalid(
            Some(TABLE),
            "client_cert_file",
            "and `client_key_file` go together",
        ));
    }
    Ok(())
}

fn validate_commands(commands: &Commands, protocol: Protocol) -> Result<(), Invalid> {
    const TABLE: &str = "commands";
    if protocol != Protocol::V5 {
        return Err(invalid(
            Some(TABLE),
            "devices",
            "needs protocol = \"5\" (response topic and correlation data are MQTT 5 properties)",
        ));
    }
    if commands.devices == 0 || commands.backends == 0 {
        return Err(invalid(
            Some(TABLE),
            "devices",
            "and `backends` must be at least 1",
        ));
    }
    validate_qos(TABLE, "qos", commands.qos)?;
    validate_rate(TABLE, "rate", commands.rate)?;
    validate_topic_name(TABLE, "command_topic", &commands.command_topic)?;
    validate_topic_name(TABLE, "response_topic", &commands.response_topic)?;
    if commands.payload_bytes < HEADER_LEN {
        return Err(invalid(
            Some(TABLE),
            "payload_bytes",
            format!("must be at least {HEADER_LEN} (the swarm header)"),
        ));
    }
    if commands.max_outstanding == 0 {
        return Err(invalid(
            Some(TABLE),
            "max_outstanding",
            "must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_scenario_parses() {
        let scenario = Scenario::from_toml(EXAMPLE_SCENARIO_TOML, "example.toml").unwrap();
        assert_eq!(scenario.name, "fleet telemetry");
        assert_eq!(scenario.publishers.as_ref().unwrap().count, 2000);
        assert_eq!(scenario.total_clients(), 2001);
    }

    #[test]
    fn typo_in_a_key_names_the_key_and_the_line() {
        let text = "name = \"t\"\nbroker = \"127.0.0.1:1884\"\n\n[publishers]\ncount = 10\npaylod_bytes = 64\n";
        let error = Scenario::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("line 6"), "{error}");
        assert!(error.contains("paylod_bytes"), "{error}");
        assert!(error.contains("t.toml"), "{error}");
    }

    #[test]
    fn typo_in_a_top_level_key_names_the_key_and_the_line() {
        let text = "duration_sec = 5\n[subscribers]\ncount = 1\n";
        let error = Scenario::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(error.contains("duration_sec"), "{error}");
    }

    #[test]
    fn invalid_value_names_the_key_and_the_line() {
        let text = "[subscribers]\ncount = 1\n\n[publishers]\ncount = 1\nqos = 3\n";
        let error = Scenario::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("line 6"), "{error}");
        assert!(error.contains("`publishers.qos`"), "{error}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = "[publishers]\ncount = \"ten\"\n";
        let error = Scenario::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn request_response_needs_mqtt_5() {
        let text = "protocol = \"3.1.1\"\n[commands]\ndevices = 10\n";
        let error = Scenario::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("commands.devices"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn scenario_without_clients_is_rejected() {
        let error = Scenario::from_toml("name = \"x\"\n", "t.toml").unwrap_err();
        assert!(error.to_string().contains("at least one client"), "{error}");
    }

    #[test]
    fn tls_needs_a_ca_file_or_insecure() {
        let text = "[subscribers]\ncount = 1\n\n[tls]\nserver_name = \"broker\"\n";
        let error = Scenario::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("`tls.ca_file`"), "{error}");
        let text = "broker = \"[::1]:8883\"\n[subscribers]\ncount = 1\n[tls]\ninsecure_skip_verify = true\n";
        let scenario = Scenario::from_toml(text, "t.toml").unwrap();
        assert_eq!(scenario.broker_host(), "::1");
    }

    #[test]
    fn source_address_ranges_expand() {
        let addresses = parse_source_addresses("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        assert_eq!(addresses.len(), 4);
        assert_eq!(addresses[3], "127.0.1.9".parse::<IpAddr>().unwrap());
        assert!(parse_source_addresses("127.0.0.9-127.0.0.1").is_err());
    }

    #[test]
    fn many_loopback_clients_get_several_source_addresses() {
        let text = "[subscribers]\ncount = 40000\n";
        let scenario = Scenario::from_toml(text, "t.toml").unwrap();
        let broker: SocketAddr = "127.0.0.1:1884".parse().unwrap();
        assert_eq!(scenario.source_addresses(broker).unwrap().len(), 4);
        assert_eq!(scenario.num_workers(), 3);
    }

    #[test]
    fn offered_rate_comes_from_rate_or_total_rate() {
        let text = "[publishers]\ncount = 10\nrate = 5.0\n";
        let mut scenario = Scenario::from_toml(text, "t.toml").unwrap();
        assert_eq!(scenario.offered_rate(), Some(50.0));
        scenario.set_offered_rate(1000.0);
        assert_eq!(scenario.offered_rate(), Some(1000.0));
    }
}
