//! Reads what the broker needs from X.509 certificates the TLS layer has already verified:
//! the identity of a client certificate (common name, subject alternative names, serial)
//! and the expiry of the server's own certificate.

use std::{fmt::Write, net::IpAddr};

use starling_core::transport::PeerCertificate;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_rest, certificate)| certificate)
}

/// Returns the identity of a verified client certificate; `None` if it cannot be parsed
/// (then the connection has no identity).
pub(crate) fn peer_certificate(der: &[u8]) -> Option<PeerCertificate> {
    let certificate = parse(der)?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_string);
    let mut subject_alt_names = Vec::new();
    if let Ok(Some(extension)) = certificate.subject_alternative_name() {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(text)
                | GeneralName::RFC822Name(text)
                | GeneralName::URI(text) => {
                    subject_alt_names.push((*text).to_string());
                }
                GeneralName::IPAddress(bytes) => {
                    let address = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(address) = address {
                        subject_alt_names.push(address.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(PeerCertificate {
        common_name,
        subject_alt_names,
        serial_hex: serial_hex(certificate.raw_serial()),
    })
}

/// Formats a DER integer as lowercase hex without separators or leading zero bytes (the
/// sign byte of a serial with its high bit set included), like `openssl x509 -serial`.
fn serial_hex(raw: &[u8]) -> String {
    let first_significant = raw
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    let mut hex = String::with_capacity(2 * raw.len());
    for byte in &raw[first_significant..] {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Returns the end of the validity of a certificate, in seconds since the Unix epoch.
pub(crate) fn not_after_unix_secs(der: &[u8]) -> Option<i64> {
    Some(parse(der)?.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_the_sign_byte_and_keeps_zero() {
        assert_eq!(serial_hex(&[0x00, 0x9a, 0x01]), "9a01");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn identity_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec![
            "device-7.example.com".to_string(),
            "10.1.2.3".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x8f, 0x01]));
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let peer = peer_certificate(certificate.der()).unwrap();
        assert_eq!(peer.common_name.as_deref(), Some("device-7"));
        assert_eq!(
            peer.subject_alt_names,
            vec!["device-7.example.com".to_string(), "10.1.2.3".to_string()]
        );
        assert_eq!(peer.serial_hex, "8f01");
        assert!(not_after_unix_secs(certificate.der()).unwrap() > 0);
        assert_eq!(peer_certificate(b"not a certificate"), None);
    }
}
