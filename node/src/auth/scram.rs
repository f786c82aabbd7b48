//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced authentication method: the
//! client-first message in CONNECT (or AUTH 0x19), server-first in AUTH 0x18, client-final in
//! AUTH 0x18, server-final in CONNACK (or AUTH 0x00). No channel binding; passwords are used
//! as given (no SASLprep). The server stores only StoredKey and ServerKey.

use std::num::NonZeroU32;

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use ring::{digest, hmac, pbkdf2};
use starling_core::{
    auth::{AuthDecision, AuthExchange, AuthMethod},
    codec::ReasonCode,
};

/// The method name in CONNECT and AUTH.
pub(crate) const METHOD: &str = "SCRAM-SHA-256";

/// Iterations `starling passwd --scram` uses unless told otherwise.
pub(crate) const DEFAULT_ITERATIONS: u32 = 4096;

/// Stored SCRAM keys of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScramCredential {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let hash = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ScramCredential {
    /// Derives the keys of `password` with a random salt.
    pub(crate) fn derive(password: &[u8], iterations: u32) -> anyhow::Result<ScramCredential> {
        let salt: [u8; 16] = rand::random();
        ScramCredential::derive_with_salt(password, &salt, iterations)
    }

    /// Derives the keys of `password` with `salt`.
    pub(crate) fn derive_with_salt(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> anyhow::Result<ScramCredential> {
        let rounds = NonZeroU32::new(iterations)
            .filter(|_| iterations >= 4096)
            .ok_or_else(|| anyhow::anyhow!("SCRAM needs at least 4096 iterations"))?;
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            password,
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Ok(ScramCredential {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        })
    }

    /// Parses `$scram-sha-256$i=4096$salt$storedkey$serverkey` (base64).
    pub(crate) fn parse(text: &str) -> Result<ScramCredential, String> {
        let parts: Vec<&str> = text.split('$').collect();
        let [_, "scram-sha-256", iterations, salt, stored, server] = parts.as_slice() else {
            return Err("expected $scram-sha-256$i=N$salt$storedkey$serverkey".to_string());
        };
        let iterations = iterations
            .strip_prefix("i=")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .ok_or("bad iteration count")?;
        let decode = |value: &str| STANDARD.decode(value).map_err(|error| error.to_string());
        let key = |value: &str| -> Result<[u8; 32], String> {
            decode(value)?
                .try_into()
                .map_err(|_| "a key is not 32 bytes".to_string())
        };
        Ok(ScramCredential {
            iterations,
            salt: decode(salt)?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Renders the stored form.
    pub(crate) fn render(&self) -> String {
        format!(
            "$scram-sha-256$i={}${}${}${}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Builds the final decision once the user proved its password (bans, principal).
pub(crate) type OnSuccess = Box<dyn FnOnce(&str) -> AuthDecision + Send + Sync>;

/// The server between server-first and client-final.
struct ScramServer {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    username: String,
    credential: ScramCredential,
    /// False for an unknown user: the exchange runs on with made-up keys and then fails, so
    /// unknown and known users look alike.
    known: bool,
    on_success: OnSuccess,
}

/// Prepares a SCRAM user name or password with SASLprep (RFC 4013, as RFC 5802 requires):
/// non-ASCII spaces become spaces, compatibility characters their NFKC form (U+2168 `Ⅸ` is
/// `IX`), soft hyphens and the like vanish.
///
/// # Errors
/// Refuses a string with a character SASLprep prohibits (controls, private use, unassigned
/// code points, bad bidirectional text).
pub(crate) fn saslprep(text: &str) -> Result<String, stringprep::Error> {
    stringprep::saslprep(text).map(|prepared| prepared.into_owned())
}

fn refuse(reason: &'static str) -> AuthDecision {
    AuthDecision::Refuse(AuthMethod::Scram, ReasonCode::BadUserNameOrPassword, reason)
}

/// Decodes a SCRAM `saslname` (`=2C` is ',', `=3D` is '=').
fn decode_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(idx) = rest.find('=') {
        out.push_str(&rest[..idx]);
        match rest.get(idx..idx + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[idx + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// Starts an exchange on the client-first message. `lookup` returns the user's credential;
/// `fake_secret` makes the salt of unknown users stable. `expected_user`, if set, must be
/// the user the client names (the MQTT user name, or the user of a re-authentication).
pub(crate) fn start(
    client_first: Option<&[u8]>,
    lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    fake_secret: &[u8; 32],
    expected_user: Option<&str>,
    on_success: OnSuccess,
) -> AuthDecision {
    let Some(text) = client_first.and_then(|data| std::str::from_utf8(data).ok()) else {
        return refuse("SCRAM client-first message missing or not UTF-8");
    };
    // gs2-header: "n,," or "y,," (no channel binding, no authorization identity).
    let (gs2_header, bare) = if let Some(bare) = text.strip_prefix("n,,") {
        ("n,,", bare)
    } else if let Some(bare) = text.strip_prefix("y,,") {
        ("y,,", bare)
    } else {
        return refuse("SCRAM channel binding and authzid are not supported");
    };
    let mut username = None;
    let mut client_nonce = None;
    for (idx, attribute) in bare.split(',').enumerate() {
        match (idx, attribute.split_at_checked(2)) {
            (0, Some(("n=", name))) => username = decode_name(name),
            (1, Some(("r=", nonce))) if !nonce.is_empty() => client_nonce = Some(nonce),
            (_, Some(("m=", _))) => return refuse("SCRAM mandatory extensions are not supported"),
            (idx, _) if idx < 2 => return refuse("malformed SCRAM client-first message"),
            _ => {}
        }
    }
    let (Some(username), Some(client_nonce)) = (username, client_nonce) else {
        return refuse("malformed SCRAM client-first message");
    };
    // Users are stored prepared (`starling passwd` refuses others), so look up the prepared name.
    let Ok(username) = saslprep(&username) else {
        return refuse("SCRAM user name holds a character SASLprep prohibits");
    };
    if expected_user.is_some_and(|expected| saslprep(expected).ok().as_deref() != Some(&*username))
    {
        return AuthDecision::Refuse(
            AuthMethod::Scram,
            ReasonCode::NotAuthorized,
            "SCRAM user differs from the user name",
        );
    }
    let (credential, known) = match lookup(&username) {
        Some(credential) => (credential, true),
        None => {
            let salt = hmac_sha256(fake_secret, username.as_bytes());
            let credential = ScramCredential {
                iterations: DEFAULT_ITERATIONS,
                salt: salt[..16].to_vec(),
                stored_key: rand::random(),
                server_key: rand::random(),
            };
            (credential, false)
        }
    };
    let server_nonce: [u8; 18] = rand::random();
    let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&credential.salt),
        credential.iterations
    );
    AuthDecision::Continue {
        method: AuthMethod::Scram,
        data: Bytes::from(server_first.clone()),
        exchange: Box::new(ScramServer {
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            username,
            credential,
            known,
            on_success,
        }),
    }
}

impl AuthExchange for ScramServer {
    fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthDecision {
        let Some(text) = data.and_then(|data| std::str::from_utf8(data).ok()) else {
            return refuse("SCRAM client-final message missing or not UTF-8");
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return refuse("SCRAM client-final message without proof");
        };
        let mut attributes = without_proof.split(',');
        let channel_binding = attributes.next().and_then(|a| a.strip_prefix("c="));
        let nonce = attributes.next().and_then(|a| a.strip_prefix("r="));
        if channel_binding != Some(&*STANDARD.encode(&self.gs2_header))
            || nonce != Some(&*self.nonce)
        {
            return refuse("SCRAM client-final message does not match the exchange");
        }
        let Ok(proof) = STANDARD.decode(proof) else {
            return refuse("SCRAM proof is not base64");
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return refuse("SCRAM proof has the wrong length");
        }
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&sha256(&client_key), &self.credential.stored_key) || !self.known {
            return refuse("SCRAM proof does not match");
        }
        let server_signature = hmac_sha256(&self.credential.server_key, auth_message.as_bytes());
        match (self.on_success)(&self.username) {
            AuthDecision::Accept { principal, .. } => AuthDecision::Accept {
                principal,
                data: Some(Bytes::from(format!(
                    "v={}",
                    STANDARD.encode(server_signature)
                ))),
            },
            other => other,
        }
    }
}

/// The client side, for the unit tests.
#[cfg(test)]
mod client {
    use super::*;

    /// Client state after client-first.
    pub(super) struct ScramClient {
        bare: String,
        nonce: String,
        password: Vec<u8>,
    }

    impl ScramClient {
        /// Starts an exchange for `user`.
        pub(super) fn new(user: &str, password: &[u8]) -> (ScramClient, String) {
            let nonce = STANDARD.encode(rand::random::<[u8; 18]>());
            let name = user.replace('=', "=3D").replace(',', "=2C");
            let bare = format!("n={name},r={nonce}");
            let first = format!("n,,{bare}");
            (
                ScramClient {
                    bare,
                    nonce,
                    password: password.to_vec(),
                },
                first,
            )
        }

        /// Answers server-first; returns client-final and the server-final to expect.
        pub(super) fn finish(&self, server_first: &str) -> Result<(String, String), String> {
            let mut nonce = None;
            let mut salt = None;
            let mut iterations = None;
            for attribute in server_first.split(',') {
                match attribute.split_at_checked(2) {
                    Some(("r=", value)) => nonce = Some(value),
                    Some(("s=", value)) => salt = STANDARD.decode(value).ok(),
                    Some(("i=", value)) => iterations = value.parse::<u32>().ok(),
                    _ => {}
                }
            }
            let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
                return Err("malformed server-first".to_string());
            };
            if !nonce.starts_with(&self.nonce) {
                return Err("server nonce does not extend ours".to_string());
            }
            let credential = ScramCredential::derive_with_salt(&self.password, &salt, iterations)
                .map_err(|error| error.to_string())?;
            let without_proof = format!("c={},r={nonce}", STANDARD.encode("n,,"));
            let auth_message = format!("{},{server_first},{without_proof}", self.bare);
            let rounds = NonZeroU32::new(iterations).ok_or("zero iterations")?;
            let mut salted = [0u8; 32];
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA256,
                rounds,
                &salt,
                &self.password,
                &mut salted,
            );
            let client_key = hmac_sha256(&salted, b"Client Key");
            let signature = hmac_sha256(&credential.stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(signature)
                .map(|(k, s)| k ^ s)
                .collect();
            let server_signature = hmac_sha256(&credential.server_key, auth_message.as_bytes());
            Ok((
                format!("{without_proof},p={}", STANDARD.encode(proof)),
                format!("v={}", STANDARD.encode(server_signature)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{client::ScramClient, *};

    #[test]
    fn credential_round_trips_through_its_text_form() {
        let credential = ScramCredential::derive(b"pw", 4096).unwrap();
        assert_eq!(
            ScramCredential::parse(&credential.render()).unwrap(),
            credential
        );
        assert!(ScramCredential::derive(b"pw", 10).is_err());
    }

    #[test]
    fn rfc7677_test_vector_keys() {
        // RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::derive_with_salt(b"pencil", &salt, 4096).unwrap();
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let auth_message = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        );
        let server_signature = hmac_sha256(&credential.server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    fn accept(user: &str) -> AuthDecision {
        AuthDecision::Refuse(
            AuthMethod::Scram,
            ReasonCode::Success,
            if user == "alice" { "ok" } else { "?" },
        )
    }

    #[test]
    fn full_exchange_and_wrong_password() {
        let stored = ScramCredential::derive(b"s3cret", 4096).unwrap();
        for (password, expect_ok) in [(&b"s3cret"[..], true), (&b"nope"[..], false)] {
            let (client, first) = ScramClient::new("alice", password);
            let lookup = |user: &str| (user == "alice").then(|| stored.clone());
            let AuthDecision::Continue { data, exchange, .. } = start(
                Some(first.as_bytes()),
                lookup,
                &[7; 32],
                None,
                Box::new(accept),
            ) else {
                panic!("expected server-first");
            };
            let (client_final, _expected) =
                client.finish(std::str::from_utf8(&data).unwrap()).unwrap();
            match exchange.step(Some(client_final.as_bytes())) {
                AuthDecision::Refuse(_, ReasonCode::Success, "ok") => assert!(expect_ok),
                AuthDecision::Refuse(_, ReasonCode::BadUserNameOrPassword, _) => {
                    assert!(!expect_ok)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
