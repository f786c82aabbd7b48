//! Tests of the `[listeners.<name>]` tables: settings, `STARLING_LISTEN`, errors naming the key
//! and its line.

use std::collections::HashMap;

use super::*;
use crate::config::load_node_config;

fn load(text: &str) -> anyhow::Result<Vec<ListenerConfig>> {
    load_node_config(text, "starling.toml", &HashMap::new()).map(|config| config.listeners)
}

fn error_of(text: &str) -> String {
    match load(text) {
        Ok(listeners) => panic!("accepted: {listeners:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn named_listeners_load_with_their_settings() {
    let text = r#"version = "1"

[listeners.tcp]
bind = "127.0.0.1:1883"

[listeners.secure]
protocol = "tls"
bind = "0.0.0.0:8883"
cert_file = "/etc/starling/server.pem"
key_file = "/etc/starling/server.key"
client_ca_file = "/etc/starling/ca.pem"
crl_file = "/etc/starling/crl.pem"
cert_identity = "both"
cert_identity_source = "san"
max_connections = 100
max_connect_rate_per_sec = 20

[listeners.web]
protocol = "ws"
bind = "0.0.0.0:8080"
path = "/ws"
"#;
    let listeners = load(text).unwrap();
    assert_eq!(listeners.len(), 3);
    let secure = listeners.iter().find(|l| l.name == "secure").unwrap();
    assert_eq!(secure.protocol, ListenerProtocol::Tls);
    assert_eq!(secure.max_connections, Some(100));
    assert_eq!(secure.max_connect_rate_per_sec, Some(20));
    let tls = secure.tls.as_ref().unwrap();
    assert_eq!(
        tls.client_auth,
        ClientAuth::Required,
        "a CA implies required"
    );
    assert_eq!(
        tls.cert_identity,
        CertIdentityPolicy {
            source: CertIdentitySource::SubjectAltName,
            as_username: true,
            as_client_id: true,
        }
    );
    assert_eq!(tls.reload_interval, Some(Duration::from_secs(5)));
    let web = listeners.iter().find(|l| l.name == "web").unwrap();
    assert_eq!(web.websocket_path.as_deref(), Some("/ws"));
    assert!(web.tls.is_none());
    let tcp = listeners.iter().find(|l| l.name == "tcp").unwrap();
    assert_eq!(tcp.protocol, ListenerProtocol::Tcp);
    assert_eq!(tcp.websocket_path, None);
}

#[test]
fn starling_listen_moves_the_tcp_listener_only() {
    let env = HashMap::from([("STARLING_LISTEN".to_string(), "127.0.0.1:0".to_string())]);
    let text = "version = \"1\"\n[listeners.wss]\nprotocol = \"wss\"\nbind = \"0.0.0.0:8084\"\ncert_file = \"a\"\nkey_file = \"b\"\n";
    let config = load_node_config(text, "starling.toml", &env).unwrap();
    assert_eq!(config.listeners.len(), 1, "no tcp listener is added");
    assert_eq!(config.listeners[0].bind, "0.0.0.0:8084".parse().unwrap());
    assert_eq!(config.listeners[0].websocket_path.as_deref(), Some("/mqtt"));
    let config = load_node_config("", "none", &env).unwrap();
    assert_eq!(config.tcp_listen(), Some("127.0.0.1:0".parse().unwrap()));
}

#[test]
fn listener_errors_name_the_key_and_its_line() {
    let text = "version = \"1\"\n[listeners.tcp]\nbind = \"0.0.0.0:1883\"\ncert_file = \"x\"\n\n[listeners.secure]\nprotocol = \"tls\"\nbind = \"0.0.0.0:8883\"\ncert_file = \"x\"\nkey_file = \"y\"\n";
    let error = error_of(text);
    assert!(
        error.contains("listeners.tcp.cert_file") && error.contains("line 4"),
        "{error}"
    );
    let text = "version = \"1\"\n[listeners.tcp]\nbind = \"0.0.0.0:1883\"\n\n[listeners.secure]\nprotocol = \"tls\"\nbind = \"0.0.0.0:8883\"\ncert_file = \"x\"\n";
    let error = error_of(text);
    assert!(
        error.contains("listeners.secure.key_file") && error.contains("line 5"),
        "the missing key points at its table: {error}"
    );
    let text = "version = \"1\"\n[listeners.secure]\nprotocol = \"tls\"\nbind = \"0.0.0.0:8883\"\ncert_file = \"x\"\nkey_file = \"y\"\nclient_auth = \"required\"\n";
    let error = error_of(text);
    assert!(
        error.contains("listeners.secure.client_auth") && error.contains("line 7"),
        "{error}"
    );
    let text = "version = \"1\"\n[listeners.web]\nprotocol = \"ws\"\nbind = \"0.0.0.0:8080\"\npath = \"mqtt\"\n";
    let error = error_of(text);
    assert!(
        error.contains("listeners.web.path") && error.contains("line 5"),
        "{error}"
    );
    let text = "version = \"1\"\n[listeners.web]\nprotocol = \"quic\"\nbind = \"0.0.0.0:8080\"\n";
    let error = error_of(text);
    assert!(
        error.contains("quic") && error.contains("line 3"),
        "{error}"
    );
    let text = "version = \"1\"\n[listeners.web]\nbind = \"0.0.0.0:8080\"\nmax_conections = 3\n";
    let error = error_of(text);
    assert!(
        error.contains("max_conections") && error.contains("line 4"),
        "{error}"
    );
    let text = "version = \"1\"\n[listeners.peer]\nbind = \"0.0.0.0:7946\"\n";
    let error = error_of(text);
    assert!(
        error.contains("listeners.peer") && error.contains("reserved"),
        "{error}"
    );
}
