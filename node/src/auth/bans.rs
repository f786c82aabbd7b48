//! The ban list: client ids, user names, certificate serials and addresses (or CIDR ranges)
//! refused at CONNECT (CONNACK 0x8A) and kicked when connected (DISCONNECT 0x98). Kept in a
//! TOML file that the broker reloads on change and `starling ban` edits.

use std::{net::IpAddr, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::auth::password::write_private_file;

/// What a ban names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BanKind {
    /// A client identifier.
    ClientId,
    /// A user name.
    Username,
    /// A client certificate serial number (hex).
    CertSerial,
    /// An IP address or CIDR range.
    Address,
}

impl BanKind {
    /// The kind's name in `starling ban`, the ban listing and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            BanKind::ClientId => "client-id",
            BanKind::Username => "username",
            BanKind::CertSerial => "cert-serial",
            BanKind::Address => "address",
        }
    }
}

/// The file's content.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanFile {
    #[serde(default)]
    pub(crate) client_ids: Vec<String>,
    #[serde(default)]
    pub(crate) usernames: Vec<String>,
    #[serde(default)]
    pub(crate) cert_serials: Vec<String>,
    #[serde(default)]
    pub(crate) addresses: Vec<String>,
}

/// An address range.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is no IP address or CIDR range"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { base, prefix })
    }

    fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.base, addr) {
            (IpAddr::V4(base), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// Normalises a certificate serial: lowercase hex without separators or leading zeros.
pub(crate) fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The ban list in force.
#[derive(Debug, Clone, Default)]
pub(crate) struct BanList {
    client_ids: std::collections::HashSet<String>,
    usernames: std::collections::HashSet<String>,
    cert_serials: std::collections::HashSet<String>,
    addresses: Vec<Cidr>,
}

/// Who is checked against the list.
pub(crate) struct BanSubject<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) username: Option<&'a str>,
    pub(crate) cert_serial: Option<&'a str>,
    pub(crate) addr: IpAddr,
}

impl BanList {
    /// Parses the file's text.
    pub(crate) fn parse(text: &str) -> Result<BanList, String> {
        let file: BanFile = toml::from_str(text).map_err(|error| error.to_string())?;
        BanList::from_file(&file)
    }

