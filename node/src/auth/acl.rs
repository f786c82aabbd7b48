//! Topic ACL rules: who (user, client id, certificate, listener) may publish or subscribe to
//! which topic filters, first matching rule wins, deny when no rule matches.
//!
//! Placeholders in filters: `%c` client id, `%u` user name, `%i` certificate common name. A
//! value holding `/`, `+`, `#` or nothing would widen the filter, so an allow rule is then
//! skipped and a deny rule matches as if the placeholder were `+` (fail closed).
//!
//! Topics are compared byte for byte: no Unicode normalisation, so a look-alike (a fullwidth
//! solidus, Cyrillic letters) is another topic that no rule for the original reaches.

use serde::Deserialize;
use starling_core::{auth::SubscribeDecision, codec::QoS, topic};

/// One rule as written in `[[acl.rules]]` or an ACL file's `[[rules]]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    permission: Permission,
    action: ActionSpec,
    topics: Vec<String>,
    username: Option<String>,
    client_id: Option<String>,
    certificate_cn: Option<String>,
    listener: Option<String>,
    anonymous: Option<bool>,
    max_qos: Option<u8>,
    retain: Option<bool>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Permission {
    Allow,
    Deny,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ActionSpec {
    Publish,
    Subscribe,
    All,
}

/// `value`, or a prefix when it ends with `*`; `*` alone matches any present value.
#[derive(Debug, Clone)]
struct Selector {
    value: String,
    prefix: bool,
}

impl Selector {
    fn new(spec: String) -> Selector {
        match spec.strip_suffix('*') {
            Some(prefix) => Selector {
                value: prefix.to_string(),
                prefix: true,
            },
            None => Selector {
                value: spec,
                prefix: false,
            },
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match value {
            Some(value) if self.prefix => value.starts_with(&self.value),
            Some(value) => value == self.value,
            None => false,
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub(crate) struct AclRule {
    allow: bool,
    publish: bool,
    subscribe: bool,
    topics: Vec<String>,
    username: Option<Selector>,
    client_id: Option<Selector>,
    certificate_cn: Option<Selector>,
    listener: Option<String>,
    anonymous: Option<bool>,
    max_qos: QoS,
    retain: bool,
}

/// Who is asking, as the rules see it.
pub(crate) struct Subject<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) username: Option<&'a str>,
    pub(crate) certificate_cn: Option<&'a str>,
    pub(crate) listener: &'a str,
}

impl AclRule {
    /// Validates a rule.
    pub(crate) fn from_spec(spec: RuleSpec, max_topic_levels: usize) -> Result<AclRule, String> {
        if spec.topics.is_empty() {
            return Err("`topics` is empty".to_string());
        }
        for filter in &spec.topics {
            let probe = filter
                .replace("%c", "x")
                .replace("%u", "x")
                .replace("%i", "x");
            if topic::validate_topic_filter(&probe, max_topic_levels).is_err() {
                return Err(format!("invalid topic filter {filter:?}"));
            }
        }
        let max_qos = match spec.max_qos.unwrap_or(2) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err("`max_qos` must be 0, 1 or 2".to_string()),
        };
        Ok(AclRule {
            allow: spec.permission == Permission::Allow,
            publish: spec.action != ActionSpec::Subscribe,
            subscribe: spec.action != ActionSpec::Publish,
            topics: spec.topics,
            username: spec.username.map(Selector::new),
            client_id: spec.client_id.map(Selector::new),
            certificate_cn: spec.certificate_cn.map(Selector::new),
            listener: spec.listener,
            anonymous: spec.anonymous,
            max_qos,
            retain: spec.retain.unwrap_or(true),
        })
    }

    /// An allow rule for a principal's own grants (a token's or the HTTP hook's lists).
    pub(crate) fn grant(publish: bool, filters: Vec<String>) -> AclRule {
        AclRule {
            allow: true,
            publish,
            subscribe: !publish,
            topics: filters,
            username: None,
            client_id: None,
            certificate_cn: None,
            listener: None,
            anonymous: None,
            max_qos: QoS::ExactlyOnce,
            retain: true,
        }
    }

    fn applies(&self, subject: &Subject<'_>) -> bool {
        self.username
            .as_ref()
            .is_none_or(|s| s.matches(subject.username))
            && self
                .client_id
                .as_ref()
                .is_none_or(|s| s.matches(Some(subject.client_id)))
            && self
                .certificate_cn
                .as_ref()
                .is_none_or(|s| s.matches(subject.certificate_cn))
            && self
                .listener
                .as_ref()
                .is_none_or(|name| name == subject.listener)
            && self
                .anonymous
                .is_none_or(|anonymous| anonymous == subject.username.is_none())
    }

    /// The rule's filters with the placeholders filled in for `subject`.
    fn filters<'a>(&'a self, subject: &'a Subject<'_>) -> impl Iterator<Item = String> + 'a {
        self.topics
            .iter()
            .filter_map(move |pattern| substitute(pattern, subject, self.allow))
    }
}

