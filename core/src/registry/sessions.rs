//! The sessions of one registry shard: a hash table of entries keyed by client id, where the
//! key is the id inside the entry's session handle, so the table keeps no second copy of it.
//!
//! This table is part of the memory of every connection (one entry per session); an entry is
//! 56 bytes, where a `HashMap<ByteString, Entry>` bucket took 104.

use std::hash::BuildHasher;

use bytestring::ByteString;
use hashbrown::HashTable;

use super::Entry;

/// The sessions of one shard (see the module docs).
#[derive(Default)]
pub(super) struct Sessions {
    table: HashTable<Entry>,
    /// Client ids are chosen by clients: keyed SipHash, as `HashMap` would use.
    hasher: std::hash::RandomState,
}

fn client_id(entry: &Entry) -> &str {
    entry.handle.client_id()
}

impl Sessions {
    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }

    /// Returns the entry of `id`.
    pub(super) fn get(&self, id: &str) -> Option<&Entry> {
        self.table
            .find(self.hash(id), |entry| client_id(entry) == id)
    }

    /// Returns the entry of `id` for changes.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let hash = self.hash(id);
        self.table.find_mut(hash, |entry| client_id(entry) == id)
    }

    /// Removes and returns the entry of `id`.
    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let hash = self.hash(id);
        self.table
            .find_entry(hash, |entry| client_id(entry) == id)
            .ok()
            .map(|found| found.remove().0)
    }

    /// Adds `entry`, replacing the entry of the same client id if there is one.
    pub(super) fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let previous = self.remove(client_id(&entry));
        let hash = self.hash(client_id(&entry));
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, entry, |entry| hasher.hash_one(client_id(entry)));
        previous
    }

    /// Every entry.
    pub(super) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.table.iter()
    }

    /// Every entry, for changes.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.table.iter_mut()
    }

    /// Every client id.
    pub(super) fn keys(&self) -> impl Iterator<Item = &ByteString> {
        self.table.iter().map(|entry| entry.handle.client_id())
    }

    /// Number of sessions.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        codec::ProtocolVersion,
        message::SessionId,
        session::{SessionHandle, SessionState},
    };

    fn entry(id: u64, client_id: &str, epoch: u64) -> Entry {
        let client_id = ByteString::from(client_id);
        let state = Box::new(SessionState::new(SessionId(id), ProtocolVersion::V5));
        Entry {
            handle: SessionHandle::new(SessionId(id), client_id, state),
            epoch,
            online: true,
            expires_at: None,
            will: None,
            connection: None,
        }
    }

    #[test]
    fn an_entry_stays_within_its_budget() {
        assert!(std::mem::size_of::<Entry>() <= 56);
        // Boxed in the entry of every connected session: the 32-byte size class.
        assert!(std::mem::size_of::<super::super::ConnectionInfo>() <= 32);
    }

    #[test]
    fn entries_are_found_replaced_and_removed_by_client_id() {
        let mut sessions = Sessions::default();
        assert!(sessions.insert(entry(1, "car-1", 1)).is_none());
        assert!(sessions.insert(entry(2, "car-2", 2)).is_none());
        assert_eq!(sessions.get("car-1").map(|entry| entry.epoch), Some(1));
        assert!(sessions.get("car-3").is_none());

        // The same client id replaces the entry and hands back the old one.
        let old = sessions.insert(entry(3, "car-1", 3)).expect("replaced");
        assert_eq!(old.handle.id(), SessionId(1));
        assert_eq!(sessions.len(), 2);
        let current = sessions.get_mut("car-1").expect("present");
        assert_eq!(current.handle.id(), SessionId(3));
        current.online = false;
        assert_eq!(sessions.values().filter(|entry| !entry.online).count(), 1);

        let mut keys: Vec<&str> = sessions.keys().map(|key| &**key).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["car-1", "car-2"]);
        assert_eq!(sessions.remove("car-2").map(|entry| entry.epoch), Some(2));
        assert!(sessions.remove("car-2").is_none());
        assert_eq!(sessions.len(), 1);
    }
}