    fn from_file(file: &BanFile) -> Result<BanList, String> {
        Ok(BanList {
            client_ids: file.client_ids.iter().cloned().collect(),
            usernames: file.usernames.iter().cloned().collect(),
            cert_serials: file
                .cert_serials
                .iter()
                .map(|s| normalize_serial(s))
                .collect(),
            addresses: file
                .addresses
                .iter()
                .map(|a| Cidr::parse(a))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.client_ids.len()
            + self.usernames.len()
            + self.cert_serials.len()
            + self.addresses.len()
    }

    /// Returns which kind of ban matches, if any.
    pub(crate) fn matches(&self, subject: &BanSubject<'_>) -> Option<&'static str> {
        if self.client_ids.contains(subject.client_id) {
            return Some("client_id");
        }
        if subject
            .username
            .is_some_and(|user| self.usernames.contains(user))
        {
            return Some("username");
        }
        if subject
            .cert_serial
            .is_some_and(|serial| self.cert_serials.contains(&normalize_serial(serial)))
        {
            return Some("cert_serial");
        }
        if self
            .addresses
            .iter()
            .any(|cidr| cidr.contains(subject.addr))
        {
            return Some("address");
        }
        None
    }
}

fn load_file(path: &Path) -> anyhow::Result<BanFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("invalid ban file {}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BanFile::default()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn list_of(file: &mut BanFile, kind: BanKind) -> &mut Vec<String> {
    match kind {
        BanKind::ClientId => &mut file.client_ids,
        BanKind::Username => &mut file.usernames,
        BanKind::CertSerial => &mut file.cert_serials,
        BanKind::Address => &mut file.addresses,
    }
}

/// Checks and normalises a value of `kind` as the file stores it.
pub(crate) fn normalize(kind: BanKind, value: &str) -> anyhow::Result<String> {
    match kind {
        BanKind::CertSerial => Ok(normalize_serial(value)),
        BanKind::Address => {
            Cidr::parse(value).map_err(|error| anyhow::anyhow!(error))?;
            Ok(value.trim().to_string())
        }
        _ if value.is_empty() => anyhow::bail!("the value is empty"),
        _ => Ok(value.to_string()),
    }
}

fn save(path: &Path, file: &BanFile) -> anyhow::Result<()> {
    let body = toml::to_string(file).context("cannot render the ban list")?;
    write_private_file(
        path,
        &format!("# Starling ban list, managed with `starling ban`; reloaded on change.\n{body}"),
    )
}

/// Adds a ban; returns false if it was there already.
pub(crate) fn add_ban(path: &Path, kind: BanKind, value: &str) -> anyhow::Result<bool> {
    let mut file = load_file(path)?;
    let value = normalize(kind, value)?;
    let list = list_of(&mut file, kind);
    if list.contains(&value) {
        return Ok(false);
    }
    list.push(value);
    save(path, &file)?;
    Ok(true)
}

/// Removes a ban; returns false if it was not there.
pub(crate) fn remove_ban(path: &Path, kind: BanKind, value: &str) -> anyhow::Result<bool> {
    let mut file = load_file(path)?;
    let value = normalize(kind, value)?;
    let list = list_of(&mut file, kind);
    let before = list.len();
    list.retain(|known| *known != value);
    if list.len() == before {
        return Ok(false);
    }
    save(path, &file)?;
    Ok(true)
}

/// Lists every ban as (kind, value).
pub(crate) fn list_bans(path: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let file = load_file(path)?;
    let mut out = Vec::new();
    for (kind, values) in [
        ("client-id", &file.client_ids),
        ("username", &file.usernames),
        ("cert-serial", &file.cert_serials),
        ("address", &file.addresses),
    ] {
        out.extend(values.iter().map(|value| (kind, value.clone())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_serial_matching() {
        let list = BanList::parse(
            "addresses = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ncert_serials = [\"00:0A:1b\"]\nusernames = [\"mallory\"]\n",
        )
        .unwrap();
        let subject =
            |addr: &str, serial: Option<&'static str>, user: Option<&'static str>| BanSubject {
                client_id: "c",
                username: user,
                cert_serial: serial,
                addr: addr.parse().unwrap(),
            };
        assert_eq!(
            list.matches(&subject("10.2.3.4", None, None)),
            Some("address")
        );
        assert_eq!(
            list.matches(&subject("::ffff:10.2.3.4", None, None)),
            Some("address")
        );
        assert_eq!(list.matches(&subject("11.0.0.1", None, None)), None);
        assert_eq!(
            list.matches(&subject("2001:db8::1", None, None)),
            Some("address")
        );
        assert_eq!(
            list.matches(&subject("127.0.0.1", Some("a1b"), None)),
            Some("cert_serial")
        );
        assert_eq!(
            list.matches(&subject("127.0.0.1", None, Some("mallory"))),
            Some("username")
        );
        assert!(BanList::parse("addresses = [\"10.0.0.0/33\"]").is_err());
    }

    #[test]
    fn add_remove_list_edit_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.toml");
        assert!(add_ban(&path, BanKind::ClientId, "bad-car").unwrap());
        assert!(!add_ban(&path, BanKind::ClientId, "bad-car").unwrap());
        assert!(add_ban(&path, BanKind::Address, "192.0.2.0/24").unwrap());
        assert!(add_ban(&path, BanKind::Address, "not an address").is_err());
        let list = BanList::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(list.len(), 2);
        assert!(remove_ban(&path, BanKind::ClientId, "bad-car").unwrap());
        assert_eq!(
            list_bans(&path).unwrap(),
            vec![("address", "192.0.2.0/24".to_string())]
        );
    }
}
