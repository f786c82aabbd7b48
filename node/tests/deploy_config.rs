//! The deploy files and the node agree: the Helm chart's ConfigMap (rendered with its default
//! values and with overrides), the plain Kubernetes ConfigMap and the Dockerfile's environment
//! all pass `starling config check`, with the environment their pods set, and the container
//! command is one the binary accepts. The node refuses unknown configuration keys, so a key the
//! node does not know in a deploy file would keep every pod from starting.
#![allow(clippy::unwrap_used)]

#[path = "deploy_support/gotemplate.rs"]
mod gotemplate;

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use gotemplate::Value;

fn deploy_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The `starling.toml: |` block of a ConfigMap manifest, dedented.
fn toml_block(manifest: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("starling.toml: |"));
    let header = lines.next().expect("a starling.toml key");
    let key_indent = header.len() - header.trim_start().len();
    let mut block_indent = None;
    let mut toml = String::new();
    for line in lines {
        if line.trim().is_empty() {
            toml.push('\n');
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent <= key_indent {
            break;
        }
        let block_indent = *block_indent.get_or_insert(indent);
        toml.push_str(line.get(block_indent..).unwrap_or(line.trim_start()));
        toml.push('\n');
    }
    toml
}

/// The `- name: X` / `value: "..."` pairs of a container's `env:` list (`valueFrom` entries get
/// `value_from(name)`); the text is not rendered.
fn env_entries(manifest: &str) -> Vec<(String, Option<String>)> {
    let mut entries: Vec<(String, Option<String>)> = Vec::new();
    let mut in_env = false;
    for line in manifest.lines() {
        let text = line.trim();
        if text == "env:" {
            in_env = true;
            continue;
        }
        if !in_env {
            continue;
        }
        if text == "ports:" {
            break;
        }
        if let Some(name) = text.strip_prefix("- name: ") {
            entries.push((name.trim().to_owned(), None));
        } else if let Some(value) = text.strip_prefix("value: ") {
            entries.last_mut().expect("value after name").1 =
                Some(value.trim().trim_matches('"').to_owned());
        }
    }
    assert!(!entries.is_empty(), "no env entries found");
    entries
}

/// The environment a pod of the StatefulSet gets: downward-API values filled in, `$(VAR)`
/// references expanded as Kubernetes does.
fn pod_env(entries: Vec<(String, Option<String>)>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (name, value) in entries {
        let value = match (name.as_str(), value) {
            ("STARLING_NODE_ID", None) => "starling-0".to_owned(),
            ("POD_IP", None) => "10.1.2.3".to_owned(),
            ("STARLING_ADMIN_TOKEN", None) => "from-a-secret".to_owned(),
            (_, Some(value)) => value,
            (name, None) => panic!("{name} has neither a value nor a known valueFrom"),
        };
        let expanded = env
            .iter()
            .fold(value, |text: String, (key, val): (&String, &String)| {
                text.replace(&format!("$({key})"), val)
            });
        env.insert(name, expanded);
    }
    env
}