/// Is `value` safe inside a filter level?
fn is_safe_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
}

fn substitute(pattern: &str, subject: &Subject<'_>, allow: bool) -> Option<String> {
    if !pattern.contains('%') {
        return Some(pattern.to_string());
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(idx) = rest.find('%') {
        out.push_str(&rest[..idx]);
        let value = match rest.as_bytes().get(idx + 1) {
            Some(b'c') => Some(subject.client_id),
            Some(b'u') => subject.username,
            Some(b'i') => subject.certificate_cn,
            _ => {
                out.push('%');
                rest = &rest[idx + 1..];
                continue;
            }
        };
        match value.filter(|value| is_safe_level(value)) {
            Some(value) => out.push_str(value),
            // Fail closed: an allow rule does not apply, a deny rule covers the whole level.
            None if allow => return None,
            None => out.push('+'),
        }
        rest = &rest[idx + 2..];
    }
    out.push_str(rest);
    // A placeholder inside a level ("a%cb") widened by `+` is no valid filter: deny everything
    // the rule could mean.
    if !allow && topic::validate_topic_filter(&out, usize::MAX).is_err() {
        return Some("#".to_string());
    }
    Some(out)
}

fn first_is_dollar(level: Option<&str>) -> bool {
    level.is_some_and(|level| level.starts_with('$'))
}

fn first_is_wildcard(level: Option<&str>) -> bool {
    matches!(level, Some("+") | Some("#"))
}

/// Does rule filter `rule` match every topic that `filter` matches?
pub(crate) fn covers(rule: &str, filter: &str) -> bool {
    if first_is_dollar(filter.split('/').next()) && first_is_wildcard(rule.split('/').next()) {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(rule_level), Some(level))
                if rule_level == level && level != "+" && level != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is there a topic that both filters match?
pub(crate) fn intersects(rule: &str, filter: &str) -> bool {
    let (rule_first, filter_first) = (rule.split('/').next(), filter.split('/').next());
    if (first_is_dollar(filter_first) && first_is_wildcard(rule_first))
        || (first_is_dollar(rule_first) && first_is_wildcard(filter_first))
    {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(a), Some(b)) if a == "+" || b == "+" || a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The first rule for publishing (`publish`) or reading that applies to `subject` and matches
/// `topic_name`: first match wins.
fn first_match<'r>(
    rules: impl Iterator<Item = &'r AclRule>,
    subject: &Subject<'_>,
    topic_name: &str,
    publish: bool,
) -> Option<&'r AclRule> {
    rules
        .filter(|rule| {
            (if publish {
                rule.publish
            } else {
                rule.subscribe
            }) && rule.applies(subject)
        })
        .find(|rule| {
            rule.filters(subject)
                .any(|filter| topic::matches(&filter, topic_name))
        })
}

/// May `subject` publish to `topic`?
pub(crate) fn check_publish<'r>(
    rules: impl Iterator<Item = &'r AclRule>,
    subject: &Subject<'_>,
    topic_name: &str,
    qos: QoS,
    retain: bool,
) -> bool {
    first_match(rules, subject, topic_name, true)
        .is_some_and(|rule| rule.allow && qos <= rule.max_qos && (!retain || rule.retain))
}

/// May `subject` receive a message published to `topic`?
pub(crate) fn check_read<'r>(
    rules: impl Iterator<Item = &'r AclRule>,
    subject: &Subject<'_>,
    topic_name: &str,
) -> bool {
    first_match(rules, subject, topic_name, false).is_some_and(|rule| rule.allow)
}

/// How may `subject` subscribe to `filter`? The first rule covering the whole filter decides;
/// rules before it that reach only part of it make the grant partial (checked per delivery).
pub(crate) fn check_subscribe<'r>(
    rules: impl Iterator<Item = &'r AclRule>,
    subject: &Subject<'_>,
    filter: &str,
) -> SubscribeDecision {
    let mut partial_allow: Option<QoS> = None;
    let mut partial_deny = false;
    for rule in rules.filter(|rule| rule.subscribe && rule.applies(subject)) {
        for rule_filter in rule.filters(subject) {
            if covers(&rule_filter, filter) {
                return match (rule.allow, partial_allow) {
                    (true, earlier) => SubscribeDecision::Allow {
                        max_qos: earlier.map_or(rule.max_qos, |qos| qos.max(rule.max_qos)),
                        partial: partial_deny,
                    },
                    (false, Some(max_qos)) => SubscribeDecision::Allow {
                        max_qos,
                        partial: true,
                    },
                    (false, None) => SubscribeDecision::Deny,
                };
            }
            if intersects(&rule_filter, filter) {
                if rule.allow {
                    partial_allow =
                        Some(partial_allow.map_or(rule.max_qos, |q| q.max(rule.max_qos)));
                } else {
                    partial_deny = true;
                }
            }
        }
    }
    match partial_allow {
        Some(max_qos) => SubscribeDecision::Allow {
            max_qos,
            partial: true,
        },
        None => SubscribeDecision::Deny,
    }
}

