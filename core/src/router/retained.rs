//! Retained messages of one topic shard, in a trie keyed by topic level.

use std::{collections::HashMap, sync::Arc};

use tokio::time::Instant;

use crate::message::Message;

#[derive(Default)]
pub(crate) struct RetainedTree {
    root: RetainedNode,
    len: usize,
}

#[derive(Default)]
struct RetainedNode {
    children: HashMap<Box<str>, RetainedNode>,
    message: Option<Arc<Message>>,
}

impl RetainedNode {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }

    fn collect_all(&self, now: Instant, out: &mut Vec<Arc<Message>>) {
        if let Some(message) = &self.message {
            if message.remaining_expiry(now).is_ok() {
                out.push(message.clone());
            }
        }
        for child in self.children.values() {
            child.collect_all(now, out);
        }
    }

    fn collect(&self, levels: &[&str], is_root: bool, now: Instant, out: &mut Vec<Arc<Message>>) {
        let Some((first, rest)) = levels.split_first() else {
            if let Some(message) = &self.message {
                if message.remaining_expiry(now).is_ok() {
                    out.push(message.clone());
                }
            }
            return;
        };
        match *first {
            "#" => {
                // "a/#" also matches "a" itself [MQTT-4.7.1-2].
                if !is_root {
                    if let Some(message) = &self.message {
                        if message.remaining_expiry(now).is_ok() {
                            out.push(message.clone());
                        }
                    }
                }
                for (level, child) in &self.children {
                    // [MQTT-4.7.2-1] no '$' topics under a leading wildcard.
                    if is_root && level.starts_with('$') {
                        continue;
                    }
                    child.collect_all(now, out);
                }
            }
            "+" => {
                for (level, child) in &self.children {
                    if is_root && level.starts_with('$') {
                        continue;
                    }
                    child.collect(rest, false, now, out);
                }
            }
            literal => {
                if let Some(child) = self.children.get(literal) {
                    child.collect(rest, false, now, out);
                }
            }
        }
    }
}

impl RetainedTree {
    /// Returns the number of retained messages.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets (`Some`) or clears (`None`) the retained message of `topic`.
    pub(crate) fn set(&mut self, topic: &str, message: Option<Arc<Message>>) {
        let levels: Vec<&str> = topic.split('/').collect();
        match message {
            Some(message) => {
                let mut node = &mut self.root;
                for level in levels {
                    node = node.children.entry(level.into()).or_default();
                }
                if node.message.replace(message).is_none() {
                    self.len += 1;
                }
            }
            None => {
                if clear(&mut self.root, &levels) {
                    self.len -= 1;
                }
            }
        }
    }

    /// Appends every unexpired retained message matching `filter` to `out`.
    pub(crate) fn collect(&self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        let levels: Vec<&str> = filter.split('/').collect();
        self.root.collect(&levels, true, now, out);
    }

    /// Removes expired messages; returns how many.
    pub(crate) fn purge_expired(&mut self, now: Instant) -> usize {
        let purged = purge(&mut self.root, now);
        self.len -= purged;
        purged
    }
}

fn clear(node: &mut RetainedNode, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let cleared = clear(child, rest);
    if child.is_empty() {
        node.children.remove(*first);
    }
    cleared
}

fn purge(node: &mut RetainedNode, now: Instant) -> usize {
    let mut purged = 0;
    if node
        .message
        .as_ref()
        .is_some_and(|m| m.remaining_expiry(now).is_err())
    {
        node.message = None;
        purged += 1;
    }
    node.children.retain(|_, child| {
        purged += purge(child, now);
        !child.is_empty()
    });
    purged
}
