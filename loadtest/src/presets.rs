//! Scenario presets behind the subcommands (`pairs`, `fan-in`, `fan-out`, `fleet`, `storm`,
//! `command`) and the flag overrides they share with scenario files.

use crate::cli::Overrides;
use crate::scenario::{Commands, Protocol, Publishers, Scenario, Subscribers};

/// JSON telemetry of one car.
const FLEET_TEMPLATE: &str = r#"{"vehicle":"car-{id}","ts":{ts_ms},"speed_kmh":{randf:0-180},"battery_pct":{rand:5-100},"lat":{randf:48.10-48.20},"lon":{randf:11.50-11.60}}"#;

fn base(name: &str) -> Scenario {
    // Every top-level key has a default, so an empty document is a scenario without clients.
    let mut scenario: Scenario = toml::from_str("").expect("an empty scenario parses");
    scenario.name = name.to_owned();
    scenario
}

fn publishers(count: usize, topic: &str) -> Publishers {
    let mut scenario: Scenario = toml::from_str(&format!("[publishers]\ncount = {count}\n"))
        .expect("the embedded publishers table parses");
    let mut publishers = scenario.publishers.take().expect("publishers were given");
    publishers.topic = topic.to_owned();
    publishers
}

fn subscribers(count: usize, filter: &str) -> Subscribers {
    let mut scenario: Scenario = toml::from_str(&format!("[subscribers]\ncount = {count}\n"))
        .expect("the embedded subscribers table parses");
    let mut subscribers = scenario.subscribers.take().expect("subscribers were given");
    subscribers.filter = filter.to_owned();
    subscribers
}

/// 1:1 pairs on `swarm/pair/{id}`.
pub(crate) fn pairs(num_pairs: usize, overrides: &Overrides) -> Scenario {
    let mut scenario = base("1:1 pairs");
    scenario.publishers = Some(publishers(num_pairs, "swarm/pair/{id}"));
    scenario.subscribers = Some(subscribers(num_pairs, "swarm/pair/{id}"));
    apply_overrides(&mut scenario, overrides);
    scenario
}

/// Many publishers to `swarm/fanin/{id}`, subscribers on `swarm/fanin/+`.
pub(crate) fn fan_in(
    num_publishers: usize,
    num_subscribers: usize,
    overrides: &Overrides,
) -> Scenario {
    let mut scenario = base("fan-in");
    scenario.publishers = Some(publishers(num_publishers, "swarm/fanin/{id}"));
    scenario.subscribers = Some(subscribers(num_subscribers, "swarm/fanin/+"));
    apply_overrides(&mut scenario, overrides);
    scenario
}

/// Publishers and subscribers of the one topic `swarm/fanout`.
pub(crate) fn fan_out(
    num_publishers: usize,
    num_subscribers: usize,
    overrides: &Overrides,
) -> Scenario {
    let mut scenario = base("fan-out");
    scenario.publishers = Some(publishers(num_publishers, "swarm/fanout"));
    scenario.subscribers = Some(subscribers(num_subscribers, "swarm/fanout"));
    apply_overrides(&mut scenario, overrides);
    scenario
}

/// The `fleet` subcommand's own arguments.
pub(crate) struct FleetArgs {
    pub(crate) cars: usize,
    pub(crate) backends: usize,
    pub(crate) interval_secs: f64,
    pub(crate) persistent: bool,
    pub(crate) car_churn_secs: Option<f64>,
}

/// Cars publishing JSON telemetry at QoS 1, backends on `fleet/+/telemetry`.
pub(crate) fn fleet(args: FleetArgs, overrides: &Overrides) -> Scenario {
    let mut scenario = base("fleet telemetry");
    let mut cars = publishers(args.cars, "fleet/{id}/telemetry");
    cars.qos = 1;
    cars.rate = Some(1.0 / args.interval_secs.max(1e-6));
    cars.payload_template = Some(FLEET_TEMPLATE.to_owned());
    cars.reconnect_every_secs = args.car_churn_secs;
    let mut backends = subscribers(args.backends, "fleet/+/telemetry");
    backends.qos = 1;
    if args.persistent {
        for (clean_start, session_expiry_secs) in [
            (&mut cars.clean_start, &mut cars.session_expiry_secs),
            (&mut backends.clean_start, &mut backends.session_expiry_secs),
        ] {
            *clean_start = false;
            *session_expiry_secs = 3600;
        }
    }
    scenario.publishers = Some(cars);
    scenario.subscribers = Some(backends);
    apply_overrides(&mut scenario, overrides);
    scenario
}

/// Clients that connect (and subscribe to `swarm/idle/{id}`) and stay idle.
pub(crate) fn storm(num_clients: usize, subscribe: bool, overrides: &Overrides) -> Scenario {
    let mut scenario = base("connection storm");
    scenario.duration_secs = 5.0;
    if subscribe {
        scenario.subscribers = Some(subscribers(num_clients, "swarm/idle/{id}"));
    } else {
        // Publishers that publish nothing: clients that only connect.
        let mut idle = publishers(num_clients, "swarm/idle/{id}");
        idle.max_messages = Some(0);
        scenario.publishers = Some(idle);
    }
    apply_overrides(&mut scenario, overrides);
    scenario
}

