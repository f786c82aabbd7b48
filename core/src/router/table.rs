//! The subscription table of one topic shard: exact filters in a hash map, wildcard filters in a
//! trie, shared-subscription groups in a short list.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use smallvec::SmallVec;

use crate::{codec::SubscriptionOptions, message::SessionId, session::SessionHandle, topic};

/// One subscription as the router sees it.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) session: SessionHandle,
    pub(crate) options: SubscriptionOptions,
    /// Subscription identifier, 0 when none.
    pub(crate) subscription_id: u32,
}

#[derive(Default)]
struct TrieNode {
    children: HashMap<Box<str>, TrieNode>,
    plus: Option<Box<TrieNode>>,
    /// Subscribers whose filter ends with `#` right below this node.
    hash: Vec<Subscriber>,
    /// Subscribers whose filter ends at this node.
    here: Vec<Subscriber>,
}

impl TrieNode {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
    }

    fn for_each_match<'a>(
        &'a self,
        levels: &[&str],
        is_root: bool,
        dollar: bool,
        f: &mut impl FnMut(&'a Subscriber),
    ) {
        // [MQTT-4.7.2-1] a leading wildcard does not match a topic starting with '$'.
        let skip_wildcards = is_root && dollar;
        if !skip_wildcards {
            self.hash.iter().for_each(&mut *f);
        }
        let Some((first, rest)) = levels.split_first() else {
            self.here.iter().for_each(&mut *f);
            return;
        };
        if let Some(child) = self.children.get(*first) {
            child.for_each_match(rest, false, dollar, f);
        }
        if !skip_wildcards {
            if let Some(plus) = &self.plus {
                plus.for_each_match(rest, false, dollar, f);
            }
        }
    }
}

struct SharedGroup {
    group: Box<str>,
    filter: Box<str>,
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

/// Subscriptions owned by one topic shard.
#[derive(Default)]
pub(crate) struct SubscriptionTable {
    exact: HashMap<Box<str>, SmallVec<[Subscriber; 1]>>,
    wild: TrieNode,
    shared: Vec<SharedGroup>,
    num_subscriptions: usize,
}

fn upsert(list: &mut Vec<Subscriber>, subscriber: Subscriber) -> bool {
    if let Some(existing) = list
        .iter_mut()
        .find(|s| s.session.id() == subscriber.session.id())
    {
        *existing = subscriber;
        return true;
    }
    list.push(subscriber);
    false
}

fn remove_from(list: &mut Vec<Subscriber>, session_id: SessionId) -> bool {
    let before = list.len();
    list.retain(|s| s.session.id() != session_id);
    if list.is_empty() {
        list.shrink_to_fit();
    }
    list.len() != before
}

impl SubscriptionTable {
    /// Returns the number of subscriptions in this table.
    pub(crate) fn len(&self) -> usize {
        self.num_subscriptions
    }

    /// Adds or replaces a subscription; returns true if it replaced one of the same session.
    pub(crate) fn insert(
        &mut self,
        filter: &str,
        share_group: Option<&str>,
        subscriber: Subscriber,
    ) -> bool {
        let replaced = if let Some(group) = share_group {
            match self
                .shared
                .iter_mut()
                .find(|g| &*g.group == group && &*g.filter == filter)
            {
                Some(shared_group) => upsert(&mut shared_group.members, subscriber),
                None => {
                    self.shared.push(SharedGroup {
                        group: group.into(),
                        filter: filter.into(),
                        members: vec![subscriber],
                        next: AtomicUsize::new(0),
                    });
                    false
                }
            }
        } else if !filter.contains(['+', '#']) {
            let list = self.exact.entry(filter.into()).or_default();
            match list
                .iter_mut()
                .find(|s| s.session.id() == subscriber.session.id())
            {
                Some(existing) => {
                    *existing = subscriber;
                    true
                }
                None => {
                    list.push(subscriber);
                    false
                }
            }
        } else {
            let mut node = &mut self.wild;
            let mut levels = filter.split('/').peekable();
            let mut replaced = false;
            while let Some(level) = levels.next() {
                if level == "#" {
                    replaced = upsert(&mut node.hash, subscriber);
                    break;
                }
                node = if level == "+" {
                    node.plus.get_or_insert_with(Box::default)
                } else {
                    node.children.entry(level.into()).or_default()
                };
                if levels.peek().is_none() {
                    replaced = upsert(&mut node.here, subscriber);
                    break;
                }
            }
            replaced
        };
        if !replaced {
            self.num_subscriptions += 1;
        }
        replaced
    }

