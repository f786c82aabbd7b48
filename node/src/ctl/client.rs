//! The blocking HTTP client of `starling ctl` (ureq, plain HTTP, no TLS stack).

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Talks to one node's admin API.
pub struct AdminClient {
    agent: ureq::Agent,
    base_url: String,
    token: Option<String>,
}

/// Characters a path segment keeps as they are (RFC 3986 unreserved).
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes one path segment, e.g. a client id holding `/` or spaces.
pub fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if is_unreserved(byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// HTTP method of a call.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// GET.
    Get,
    /// POST with a JSON body.
    Post,
    /// PUT with a JSON body.
    Put,
    /// DELETE.
    Delete,
}

impl AdminClient {
    /// Creates a client for the admin listener at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, token: Option<String>) -> AdminClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        AdminClient {
            agent: ureq::Agent::new_with_config(config),
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.filter(|token| !token.is_empty()),
        }
    }

    /// Calls `path` (e.g. `/api/v1/clients`) with `query` pairs and an optional JSON body;
    /// returns the decoded JSON answer.
    ///
    /// # Errors
    /// Returns an error if the node cannot be reached, or with the API's status and message
    /// when it answers with an error.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let authorization = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let result = match method {
            Method::Get | Method::Delete => {
                let mut request = match method {
                    Method::Get => self.agent.get(&url),
                    _ => self.agent.delete(&url),
                };
                for (key, value) in query {
                    request = request.query(key, value);
                }
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                request.call()
            }
            Method::Post | Method::Put => {
                let mut request = match method {
                    Method::Post => self.agent.post(&url),
                    _ => self.agent.put(&url),
                };
                for (key, value) in query {
                    request = request.query(key, value);
                }
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                let body = body.map_or_else(|| "{}".to_string(), Value::to_string);
                request
                    .header("content-type", "application/json")
                    .send(body)
            }
        };
        let mut response =
            result.with_context(|| format!("cannot reach the admin API at {url}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("cannot read the answer of {url}"))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{url} answered {status} with non-JSON: {text}"))?;
        if !status.is_success() {
            let message = value["message"].as_str().unwrap_or(&text);
            anyhow::bail!("{status}: {message}");
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("car-42_x.y~"), "car-42_x.y~");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }
}
