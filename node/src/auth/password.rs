//! The password file: one `user:credential` line per credential, `#` comments. A credential is
//! an argon2 PHC string (`$argon2id$...`, for the password field) or SCRAM-SHA-256 keys
//! (`$scram-sha-256$...`, for enhanced authentication). No plaintext password is ever written.
//! Files are replaced atomically (temporary file, fsync, rename) with mode 0600.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

use crate::auth::scram::{self, ScramCredential};

/// The credentials of one user.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserEntry {
    /// Argon2 PHC string.
    pub(crate) argon2: Option<String>,
    /// SCRAM-SHA-256 keys.
    pub(crate) scram: Option<ScramCredential>,
}

/// A parsed password file.
#[derive(Debug, Clone, Default)]
pub(crate) struct PasswordDb {
    users: HashMap<String, UserEntry>,
    /// Lines in file order, for rewriting.
    order: Vec<String>,
}

impl PasswordDb {
    /// Parses the file's text; errors name the line.
    pub(crate) fn parse(text: &str) -> anyhow::Result<PasswordDb> {
        let mut db = PasswordDb::default();
        for (idx, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, credential)) = line.split_once(':') else {
                anyhow::bail!("line {}: expected user:credential", idx + 1);
            };
            if user.is_empty() {
                anyhow::bail!("line {}: empty user name", idx + 1);
            }
            let entry = db.entry(user);
            if credential.starts_with("$argon2") {
                PasswordHash::new(credential).map_err(|error| {
                    anyhow::anyhow!("line {}: invalid argon2 hash: {error}", idx + 1)
                })?;
                entry.argon2 = Some(credential.to_string());
            } else if credential.starts_with("$scram-sha-256$") {
                let scram = ScramCredential::parse(credential).map_err(|error| {
                    anyhow::anyhow!("line {}: invalid SCRAM credential: {error}", idx + 1)
                })?;
                entry.scram = Some(scram);
            } else {
                anyhow::bail!(
                    "line {}: unknown credential (expected $argon2id$... or $scram-sha-256$...)",
                    idx + 1
                );
            }
        }
        Ok(db)
    }

    fn entry(&mut self, user: &str) -> &mut UserEntry {
        if !self.users.contains_key(user) {
            self.order.push(user.to_string());
        }
        self.users.entry(user.to_string()).or_default()
    }

    /// Returns the credentials of `user`.
    pub(crate) fn get(&self, user: &str) -> Option<&UserEntry> {
        self.users.get(user)
    }

    /// Number of users.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Renders the file.
    fn render(&self) -> String {
        let mut out = String::from(
            "# Starling password file: user:credential, managed with `starling passwd`.\n",
        );
        for user in &self.order {
            let Some(entry) = self.users.get(user) else {
                continue;
            };
            if let Some(argon2) = &entry.argon2 {
                out.push_str(&format!("{user}:{argon2}\n"));
            }
            if let Some(scram) = &entry.scram {
                out.push_str(&format!("{user}:{}\n", scram.render()));
            }
        }
        out
    }
}

/// Hashes `password` with argon2id (default parameters) and a random salt.
pub(crate) fn hash_password(password: &[u8]) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|error| anyhow::anyhow!("cannot encode the salt: {error}"))?;
    let hash = Argon2::default()
        .hash_password(password, &salt)
        .map_err(|error| anyhow::anyhow!("cannot hash the password: {error}"))?;
    Ok(hash.to_string())
}