    /// Removes a session's subscription; returns true if it existed.
    pub(crate) fn remove(
        &mut self,
        filter: &str,
        share_group: Option<&str>,
        session_id: SessionId,
    ) -> bool {
        let removed = if let Some(group) = share_group {
            let Some(idx) = self
                .shared
                .iter()
                .position(|g| &*g.group == group && &*g.filter == filter)
            else {
                return false;
            };
            let removed = remove_from(&mut self.shared[idx].members, session_id);
            if self.shared[idx].members.is_empty() {
                self.shared.swap_remove(idx);
            }
            removed
        } else if !filter.contains(['+', '#']) {
            let Some(list) = self.exact.get_mut(filter) else {
                return false;
            };
            let before = list.len();
            list.retain(|s| s.session.id() != session_id);
            let removed = list.len() != before;
            if list.is_empty() {
                self.exact.remove(filter);
            }
            removed
        } else {
            let levels: Vec<&str> = filter.split('/').collect();
            remove_wild(&mut self.wild, &levels, session_id)
        };
        if removed {
            self.num_subscriptions -= 1;
        }
        removed
    }

    /// Calls `f` for every non-shared subscription matching `topic`.
    pub(crate) fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a Subscriber)) {
        if let Some(list) = self.exact.get(topic) {
            list.iter().for_each(&mut f);
        }
        if !self.wild.is_empty() {
            let levels: SmallVec<[&str; 8]> = topic.split('/').collect();
            self.wild
                .for_each_match(&levels, true, topic.starts_with('$'), &mut f);
        }
    }

    /// Calls `f` with one member, chosen round-robin, of every shared group matching `topic`.
    /// Online members are preferred; an offline member is chosen only if none is online.
    pub(crate) fn for_each_shared_match(&self, topic: &str, mut f: impl FnMut(&Subscriber)) {
        for group in &self.shared {
            if !topic::matches(&group.filter, topic) {
                continue;
            }
            let num_members = group.members.len();
            let start = group.next.fetch_add(1, Ordering::Relaxed);
            let chosen = (0..num_members)
                .map(|offset| &group.members[(start + offset) % num_members])
                .find(|member| member.session.is_online())
                .unwrap_or(&group.members[start % num_members]);
            f(chosen);
        }
    }
}

fn remove_wild(node: &mut TrieNode, levels: &[&str], session_id: SessionId) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return remove_from(&mut node.here, session_id);
    };
    if *first == "#" {
        return remove_from(&mut node.hash, session_id);
    }
    if *first == "+" {
        let Some(plus) = node.plus.as_mut() else {
            return false;
        };
        let removed = remove_wild(plus, rest, session_id);
        if plus.is_empty() {
            node.plus = None;
        }
        return removed;
    }
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_wild(child, rest, session_id);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

impl SubscriptionTable {
    /// Returns the number of shared-subscription groups (`$share/{group}/{filter}`).
    pub(crate) fn num_shared_groups(&self) -> usize {
        self.shared.len()
    }

    /// Returns true if a subscription (shared or not) matches `topic`; unlike
    /// [`SubscriptionTable::for_each_shared_match`] it leaves the round-robin position alone.
    pub(crate) fn has_match(&self, topic: &str) -> bool {
        let mut found = false;
        self.for_each_match(topic, |_| found = true);
        found
            || self
                .shared
                .iter()
                .any(|group| topic::matches(&group.filter, topic))
    }

    /// Calls `f(filter, share_group, subscriber)` for every subscription in the table; for
    /// operators (admin API), it walks the whole table.
    pub(crate) fn for_each_subscription(&self, mut f: impl FnMut(&str, Option<&str>, &Subscriber)) {
        for (filter, list) in &self.exact {
            for subscriber in list {
                f(filter, None, subscriber);
            }
        }
        let mut path = String::new();
        walk_trie(&self.wild, &mut path, true, &mut f);
        for group in &self.shared {
            for subscriber in &group.members {
                f(&group.filter, Some(&group.group), subscriber);
            }
        }
    }
}

