//! Topic names and topic filters: validation at the edge and matching (MQTT 5.0 section 4.7).

use bytestring::ByteString;

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty topic or filter [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2].
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` not last or not a whole level, `+` not a whole level [MQTT-4.7.1-1], [MQTT-4.7.1-2].
    #[error("misplaced wildcard in topic filter")]
    MisplacedWildcard,
    /// `$share/` without a valid share name or filter [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    #[error("invalid shared subscription")]
    InvalidShare,
    /// More levels or bytes than the configured limit.
    #[error("topic exceeds the configured limits")]
    TooLong,
}

/// Validates a PUBLISH topic name; `max_levels` bounds the number of levels.
///
/// # Errors
/// Returns a [`TopicError`] when the name is empty, holds a wildcard or is too deep.
pub fn validate_topic_name(topic: &str, max_levels: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.bytes().any(|byte| byte == b'+' || byte == b'#') {
        return Err(TopicError::WildcardInName);
    }
    if topic.bytes().filter(|&byte| byte == b'/').count() >= max_levels {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

/// Validates the filter part of a subscription (after any `$share/group/` prefix).
///
/// # Errors
/// Returns a [`TopicError`] when the filter is empty, misuses a wildcard or is too deep.
pub fn validate_topic_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut num_levels = 0;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        num_levels += 1;
        let is_last = levels.peek().is_none();
        match level {
            "#" if !is_last => return Err(TopicError::MisplacedWildcard),
            "#" | "+" => {}
            _ if level.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    if num_levels > max_levels {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

/// A validated subscription filter, possibly shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    /// The filter that topics are matched against (without the `$share/group/` prefix).
    pub filter: ByteString,
    /// Share name of a `$share/{group}/{filter}` subscription.
    pub share_group: Option<ByteString>,
}

impl TopicFilter {
    /// Parses and validates a SUBSCRIBE/UNSUBSCRIBE filter.
    ///
    /// # Errors
    /// Returns a [`TopicError`] when the filter is invalid.
    pub fn parse(raw: &ByteString, max_levels: usize) -> Result<TopicFilter, TopicError> {
        let Some(rest) = raw.strip_prefix("$share/") else {
            validate_topic_filter(raw, max_levels)?;
            return Ok(TopicFilter {
                filter: raw.clone(),
                share_group: None,
            });
        };
        let Some((group, filter)) = rest.split_once('/') else {
            return Err(TopicError::InvalidShare);
        };
        // [MQTT-4.8.2-2] the share name must not contain '/', '+' or '#' and must not be empty.
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::InvalidShare);
        }
        validate_topic_filter(filter, max_levels).map_err(|error| match error {
            TopicError::Empty => TopicError::InvalidShare,
            other => other,
        })?;
        let start = "$share/".len() + group.len() + 1;
        Ok(TopicFilter {
            filter: raw.slice_ref(&raw[start..]),
            share_group: Some(raw.slice_ref(group)),
        })
    }

    /// Splits an already validated filter into its parts, copying them.
    pub fn from_validated(raw: &str) -> TopicFilter {
        let shared = raw
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'));
        match shared {
            Some((group, filter)) => TopicFilter {
                filter: ByteString::from(filter),
                share_group: Some(ByteString::from(group)),
            },
            None => TopicFilter {
                filter: ByteString::from(raw),
                share_group: None,
            },
        }
    }

    /// Returns true for a `$share/...` subscription.
    pub fn is_shared(&self) -> bool {
        self.share_group.is_some()
    }
}

/// Returns true when `topic` matches `filter` (both already validated).
///
/// Topics starting with `$` are not matched by a filter starting with a wildcard [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) if filter_level == topic_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_levels() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("+", ""));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        assert_eq!(
            validate_topic_filter("a/#/b", 32),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(
            validate_topic_filter("a/b+", 32),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(validate_topic_filter("", 32), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("a/b/c", 2), Err(TopicError::TooLong));
        assert_eq!(
            validate_topic_name("a/+", 32),
            Err(TopicError::WildcardInName)
        );
    }

    #[test]
    fn shared_filters_split_group_and_filter() {
        let parsed = TopicFilter::parse(&ByteString::from("$share/g1/a/+"), 32).unwrap();
        assert_eq!(parsed.share_group.as_deref(), Some("g1"));
        assert_eq!(&*parsed.filter, "a/+");
        assert!(TopicFilter::parse(&ByteString::from("$share/g1"), 32).is_err());
        assert!(TopicFilter::parse(&ByteString::from("$share//a"), 32).is_err());
        assert!(TopicFilter::parse(&ByteString::from("$share/g+/a"), 32).is_err());
    }
}
