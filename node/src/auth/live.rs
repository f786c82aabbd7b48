//! The connections the provider authenticated, for revocation: kick every connection a new
//! ban matches, and close each connection when its credentials expire.
//!
//! A kick is sent while holding the map entry of the principal, and a closing connection
//! removes its entry (the same lock) before its session is handed on, so a kick never reaches
//! the next connection of the same client.

use std::{collections::BTreeSet, sync::Arc, time::SystemTime};

use dashmap::DashMap;
use parking_lot::Mutex;
use starling_core::{auth::Principal, codec::ReasonCode, session::SessionHandle};

struct LiveEntry {
    principal: Arc<Principal>,
    session: SessionHandle,
}

/// Connected principals and their expiry deadlines.
#[derive(Default)]
pub(crate) struct LiveConnections {
    entries: DashMap<u64, LiveEntry>,
    expiries: Mutex<BTreeSet<(SystemTime, u64)>>,
}

impl LiveConnections {
    pub(crate) fn insert(&self, principal: &Arc<Principal>, session: &SessionHandle) {
        if let Some(at) = principal.expires_at {
            self.expiries.lock().insert((at, principal.id));
        }
        self.entries.insert(
            principal.id,
            LiveEntry {
                principal: principal.clone(),
                session: session.clone(),
            },
        );
    }

    pub(crate) fn remove(&self, principal: &Principal) {
        self.entries.remove(&principal.id);
        if let Some(at) = principal.expires_at {
            self.expiries.lock().remove(&(at, principal.id));
        }
    }

    /// Number of connections.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Kicks the connection of principal `id` with `reason_code`; false if it is gone.
    pub(crate) fn kick(&self, id: u64, reason_code: ReasonCode) -> bool {
        match self.entries.get(&id) {
            Some(entry) => {
                entry.session.kick(reason_code);
                true
            }
            None => false,
        }
    }

    /// Kicks every connection whose principal `matches`; returns how many.
    pub(crate) fn kick_matching(
        &self,
        reason_code: ReasonCode,
        mut matches: impl FnMut(&Principal) -> bool,
    ) -> usize {
        let mut kicked = 0;
        for entry in self.entries.iter() {
            if matches(&entry.principal) {
                entry.session.kick(reason_code);
                kicked += 1;
            }
        }
        kicked
    }

    /// Kicks the connections whose credentials expired by `now` (DISCONNECT 0xA0); returns how
    /// many.
    pub(crate) fn kick_expired(&self, now: SystemTime) -> usize {
        let due: Vec<u64> = {
            let mut expiries = self.expiries.lock();
            let mut due = Vec::new();
            while let Some(&(at, id)) = expiries.first() {
                if at > now {
                    break;
                }
                expiries.pop_first();
                due.push(id);
            }
            due
        };
        due.into_iter()
            .filter(|id| self.kick(*id, ReasonCode::MaximumConnectTime))
            .count()
    }
}