/// Checks `password` against an argon2 PHC string (CPU-heavy: call off the async threads).
pub(crate) fn verify_password(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

/// Writes `text` to `path` atomically with mode 0600.
pub(crate) fn write_private_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the file path has no file name")?
        .to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn load_or_empty(path: &Path) -> anyhow::Result<PasswordDb> {
    match std::fs::read_to_string(path) {
        Ok(text) => PasswordDb::parse(&text).with_context(|| format!("in {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(PasswordDb::default()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Adds or replaces `user` (argon2 always, SCRAM keys with `scram_iterations`).
pub(crate) fn add_user(
    path: &Path,
    user: &str,
    password: &[u8],
    scram_iterations: Option<u32>,
) -> anyhow::Result<()> {
    if user.is_empty() || user.contains([':', '\n', '\r']) || user.starts_with('#') {
        anyhow::bail!("a user name must not be empty, start with '#' or contain ':' or newlines");
    }
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let scram = match scram_iterations {
        Some(iterations) => Some(scram_credential(user, password, iterations)?),
        None => None,
    };
    let mut db = load_or_empty(path)?;
    let argon2 = hash_password(password)?;
    let entry = db.entry(user);
    entry.argon2 = Some(argon2);
    entry.scram = scram;
    write_private_file(path, &db.render())
}

/// Derives SCRAM keys from the SASLprep form of the password (RFC 5802: clients prepare the
/// password the same way). The user name must already be in SASLprep form, since clients send
/// that form and the file is looked up by it.
fn scram_credential(
    user: &str,
    password: &[u8],
    iterations: u32,
) -> anyhow::Result<ScramCredential> {
    let prepared_user = scram::saslprep(user).map_err(|error| {
        anyhow::anyhow!(
            "user name {user:?} cannot be used with SCRAM: {error} (SASLprep, RFC 4013)"
        )
    })?;
    if prepared_user != user {
        anyhow::bail!(
            "user name {user:?} is not in SASLprep form; SCRAM clients send {prepared_user:?}, use that name"
        );
    }
    let password = std::str::from_utf8(password)
        .map_err(|_| anyhow::anyhow!("a SCRAM password must be UTF-8"))?;
    let prepared = scram::saslprep(password).map_err(|error| {
        anyhow::anyhow!("the password cannot be used with SCRAM: {error} (SASLprep, RFC 4013)")
    })?;
    if prepared.is_empty() {
        anyhow::bail!("the password is empty after SASLprep");
    }
    ScramCredential::derive(prepared.as_bytes(), iterations)
}

/// Removes `user`; returns false if it was not there.
pub(crate) fn remove_user(path: &Path, user: &str) -> anyhow::Result<bool> {
    let mut db = load_or_empty(path)?;
    if db.users.remove(user).is_none() {
        return Ok(false);
    }
    db.order.retain(|known| known != user);
    write_private_file(path, &db.render())?;
    Ok(true)
}

/// Lists users with the kinds of credential each has.
pub(crate) fn list_users(path: &Path) -> anyhow::Result<Vec<(String, Vec<&'static str>)>> {
    let db = load_or_empty(path)?;
    Ok(db
        .order
        .iter()
        .filter_map(|user| {
            let entry = db.users.get(user)?;
            let mut kinds = Vec::new();
            if entry.argon2.is_some() {
                kinds.push("argon2id");
            }
            if entry.scram.is_some() {
                kinds.push("scram-sha-256");
            }
            Some((user.clone(), kinds))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        add_user(&path, "alice", b"s3cret", Some(4096)).unwrap();
        add_user(&path, "bob", b"hunter2", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let db = PasswordDb::parse(&text).unwrap();
        let alice = db.get("alice").unwrap();
        assert!(verify_password(alice.argon2.as_ref().unwrap(), b"s3cret"));
        assert!(!verify_password(alice.argon2.as_ref().unwrap(), b"wrong"));
        assert!(alice.scram.is_some());
        assert!(db.get("bob").unwrap().scram.is_none());
        assert!(remove_user(&path, "alice").unwrap());
        assert!(!remove_user(&path, "alice").unwrap());
        let users = list_users(&path).unwrap();
        assert_eq!(users, vec![("bob".to_string(), vec!["argon2id"])]);
    }

    #[test]
    fn bad_lines_are_named() {
        let error = PasswordDb::parse("# c\nalice:plain\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(add_user(Path::new("/nonexistent/x"), "a:b", b"p", None).is_err());
    }
}