/// MQTT 5 request/response between backends and devices.
pub(crate) fn command(num_devices: usize, num_backends: usize, overrides: &Overrides) -> Scenario {
    let mut scenario = base("command request/response");
    scenario.protocol = Protocol::V5;
    let mut parsed: Scenario = toml::from_str(&format!(
        "protocol = \"5\"\n[commands]\ndevices = {num_devices}\nbackends = {num_backends}\n"
    ))
    .expect("the embedded commands table parses");
    let commands: Option<Commands> = parsed.commands.take();
    scenario.commands = commands;
    apply_overrides(&mut scenario, overrides);
    scenario
}

/// Applies the flags that were given.
pub(crate) fn apply_overrides(scenario: &mut Scenario, overrides: &Overrides) {
    fn set<T: Clone>(target: &mut T, value: &Option<T>) {
        if let Some(value) = value {
            *target = value.clone();
        }
    }
    set(&mut scenario.broker, &overrides.broker);
    set(&mut scenario.protocol, &overrides.protocol);
    set(&mut scenario.duration_secs, &overrides.duration);
    set(&mut scenario.ramp_secs, &overrides.ramp_secs);
    set(
        &mut scenario.max_concurrent_connects,
        &overrides.max_concurrent_connects,
    );
    set(&mut scenario.threads_per_worker, &overrides.threads);
    set(&mut scenario.keep_alive_secs, &overrides.keep_alive);
    set(
        &mut scenario.connect_timeout_ms,
        &overrides.connect_timeout_ms,
    );
    set(&mut scenario.settle_ms, &overrides.settle_ms);
    set(&mut scenario.drain_timeout_ms, &overrides.drain_timeout_ms);
    set(&mut scenario.drain_quiet_ms, &overrides.drain_quiet_ms);
    set(&mut scenario.name, &overrides.name);
    if overrides.workers.is_some() {
        scenario.workers = overrides.workers;
    }
    if overrides.connect_rate.is_some() {
        scenario.connect_rate = overrides.connect_rate;
    }
    if overrides.source_addrs.is_some() {
        scenario
            .source_addresses
            .clone_from(&overrides.source_addrs);
    }
    let wants_tls = overrides.tls_ca.is_some()
        || overrides.tls_insecure
        || overrides.tls_cert.is_some()
        || overrides.tls_server_name.is_some();
    if wants_tls {
        let tls = scenario.tls.get_or_insert_with(Default::default);
        if overrides.tls_ca.is_some() {
            tls.ca_file.clone_from(&overrides.tls_ca);
        }
        if overrides.tls_cert.is_some() {
            tls.client_cert_file.clone_from(&overrides.tls_cert);
            tls.client_key_file.clone_from(&overrides.tls_key);
        }
        if overrides.tls_server_name.is_some() {
            tls.server_name.clone_from(&overrides.tls_server_name);
        }
        tls.insecure_skip_verify |= overrides.tls_insecure;
    }
    if let Some(publishers) = &mut scenario.publishers {
        set(&mut publishers.qos, &overrides.qos);
        set(&mut publishers.payload_bytes, &overrides.payload_bytes);
        set(&mut publishers.max_inflight, &overrides.max_inflight);
        if overrides.rate.is_some() {
            publishers.rate = overrides.rate;
            publishers.total_rate = None;
        }
        if overrides.total_rate.is_some() {
            publishers.total_rate = overrides.total_rate;
            publishers.rate = None;
        }
        if overrides.max_messages.is_some() {
            publishers.max_messages = overrides.max_messages;
        }
        if overrides.payload_template.is_some() {
            publishers
                .payload_template
                .clone_from(&overrides.payload_template);
        }
    }
    if let Some(subscribers) = &mut scenario.subscribers {
        set(&mut subscribers.qos, &overrides.qos);
        if overrides.shared_group.is_some() {
            subscribers.shared_group.clone_from(&overrides.shared_group);
        }
        if overrides.consume_rate.is_some() {
            subscribers.consume_rate = overrides.consume_rate;
        }
        if overrides.reconnect_every_secs.is_some() {
            subscribers.reconnect_every_secs = overrides.reconnect_every_secs;
        }
        set(&mut subscribers.offline_ms, &overrides.offline_ms);
    }
    if let Some(commands) = &mut scenario.commands {
        set(&mut commands.qos, &overrides.qos);
        set(&mut commands.payload_bytes, &overrides.payload_bytes);
        let rate = overrides.total_rate.or(overrides.rate);
        if rate.is_some() {
            commands.rate = rate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_scenarios() {
        let overrides = Overrides::default();
        for scenario in [
            pairs(100, &overrides),
            fan_in(1000, 1, &overrides),
            fan_out(1, 1000, &overrides),
            fleet(
                FleetArgs {
                    cars: 100,
                    backends: 1,
                    interval_secs: 1.0,
                    persistent: true,
                    car_churn_secs: Some(5.0),
                },
                &overrides,
            ),
            storm(19_000, true, &overrides),
            storm(10, false, &overrides),
            command(100, 1, &overrides),
        ] {
            scenario.check().unwrap();
        }
    }

    #[test]
    fn overrides_replace_preset_values() {
        let overrides = Overrides {
            qos: Some(1),
            total_rate: Some(20_000.0),
            broker: Some("127.0.0.1:1884".to_owned()),
            ..Overrides::default()
        };
        let scenario = pairs(100, &overrides);
        assert_eq!(scenario.broker, "127.0.0.1:1884");
        assert_eq!(scenario.publishers.as_ref().unwrap().qos, 1);
        assert_eq!(scenario.subscribers.as_ref().unwrap().qos, 1);
        assert_eq!(scenario.offered_rate(), Some(20_000.0));
    }
}
