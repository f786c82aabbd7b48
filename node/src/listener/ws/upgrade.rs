//! The HTTP/1.1 upgrade that opens a WebSocket (RFC 6455 section 4.2): checks the request,
//! picks the `mqtt` subprotocol and answers 101, or answers an HTTP error and fails.

use std::io;

use base64::Engine;
use bytes::BytesMut;
use starling_core::transport::Transport;

use super::WsTransport;

/// Largest upgrade request accepted (request line and headers).
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Headers an upgrade request may have.
const MAX_HEADERS: usize = 64;

/// The GUID RFC 6455 appends to the key to compute `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Subprotocols the broker speaks, preferred first: `mqtt` (MQTT 3.1.1 and 5.0) and
/// `mqttv3.1`, which some MQTT 3.1 clients ask for.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The request was answered with an HTTP error status.
    #[error("upgrade refused with HTTP {status}: {reason}")]
    Refused {
        /// HTTP status sent.
        status: u16,
        /// Why.
        reason: &'static str,
    },
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a valid upgrade request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Upgrade {
    accept_key: String,
    subprotocol: Option<&'static str>,
}

fn refused(status: u16, reason: &'static str) -> UpgradeError {
    UpgradeError::Refused { status, reason }
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Computes `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(client_key: &str) -> String {
    let mut input = client_key.trim().as_bytes().to_vec();
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Checks a parsed request against RFC 6455 and the listener's `path`.
fn check_request(request: &httparse::Request<'_, '_>, path: &str) -> Result<Upgrade, UpgradeError> {
    if request.method != Some("GET") {
        return Err(refused(405, "the upgrade must be a GET"));
    }
    if request.version != Some(1) {
        return Err(refused(400, "the upgrade needs HTTP/1.1"));
    }
    let request_path = request.path.unwrap_or_default();
    let request_path = request_path.split('?').next().unwrap_or_default();
    if request_path != path {
        return Err(refused(404, "no WebSocket endpoint at this path"));
    }
    let mut is_upgrade = false;
    let mut connection_upgrade = false;
    let mut version_13 = false;
    let mut key = None;
    let mut offered_protocols = None::<Vec<String>>;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            is_upgrade |= header_has_token(header.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= header_has_token(header.value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_13 |= header.value == b"13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = std::str::from_utf8(header.value).ok();
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let offered = offered_protocols.get_or_insert_with(Vec::new);
            for protocol in String::from_utf8_lossy(header.value).split(',') {
                offered.push(protocol.trim().to_ascii_lowercase());
            }
        }
    }
    if !(is_upgrade && connection_upgrade) {
        return Err(refused(400, "not a WebSocket upgrade request"));
    }
    if !version_13 {
        return Err(refused(426, "Sec-WebSocket-Version must be 13"));
    }
    let Some(key) = key.filter(|key| !key.trim().is_empty()) else {
        return Err(refused(400, "Sec-WebSocket-Key is missing"));
    };
    // A client that offers no subprotocol is served anyway; one that offers others only is
    // refused, since it expects one of them.
    let subprotocol = match offered_protocols {
        None => None,
        Some(offered) => match SUBPROTOCOLS
            .iter()
            .find(|protocol| offered.iter().any(|offer| offer == *protocol))
        {
            Some(protocol) => Some(*protocol),
            None => return Err(refused(400, "Sec-WebSocket-Protocol must offer mqtt")),
        },
    };
    Ok(Upgrade {
        accept_key: accept_key(key),
        subprotocol,
    })
}

/// Writes `bytes` to `transport` and waits until they have left it.
async fn write_all<T: Transport>(transport: &T, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        transport.writable().await?;
        match transport.try_write(bytes) {
            Ok(num_bytes) => bytes = &bytes[num_bytes..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    while transport.has_pending_output() {
        transport.writable().await?;
    }
    Ok(())
}

async fn respond_error<T: Transport>(transport: &T, error: UpgradeError) -> UpgradeError {
    if let UpgradeError::Refused { status, reason } = &error {
        let status_text = match status {
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let extra = if *status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 {status} {status_text}\r\nConnection: close\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}\n",
            reason.len() + 1
        );
        if write_all(transport, response.as_bytes()).await.is_ok() {
            let _ = transport.shutdown_write();
            let _ = write_all(transport, &[]).await;
        }
    }
    error
}

/// Reads the upgrade request from `inner`, checks it and answers 101 Switching Protocols with
/// the `mqtt` subprotocol (no timeout here: the listener bounds it).
///
/// # Errors
/// Answers a bad request with an HTTP error status and returns why.
pub(crate) async fn accept<T: Transport>(
    inner: T,
    path: &str,
) -> Result<WsTransport<T>, UpgradeError> {
    let mut request = BytesMut::new();
    loop {
        inner.readable().await?;
        request.reserve(1024);
        match inner.try_read_buf(&mut request) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.into()),
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let checked = match parsed.parse(&request) {
            Ok(httparse::Status::Complete(request_len)) => {
                check_request(&parsed, path).map(|upgrade| (upgrade, request_len))
            }
            Ok(httparse::Status::Partial) if request.len() <= MAX_REQUEST_BYTES => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                Err(refused(431, "upgrade request too large"))
            }
            Err(_) => Err(refused(400, "malformed HTTP request")),
        };
        let (upgrade, request_len) = match checked {
            Ok(checked) => checked,
            Err(error) => return Err(respond_error(&inner, error).await),
        };
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            upgrade.accept_key
        );
        if let Some(subprotocol) = upgrade.subprotocol {
            response.push_str("Sec-WebSocket-Protocol: ");
            response.push_str(subprotocol);
            response.push_str("\r\n");
        }
        response.push_str("\r\n");
        write_all(&inner, response.as_bytes()).await?;
        let leftover = request.split_off(request_len);
        return Ok(WsTransport::new(inner, leftover));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, path: &str) -> Result<Upgrade, UpgradeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(raw.as_bytes()).unwrap().is_complete());
        check_request(&parsed, path)
    }

    const REQUEST: &str = "GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n";

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_request_picks_mqtt() {
        let upgrade = check(REQUEST, "/mqtt").unwrap();
        assert_eq!(upgrade.subprotocol, Some("mqtt"));
        assert_eq!(upgrade.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let with_query = REQUEST.replace("GET /mqtt ", "GET /mqtt?x=1 ");
        assert!(check(&with_query, "/mqtt").is_ok());
        let without_protocol = REQUEST.replace("Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n", "");
        assert_eq!(check(&without_protocol, "/mqtt").unwrap().subprotocol, None);
    }

    #[test]
    fn invalid_requests_get_their_status() {
        let status = |raw: &str| match check(raw, "/mqtt") {
            Err(UpgradeError::Refused { status, .. }) => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(&REQUEST.replace("/mqtt", "/other")), 404);
        assert_eq!(status(&REQUEST.replace("GET", "POST")), 405);
        assert_eq!(status(&REQUEST.replace("Upgrade: websocket\r\n", "")), 400);
        assert_eq!(status(&REQUEST.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(status(&REQUEST.replace("mqttv3.1, mqtt", "chat")), 400);
    }
}