/// The `[[rules]]` of an ACL file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

/// Parses an ACL file; errors name the line (TOML) or the rule.
pub(crate) fn parse_acl_file(text: &str, max_topic_levels: usize) -> Result<Vec<AclRule>, String> {
    let file: AclFile = toml::from_str(text).map_err(|error| error.to_string())?;
    file.rules
        .into_iter()
        .enumerate()
        .map(|(idx, spec)| {
            AclRule::from_spec(spec, max_topic_levels)
                .map_err(|error| format!("rule {}: {error}", idx + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> AclRule {
        let spec: RuleSpec = toml::from_str(text).unwrap();
        AclRule::from_spec(spec, 64).unwrap()
    }

    fn subject<'a>(client_id: &'a str, username: Option<&'a str>) -> Subject<'a> {
        Subject {
            client_id,
            username,
            certificate_cn: None,
            listener: "default",
        }
    }

    #[test]
    fn covers_and_intersects() {
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x/#"));
        assert!(intersects("a/+/c", "a/b/#"));
        assert!(intersects("a/b", "+/+"));
        assert!(!intersects("a/b", "a/c"));
        assert!(!intersects("a/b", "a/b/c"));
        assert!(intersects("a", "a/#"));
        assert!(!intersects("#", "$SYS/#"));
        assert!(!intersects("$SYS/#", "+/x"));
    }

    #[test]
    fn placeholders_fill_in_and_fail_closed() {
        let s = subject("car-1", Some("alice"));
        assert_eq!(
            substitute("d/%c/%u", &s, true).as_deref(),
            Some("d/car-1/alice")
        );
        let evil = subject("+", Some("#"));
        assert_eq!(substitute("d/%c", &evil, true), None);
        assert_eq!(substitute("d/%c", &evil, false).as_deref(), Some("d/+"));
        assert_eq!(substitute("d/x%cy", &evil, false).as_deref(), Some("#"));
        let anonymous = subject("c", None);
        assert_eq!(substitute("u/%u", &anonymous, true), None);
    }

    #[test]
    fn first_matching_rule_decides_and_default_denies() {
        let rules = [
            rule("permission = \"deny\"\naction = \"all\"\ntopics = [\"d/%c/secret/#\"]"),
            rule("permission = \"allow\"\naction = \"all\"\ntopics = [\"d/%c/#\"]\nmax_qos = 1\nretain = false"),
        ];
        let s = subject("c1", None);
        assert!(check_publish(
            rules.iter(),
            &s,
            "d/c1/t",
            QoS::AtLeastOnce,
            false
        ));
        assert!(!check_publish(
            rules.iter(),
            &s,
            "d/c1/t",
            QoS::ExactlyOnce,
            false
        ));
        assert!(!check_publish(
            rules.iter(),
            &s,
            "d/c1/t",
            QoS::AtMostOnce,
            true
        ));
        assert!(!check_publish(
            rules.iter(),
            &s,
            "d/c1/secret/x",
            QoS::AtMostOnce,
            false
        ));
        assert!(!check_publish(
            rules.iter(),
            &s,
            "d/c2/t",
            QoS::AtMostOnce,
            false
        ));
        assert_eq!(
            check_subscribe(rules.iter(), &s, "d/c1/#"),
            SubscribeDecision::Allow {
                max_qos: QoS::AtLeastOnce,
                partial: true
            }
        );
        assert_eq!(
            check_subscribe(rules.iter(), &s, "d/c1/t"),
            SubscribeDecision::Allow {
                max_qos: QoS::AtLeastOnce,
                partial: false
            }
        );
        assert_eq!(
            check_subscribe(rules.iter(), &s, "d/c1/secret/+"),
            SubscribeDecision::Deny
        );
        assert_eq!(
            check_subscribe(rules.iter(), &s, "#"),
            SubscribeDecision::Allow {
                max_qos: QoS::AtLeastOnce,
                partial: true
            }
        );
        assert_eq!(
            check_subscribe(rules.iter(), &s, "$SYS/#"),
            SubscribeDecision::Deny
        );
        assert!(check_read(rules.iter(), &s, "d/c1/x"));
        assert!(!check_read(rules.iter(), &s, "d/c1/secret/x"));
        assert!(!check_read(rules.iter(), &s, "d/c2/x"));
    }

    #[test]
    fn selectors_pick_subjects() {
        let rules = [rule(
            "permission = \"allow\"\naction = \"publish\"\ntopics = [\"x\"]\nusername = \"ops-*\"\nlistener = \"tls\"",
        )];
        let mut s = subject("c", Some("ops-1"));
        assert!(!check_publish(
            rules.iter(),
            &s,
            "x",
            QoS::AtMostOnce,
            false
        ));
        s.listener = "tls";
        assert!(check_publish(rules.iter(), &s, "x", QoS::AtMostOnce, false));
        s.username = Some("dev-1");
        assert!(!check_publish(
            rules.iter(),
            &s,
            "x",
            QoS::AtMostOnce,
            false
        ));
    }
}
