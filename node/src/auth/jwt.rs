//! JSON Web Tokens in the password field: HS256 with a shared secret, RS256 and ES256 with
//! public keys from a JWKS file; signatures checked with `ring`. `exp` is required and becomes
//! the connection's deadline; `nbf`, `iss` and `aud` are checked when present or configured.
//! Topic permissions come from two claims listing filters (publish and subscribe).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{hmac, signature};
use serde_json::Value;

use crate::config::JwtConfig;

/// A public key from the JWKS file.
#[derive(Debug, Clone)]
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    EcP256 { point: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

/// The verification keys (reloaded when their files change).
#[derive(Debug, Clone, Default)]
pub(crate) struct JwtKeys {
    hs256: Option<Vec<u8>>,
    jwks: Vec<Jwk>,
}

/// What a valid token says.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    /// The user (the username claim, else the MQTT user name).
    pub(crate) username: Option<String>,
    /// `exp`.
    pub(crate) expires_at: SystemTime,
    /// Filters the client may publish to (`None`: the claim is absent).
    pub(crate) publish: Option<Vec<String>>,
    /// Filters the client may subscribe to.
    pub(crate) subscribe: Option<Vec<String>>,
}

/// Why a token was refused (a fixed set: the reason label of the auth metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm or no key for it")]
    NoKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token claims do not match")]
    Claims,
}

/// Does the password look like a compact JWS (`xxx.yyy.zzz`, header starting `{"`)?
pub(crate) fn looks_like_jwt(password: &[u8]) -> bool {
    password.starts_with(b"eyJ") && password.iter().filter(|&&b| b == b'.').count() == 2
}

fn b64(value: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|error| error.to_string())
}

/// Loads the HS256 secret and the JWKS file named in `config`.
pub(crate) fn load_keys(config: &JwtConfig) -> anyhow::Result<JwtKeys> {
    let mut keys = JwtKeys::default();
    if let Some(path) = &config.hs256_secret_file {
        let mut secret = std::fs::read(path)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        if secret.len() < 32 {
            anyhow::bail!(
                "{}: an HS256 secret needs at least 32 bytes",
                path.display()
            );
        }
        keys.hs256 = Some(secret);
    }
    if let Some(path) = &config.jwks_file {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
        keys.jwks =
            parse_jwks(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    }
    Ok(keys)
}

fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let entries = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("expected {\"keys\": [...]}")?;
    let mut keys = Vec::new();
    for (idx, entry) in entries.iter().enumerate() {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        let kid = field("kid").map(str::to_string);
        let key = match (field("kty"), field("crv")) {
            (Some("RSA"), _) => {
                let (Some(n), Some(e)) = (field("n"), field("e")) else {
                    return Err(format!("key {}: RSA key without n and e", idx + 1));
                };
                PublicKey::Rsa {
                    n: b64(n).map_err(|error| format!("key {}: n: {error}", idx + 1))?,
                    e: b64(e).map_err(|error| format!("key {}: e: {error}", idx + 1))?,
                }
            }
            (Some("EC"), Some("P-256")) => {
                let (Some(x), Some(y)) = (field("x"), field("y")) else {
                    return Err(format!("key {}: EC key without x and y", idx + 1));
                };
                let (x, y) = (
                    b64(x).map_err(|error| format!("key {}: x: {error}", idx + 1))?,
                    b64(y).map_err(|error| format!("key {}: y: {error}", idx + 1))?,
                );
                if x.len() != 32 || y.len() != 32 {
                    return Err(format!(
                        "key {}: P-256 coordinates must be 32 bytes",
                        idx + 1
                    ));
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                PublicKey::EcP256 { point }
            }
            // Other key types (and private parts) are ignored: a JWKS may hold keys for others.
            _ => continue,
        };
        keys.push(Jwk { kid, key });
    }
    Ok(keys)
}

fn secs_to_time(secs: f64) -> SystemTime {
    if secs <= 0.0 {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH + Duration::from_secs_f64(secs.min(1e11))
    }
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::String(single) => Some(vec![single.clone()]),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect(),
        ),
        _ => Some(Vec::new()),
    }
}