/// Visits every subscriber of the trie below `node`; `path` is the filter prefix of `node`
/// (its levels joined by `/`; `is_root` tells the empty root prefix from an empty first level).
fn walk_trie(
    node: &TrieNode,
    path: &mut String,
    is_root: bool,
    f: &mut impl FnMut(&str, Option<&str>, &Subscriber),
) {
    let base_len = path.len();
    let with_level = |path: &mut String, level: &str| {
        path.truncate(base_len);
        if !is_root {
            path.push('/');
        }
        path.push_str(level);
    };
    if !node.hash.is_empty() {
        with_level(path, "#");
        for subscriber in &node.hash {
            f(path, None, subscriber);
        }
    }
    path.truncate(base_len);
    for subscriber in &node.here {
        f(path, None, subscriber);
    }
    for (level, child) in &node.children {
        with_level(path, level);
        walk_trie(child, path, false, f);
    }
    if let Some(plus) = &node.plus {
        with_level(path, "+");
        walk_trie(plus, path, false, f);
    }
    path.truncate(base_len);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytestring::ByteString;
    use proptest::prelude::*;

    use super::*;
    use crate::{codec::ProtocolVersion, session::SessionState, topic::TopicFilter};

    fn handle(id: u64) -> SessionHandle {
        let client_id = ByteString::from(format!("c{id}"));
        let state = Box::new(SessionState::new(SessionId(id), ProtocolVersion::V5));
        SessionHandle::new(SessionId(id), client_id, state)
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..4).prop_map(|levels| levels.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let filter_level = prop_oneof![level(), Just("+".to_string())];
        (prop::collection::vec(filter_level, 1..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_string());
            }
            levels.join("/")
        })
    }

    proptest! {
        /// The trie and exact map agree with the reference matcher on every topic.
        #[test]
        fn table_matches_like_the_reference_matcher(
            filters in prop::collection::vec(filter(), 1..12),
            topics in prop::collection::vec(topic(), 1..12),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut table = SubscriptionTable::default();
            let mut live: Vec<(u64, String)> = Vec::new();
            for (idx, filter) in filters.iter().enumerate() {
                let parsed = TopicFilter::from_validated(filter);
                let subscriber = Subscriber { session: handle(idx as u64 + 1), options: Default::default(), subscription_id: 0 };
                table.insert(&parsed.filter, None, subscriber);
                live.push((idx as u64 + 1, filter.clone()));
            }
            for index in removed {
                if live.is_empty() {
                    break;
                }
                let (session_id, filter) = live.remove(index.index(live.len()));
                prop_assert!(table.remove(&filter, None, SessionId(session_id)));
            }
            prop_assert_eq!(table.len(), live.len());
            for topic in &topics {
                let mut matched = BTreeSet::new();
                table.for_each_match(topic, |s| { matched.insert(s.session.id().0); });
                let expected: BTreeSet<u64> = live
                    .iter()
                    .filter(|(_, filter)| crate::topic::matches(filter, topic))
                    .map(|(id, _)| *id)
                    .collect();
                prop_assert_eq!(matched, expected, "topic {:?}", topic);
            }
        }
    }

    #[test]
    fn shared_group_delivers_round_robin() {
        let mut table = SubscriptionTable::default();
        for id in 1..=3 {
            let subscriber = Subscriber {
                session: handle(id),
                options: Default::default(),
                subscription_id: 0,
            };
            table.insert("a/+", Some("g"), subscriber);
        }
        let mut chosen = Vec::new();
        for _ in 0..6 {
            table.for_each_shared_match("a/x", |s| chosen.push(s.session.id().0));
        }
        // Every member is offline, so plain round robin over all three.
        assert_eq!(chosen.len(), 6);
        for id in 1..=3 {
            assert_eq!(chosen.iter().filter(|&&c| c == id).count(), 2);
        }
        assert!(table.remove("a/+", Some("g"), SessionId(2)));
        let mut after = BTreeSet::new();
        for _ in 0..4 {
            table.for_each_shared_match("a/x", |s| {
                after.insert(s.session.id().0);
            });
        }
        assert_eq!(after, BTreeSet::from([1, 3]));
    }
}
