//! The client half of SCRAM-SHA-256 (RFC 5802) on `ring`, written independently of the
//! broker's, and the helpers of the SCRAM tests: a user in a password file with SCRAM keys and
//! a CONNECT/AUTH/CONNACK exchange against a broker.

use std::num::NonZeroU32;

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use ring::{digest, hmac, pbkdf2};
use starling_core::codec::{Auth, AuthProperties, ByteString, Packet, ProtocolVersion, ReasonCode};

use super::{raw::connect_packet, RawClient, TestBroker};

pub const METHOD: &str = "SCRAM-SHA-256";

/// The client half of SCRAM-SHA-256 (RFC 5802), written independently of the broker's.
pub struct Scram {
    bare: String,
    nonce: String,
    password: Vec<u8>,
}

pub fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

impl Scram {
    pub fn new(user: &str, password: &str) -> (Scram, String) {
        let nonce = STANDARD.encode(rand_bytes());
        let bare = format!("n={user},r={nonce}");
        let first = format!("n,,{bare}");
        (
            Scram {
                bare,
                nonce,
                password: password.as_bytes().to_vec(),
            },
            first,
        )
    }

    /// Returns client-final and the server-final to expect.
    pub fn answer(&self, server_first: &str) -> (String, String) {
        let field = |key: &str| {
            server_first
                .split(',')
                .find_map(|kv| kv.strip_prefix(key))
                .unwrap()
                .to_string()
        };
        let nonce = field("r=");
        assert!(nonce.starts_with(&self.nonce));
        let salt = STANDARD.decode(field("s=")).unwrap();
        let iterations: u32 = field("i=").parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            &self.password,
            &mut salted,
        );
        let client_key = hmac256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = hmac256(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac256(&salted, b"Server Key");
        let server_signature = hmac256(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            format!("v={}", STANDARD.encode(server_signature)),
        )
    }
}

pub fn rand_bytes() -> [u8; 18] {
    let mut bytes = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes
}

pub fn auth_packet(reason_code: ReasonCode, data: &str) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(ByteString::from(METHOD)),
            authentication_data: Some(Bytes::copy_from_slice(data.as_bytes())),
            ..AuthProperties::default()
        },
    })
}

pub fn auth_data(packet: &Packet) -> String {
    let data = match packet {
        Packet::Auth(auth) => auth.properties.authentication_data.clone(),
        Packet::ConnAck(connack) => connack.properties.authentication_data.clone(),
        other => panic!("expected AUTH or CONNACK, got {other:?}"),
    };
    String::from_utf8(data.unwrap_or_default().to_vec()).unwrap()
}

pub fn add_user(file: &std::path::Path, user: &str, password: &str) {
    try_add_user(file, user, password).unwrap();
}

/// Runs `starling passwd FILE add USER --scram` with `password`; the error as text.
pub fn try_add_user(file: &std::path::Path, user: &str, password: &str) -> Result<(), String> {
    match super::auth::passwd(file, &["add", user, "--scram"], &format!("{password}\n")) {
        (true, _) => Ok(()),
        (false, error) => Err(error),
    }
}

/// SCRAM at CONNECT (the client sends `password` as given, unprepared); returns the client and the CONNACK reason code.
pub async fn scram_connect(
    broker: &TestBroker,
    user: &str,
    password: &str,
) -> (RawClient, ReasonCode) {
    let (scram, first) = Scram::new(user, password);
    // The client id keeps only the plain characters of the user name (which may hold anything).
    let plain: String = user.chars().filter(char::is_ascii_alphanumeric).collect();
    let mut connect = connect_packet(ProtocolVersion::V5, &format!("scram-{plain}"));
    connect.properties.authentication_method = Some(ByteString::from(METHOD));
    connect.properties.authentication_data = Some(Bytes::from(first));
    let mut client = RawClient::open(broker.addr).await;
    client.send(Packet::Connect(Box::new(connect))).await;
    let server_first = client.recv().await;
    match &server_first {
        Packet::Auth(auth) => assert_eq!(auth.reason_code, ReasonCode::ContinueAuthentication),
        // Refused on the client-first message already.
        Packet::ConnAck(connack) => return (client, connack.reason_code),
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
    let server_final = send_client_final(&mut client, &scram, &server_first).await;
    let connack = match client.recv().await {
        Packet::ConnAck(connack) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if connack.reason_code == ReasonCode::Success {
        assert_eq!(
            connack.properties.authentication_method.as_deref(),
            Some(METHOD)
        );
        assert_eq!(
            auth_data(&Packet::ConnAck(connack.clone())),
            server_final,
            "server signature"
        );
    }
    (client, connack.reason_code)
}

/// Re-authenticates a connected client as `user` with `password` (AUTH 0x19, then the
/// client-final in AUTH 0x18); returns the server-final the broker's AUTH 0x00 must carry. The
/// caller reads the outcome (AUTH 0x00, or DISCONNECT).
pub async fn scram_reauthenticate(client: &mut RawClient, user: &str, password: &str) -> String {
    let (scram, first) = Scram::new(user, password);
    client
        .send(auth_packet(ReasonCode::ReAuthenticate, &first))
        .await;
    let server_first = client.recv().await;
    send_client_final(client, &scram, &server_first).await
}

/// Answers the server-first message in `server_first` with the client-final (AUTH 0x18);
/// returns the server-final to expect.
async fn send_client_final(client: &mut RawClient, scram: &Scram, server_first: &Packet) -> String {
    let (client_final, server_final) = scram.answer(&auth_data(server_first));
    client
        .send(auth_packet(
            ReasonCode::ContinueAuthentication,
            &client_final,
        ))
        .await;
    server_final
}