/// Verifies `token` for a client presenting `username` and `client_id` at `now`.
pub(crate) fn verify(
    token: &[u8],
    keys: &JwtKeys,
    config: &JwtConfig,
    username: Option<&str>,
    client_id: &str,
    now: SystemTime,
) -> Result<VerifiedToken, JwtError> {
    let token = std::str::from_utf8(token).map_err(|_| JwtError::Malformed)?;
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = b64(header_b64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(JwtError::Malformed)?;
    let signature_bytes = b64(signature_b64).map_err(|_| JwtError::Malformed)?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    let kid = header.get("kid").and_then(Value::as_str);
    let alg = header.get("alg").and_then(Value::as_str);
    let find = |want_rsa: bool| {
        keys.jwks.iter().find(|jwk| {
            matches!(jwk.key, PublicKey::Rsa { .. }) == want_rsa
                && (kid.is_none() || jwk.kid.as_deref() == kid)
        })
    };
    // The algorithm decides the key type: a token can never pick HMAC with a public key.
    let verified = match alg {
        Some("HS256") => {
            let secret = keys.hs256.as_ref().ok_or(JwtError::NoKey)?;
            hmac::verify(
                &hmac::Key::new(hmac::HMAC_SHA256, secret),
                signed,
                &signature_bytes,
            )
            .is_ok()
        }
        Some("RS256") => match find(true).map(|jwk| &jwk.key) {
            Some(PublicKey::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signed,
                    &signature_bytes,
                )
                .is_ok(),
            _ => return Err(JwtError::NoKey),
        },
        Some("ES256") => match find(false).map(|jwk| &jwk.key) {
            Some(PublicKey::EcP256 { point }) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &signature_bytes)
                    .is_ok()
            }
            _ => return Err(JwtError::NoKey),
        },
        _ => return Err(JwtError::NoKey),
    };
    if !verified {
        return Err(JwtError::BadSignature);
    }
    let claims: Value = b64(claims_b64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(JwtError::Malformed)?;
    let leeway = config.leeway;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .map(secs_to_time)
        .ok_or(JwtError::Claims)?;
    if exp + leeway <= now {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64).map(secs_to_time) {
        if nbf > now + leeway {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(issuer) = &config.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(JwtError::Claims);
        }
    }
    if let Some(audience) = &config.audience {
        let audiences = string_list(claims.get("aud")).unwrap_or_default();
        if !audiences.iter().any(|aud| aud == audience) {
            return Err(JwtError::Claims);
        }
    }
    if let Some(claim) = &config.client_id_claim {
        if claims.get(claim).and_then(Value::as_str) != Some(client_id) {
            return Err(JwtError::Claims);
        }
    }
    let claimed_user = claims
        .get(&config.username_claim)
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(claimed), Some(given)) = (&claimed_user, username) {
        if claimed != given {
            return Err(JwtError::Claims);
        }
    }
    Ok(VerifiedToken {
        username: claimed_user.or_else(|| username.map(str::to_string)),
        expires_at: exp + leeway,
        publish: string_list(claims.get(&config.publish_claim)),
        subscribe: string_list(claims.get(&config.subscribe_claim)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JwtConfig {
        JwtConfig {
            hs256_secret_file: None,
            jwks_file: None,
            issuer: Some("fleet".to_string()),
            audience: None,
            username_claim: "sub".to_string(),
            client_id_claim: None,
            publish_claim: "mqtt_publish".to_string(),
            subscribe_claim: "mqtt_subscribe".to_string(),
            leeway: Duration::ZERO,
        }
    }

    fn hs256(secret: &[u8], header: &str, claims: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        );
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    #[test]
    fn hs256_token_verifies_and_claims_apply() {
        let secret = [9u8; 32];
        let keys = JwtKeys {
            hs256: Some(secret.to_vec()),
            jwks: Vec::new(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let good = hs256(
            &secret,
            header,
            r#"{"sub":"car-1","iss":"fleet","exp":2000,"mqtt_publish":["t/car-1/#"]}"#,
        );
        assert!(looks_like_jwt(good.as_bytes()));
        let token = verify(good.as_bytes(), &keys, &config(), Some("car-1"), "c", now).unwrap();
        assert_eq!(token.username.as_deref(), Some("car-1"));
        assert_eq!(token.publish, Some(vec!["t/car-1/#".to_string()]));
        assert_eq!(token.subscribe, None);
        assert_eq!(
            verify(good.as_bytes(), &keys, &config(), Some("car-2"), "c", now).unwrap_err(),
            JwtError::Claims
        );
        let expired = hs256(&secret, header, r#"{"iss":"fleet","exp":999}"#);
        assert_eq!(
            verify(expired.as_bytes(), &keys, &config(), None, "c", now).unwrap_err(),
            JwtError::Expired
        );
        let no_exp = hs256(&secret, header, r#"{"iss":"fleet"}"#);
        assert_eq!(
            verify(no_exp.as_bytes(), &keys, &config(), None, "c", now).unwrap_err(),
            JwtError::Claims
        );
        let other_key = hs256(&[8u8; 32], header, r#"{"iss":"fleet","exp":2000}"#);
        assert_eq!(
            verify(other_key.as_bytes(), &keys, &config(), None, "c", now).unwrap_err(),
            JwtError::BadSignature
        );
        let none_alg = hs256(
            &secret,
            r#"{"alg":"none"}"#,
            r#"{"iss":"fleet","exp":2000}"#,
        );
        assert_eq!(
            verify(none_alg.as_bytes(), &keys, &config(), None, "c", now).unwrap_err(),
            JwtError::NoKey
        );
        let wrong_iss = hs256(&secret, header, r#"{"iss":"other","exp":2000}"#);
        assert_eq!(
            verify(wrong_iss.as_bytes(), &keys, &config(), None, "c", now).unwrap_err(),
            JwtError::Claims
        );
    }

    #[test]
    fn es256_token_verifies_with_a_jwks_key() {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65])
        );
        let keys = JwtKeys {
            hs256: None,
            jwks: parse_jwks(&jwks).unwrap(),
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"fleet","exp":2000}"#)
        );
        let sig = pair.sign(&rng, signed.as_bytes()).unwrap();
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(verify(token.as_bytes(), &keys, &config(), None, "c", now).is_ok());
        // HS256 with the public key as the secret is refused (no HS256 secret configured).
        let forged = hs256(
            point,
            r#"{"alg":"HS256","kid":"k1"}"#,
            r#"{"iss":"fleet","exp":2000}"#,
        );
        assert_eq!(
            verify(forged.as_bytes(), &keys, &config(), None, "c", now).unwrap_err(),
            JwtError::NoKey
        );
    }
}
