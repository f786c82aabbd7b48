//! Remembers successful argon2 verifications, so that a reconnect storm of devices with the right
//! password costs one argon2 hash per device instead of one per CONNECT.
//!
//! An entry is a keyed hash (HMAC-SHA-256 with a random key made at process start, never stored)
//! of the user name, the argon2 PHC string in force and the presented password: a changed hash
//! never matches an old entry, and the map holds nothing an attacker could test passwords
//! against without the key. Only successes are stored, so a wrong password always runs argon2
//! and fails. The map is bounded (oldest entries dropped first) and cleared whenever the
//! password file is reloaded.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;
use ring::hmac;

/// The cache of verified (user, hash, password) triples.
pub(crate) struct PasswordCache {
    key: hmac::Key,
    max_entries: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    set: HashSet<[u8; 32]>,
    /// Insertion order, for eviction.
    order: VecDeque<[u8; 32]>,
}

/// What identifies one verification.
pub(crate) type CacheKey = [u8; 32];

impl PasswordCache {
    /// An empty cache of at most `max_entries` (0: caching off).
    pub(crate) fn new(max_entries: usize) -> PasswordCache {
        let secret: [u8; 32] = rand::random();
        PasswordCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            max_entries,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Returns the key of `user` presenting `password` against the hash `phc`.
    pub(crate) fn key(&self, user: &str, phc: &str, password: &[u8]) -> CacheKey {
        let mut context = hmac::Context::with_key(&self.key);
        // Length prefixes keep the fields apart ("ab" + "c" is not "a" + "bc").
        for field in [user.as_bytes(), phc.as_bytes(), password] {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field);
        }
        let tag = context.sign();
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        key
    }

    /// Whether this exact verification succeeded before.
    pub(crate) fn contains(&self, key: &CacheKey) -> bool {
        self.max_entries > 0 && self.entries.lock().set.contains(key)
    }

    /// Remembers a successful verification.
    pub(crate) fn insert(&self, key: CacheKey) {
        if self.max_entries == 0 {
            return;
        }
        let mut entries = self.entries.lock();
        if !entries.set.insert(key) {
            return;
        }
        entries.order.push_back(key);
        while entries.set.len() > self.max_entries {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            entries.set.remove(&oldest);
        }
        debug_assert_eq!(entries.set.len(), entries.order.len());
    }

    /// Forgets everything (the password file changed).
    pub(crate) fn clear(&self) {
        let mut entries = self.entries.lock();
        entries.set.clear();
        entries.order.clear();
    }

    /// Number of remembered verifications.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_every_field_and_the_cache_is_bounded() {
        let cache = PasswordCache::new(2);
        let key = cache.key("alice", "$argon2id$one", b"pw");
        assert_ne!(key, cache.key("alice", "$argon2id$one", b"pw2"));
        assert_ne!(key, cache.key("alice", "$argon2id$two", b"pw"));
        assert_ne!(key, cache.key("alic", "e$argon2id$one", b"pw"));
        assert_ne!(
            key,
            PasswordCache::new(2).key("alice", "$argon2id$one", b"pw"),
            "the key is per process"
        );
        cache.insert(key);
        assert!(cache.contains(&key));
        let second = cache.key("bob", "$argon2id$b", b"x");
        let third = cache.key("carol", "$argon2id$c", b"y");
        cache.insert(second);
        cache.insert(third);
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&key), "the oldest entry went first");
        assert!(cache.contains(&third));
        cache.clear();
        assert!(!cache.contains(&third));
        let off = PasswordCache::new(0);
        let key = off.key("alice", "$argon2id$one", b"pw");
        off.insert(key);
        assert!(!off.contains(&key));
    }
}
