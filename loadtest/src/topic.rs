//! Topic templates and the fan-out table that turns sent counts into expected deliveries.

use std::collections::HashMap;

/// Replaces `{id}` in a topic or filter template.
pub(crate) fn render(template: &str, id: u32) -> String {
    if template.contains("{id}") {
        template.replace("{id}", &id.to_string())
    } else {
        template.to_owned()
    }
}

/// Returns true when the MQTT topic filter `filter` matches the topic name `topic`.
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1] filters starting with a wildcard do not match `$` topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        match filter_level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Splits `$share/{group}/{filter}` into group and filter.
pub(crate) fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/')
}

/// Counts, for any topic, how many subscriptions receive a message published to it.
#[derive(Debug, Default)]
pub(crate) struct FanoutTable {
    /// Filters without wildcards, with the number of subscriptions on each.
    exact: HashMap<String, u64>,
    /// Filters with wildcards, deduplicated, with their number of subscriptions.
    wildcard: Vec<(String, u64)>,
}

impl FanoutTable {
    /// Adds one subscription. A shared subscription is added once per group by the caller,
    /// since its group receives each message once.
    pub(crate) fn add(&mut self, filter: &str) {
        if filter.contains('+') || filter.contains('#') {
            match self.wildcard.iter_mut().find(|(known, _)| known == filter) {
                Some((_, count)) => *count += 1,
                None => self.wildcard.push((filter.to_owned(), 1)),
            }
        } else {
            *self.exact.entry(filter.to_owned()).or_default() += 1;
        }
    }

    /// Returns the number of deliveries of one message published to `topic`.
    pub(crate) fn fanout(&self, topic: &str) -> u64 {
        let exact = self.exact.get(topic).copied().unwrap_or(0);
        let wildcard: u64 = self
            .wildcard
            .iter()
            .filter(|(filter, _)| matches(filter, topic))
            .map(|(_, count)| count)
            .sum();
        exact + wildcard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_the_standard_says() {
        assert!(matches("fleet/+/telemetry", "fleet/42/telemetry"));
        assert!(!matches("fleet/+/telemetry", "fleet/42/cmd"));
        assert!(matches("fleet/#", "fleet"));
        assert!(matches("fleet/#", "fleet/1/2"));
        assert!(!matches("fleet/+", "fleet/1/2"));
        assert!(!matches("#", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn fanout_counts_exact_and_wildcard_subscriptions() {
        let mut table = FanoutTable::default();
        for id in 0..3 {
            table.add(&render("swarm/pair/{id}", id));
        }
        table.add("swarm/#");
        table.add("swarm/#");
        assert_eq!(table.fanout("swarm/pair/1"), 3);
        assert_eq!(table.fanout("swarm/pair/7"), 2);
        assert_eq!(table.fanout("other"), 0);
    }

    #[test]
    fn shared_filters_split_into_group_and_filter() {
        assert_eq!(
            split_shared("$share/backend/fleet/+/telemetry"),
            Some(("backend", "fleet/+/telemetry"))
        );
        assert_eq!(split_shared("fleet/+/telemetry"), None);
    }
}