/// Runs `starling config check --config <toml>` with exactly `env`; returns its output.
fn config_check(toml: &str, env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starling.toml");
    std::fs::write(&path, toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "starling config check refused the file:\n{}\n--- starling.toml ---\n{toml}\n--- env ---\n{env:?}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn chart_values() -> Value {
    gotemplate::parse_values(&deploy_file("helm/starling/values.yaml"))
}

/// Renders the ConfigMap's `data` (its metadata uses chart helpers this test does not render).
fn render_chart_config(values: &Value) -> String {
    let template = deploy_file("helm/starling/templates/configmap.yaml");
    let data = &template[template.find("\ndata:").expect("a data section")..];
    toml_block(&gotemplate::render(data, values))
}

fn chart_pod_env(values: &Value) -> BTreeMap<String, String> {
    let statefulset = deploy_file("helm/starling/templates/statefulset.yaml");
    let entries = env_entries(&statefulset)
        .into_iter()
        .map(|(name, value)| (name, value.map(|v| gotemplate::render(&v, values))))
        .collect();
    pod_env(entries)
}

#[test]
fn the_chart_renders_a_config_the_node_accepts_with_default_values() {
    let values = chart_values();
    let toml = render_chart_config(&values);
    assert!(
        toml.starts_with("# Rendered by the starling helm chart"),
        "{toml}"
    );
    assert!(!toml.contains("{{"), "unrendered template:\n{toml}");
    let env = chart_pod_env(&values);
    assert_eq!(env["STARLING_LISTEN"], "0.0.0.0:1883");
    let stdout = config_check(&toml, &env);
    assert!(
        stdout.contains("configuration is valid: mqtt listeners tcp (tcp on 0.0.0.0:1883)"),
        "{stdout}"
    );
    // The values arrive in the node's configuration.
    let config =
        starling_node::load_node_config(&toml, "chart", &env.into_iter().collect()).unwrap();
    assert_eq!(config.admin.bind, "0.0.0.0:8080".parse().unwrap());
    assert!(config.admin.metrics);
    assert_eq!(config.broker.max_connections, 1_000_000);
    assert_eq!(config.node_id, "starling-0");
}

#[test]
fn the_chart_renders_a_config_the_node_accepts_with_every_value_overridden() {
    let mut values = chart_values();
    values.set("ports.admin", Value::plain("9090"));
    values.set("config.log.level", Value::plain("debug"));
    values.set("config.log.format", Value::plain("text"));
    values.set("config.shutdown.drainTimeoutMs", Value::plain("2500"));
    values.set("config.engine.maxConnections", Value::plain("5000"));
    values.set("config.admin.metrics", Value::plain("false"));
    values.set("config.admin.sysIntervalSecs", Value::plain("0"));
    values.set("config.mqtt.max_packet_size_bytes", Value::plain("1048576"));
    values.set("config.mqtt.allow_anonymous", Value::plain("false"));
    values.set(
        "config.mqtt.queue_full_policy",
        Value::Scalar {
            text: "drop_oldest".to_owned(),
            quoted: true,
        },
    );
    values.set(
        "config.mqtt.deny_subscribe",
        Value::List(vec![Value::Scalar {
            text: "private/#".to_owned(),
            quoted: true,
        }]),
    );
    values.set(
        "config.extraToml",
        Value::Scalar {
            text: "[listeners.tcp]\nbind = \"0.0.0.0:2883\"".to_owned(),
            quoted: true,
        },
    );
    let toml = render_chart_config(&values);
    let env = chart_pod_env(&values);
    config_check(&toml, &env);
    let mut env: std::collections::HashMap<String, String> = env.into_iter().collect();
    env.remove("STARLING_LISTEN");
    let config = starling_node::load_node_config(&toml, "chart", &env)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.admin.bind, "0.0.0.0:9090".parse().unwrap());
    assert!(!config.admin.metrics);
    assert_eq!(config.broker.max_connections, 5000);
    assert_eq!(config.drain_timeout, std::time::Duration::from_millis(2500));
    assert_eq!(config.log_level, "debug");
    assert_eq!(config.broker.limits.max_packet_size, 1_048_576);
    assert!(!config.broker.limits.allow_anonymous);
    assert_eq!(
        config.broker.limits.deny_subscribe,
        vec!["private/#".to_owned()]
    );
    assert_eq!(config.tcp_listen(), Some("0.0.0.0:2883".parse().unwrap()));
}

#[test]
fn a_key_the_node_does_not_know_is_caught() {
    // The check is real: the cluster tables the chart once rendered are refused.
    let mut values = chart_values();
    values.set(
        "config.extraToml",
        Value::Scalar {
            text: "[cluster]\ncluster_name = \"starling\"".to_owned(),
            quoted: true,
        },
    );
    let toml = render_chart_config(&values);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starling.toml");
    std::fs::write(&path, &toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success(), "{toml}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cluster"));
}

#[test]
fn the_plain_manifests_give_a_config_the_node_accepts() {
    let toml = toml_block(&deploy_file("k8s/configmap.yaml"));
    assert!(toml.contains("version = \"1\""), "{toml}");
    let env = pod_env(env_entries(&deploy_file("k8s/statefulset.yaml")));
    let stdout = config_check(&toml, &env);
    assert!(stdout.contains("0.0.0.0:1883"), "{stdout}");
    let config = starling_node::load_node_config(&toml, "k8s", &env.into_iter().collect()).unwrap();
    assert_eq!(config.admin.bind, "0.0.0.0:8080".parse().unwrap());
}

#[test]
fn the_containers_run_a_command_the_binary_accepts() {
    // The StatefulSets mount the ConfigMap where their args point.
    for (statefulset, configmap_name) in [
        (
            deploy_file("helm/starling/templates/statefulset.yaml"),
            "starling.toml",
        ),
        (deploy_file("k8s/statefulset.yaml"), "starling.toml"),
    ] {
        assert!(
            statefulset.contains(r#"args: ["serve", "--config", "/etc/starling/starling.toml"]"#),
            "{statefulset}"
        );
        assert!(statefulset.contains("mountPath: /etc/starling"));
        assert!(configmap_name == "starling.toml");
    }
    let serve_help = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["serve", "--config", "/etc/starling/starling.toml", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(serve_help.status.success());
    // The image: ENTRYPOINT ["starling"], CMD ["serve"], and its ENV, with the defaults.
    let dockerfile = deploy_file("Dockerfile");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["starling"]"#));
    assert!(dockerfile.contains(r#"CMD ["serve"]"#));
    let env_text = dockerfile
        .split("\nENV ")
        .last()
        .unwrap()
        .split("\nVOLUME")
        .next()
        .unwrap();
    let env: BTreeMap<String, String> = env_text
        .split('\\')
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(env.len(), 3, "{env:?}");
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["config", "check"])
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
