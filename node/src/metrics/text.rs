//! A strict parser of the Prometheus text exposition format (version 0.0.4), enough to read
//! back what the node exports: `$SYS` figures and the integration tests use it.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with any `_bucket`, `_sum`, `_count` suffix).
    pub name: String,
    /// Labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition: samples plus the `# TYPE` of each metric family.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Metric family name to its type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Sums every sample named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
            })
            .map(|sample| sample.value)
            .sum()
    }

    /// Returns true if a sample named `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|sample| sample.name == name)
    }
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Parses exposition text.
///
/// # Errors
/// Returns a [`ParseError`] naming the first invalid line: a bad metric or label name, an
/// unterminated or badly escaped label value, a missing or non-numeric value, an unknown
/// `# TYPE`, or a sample whose family was typed twice.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut exposition = Exposition::default();
    for (idx, line) in text.lines().enumerate() {
        let error = |message: &str| ParseError {
            line: idx + 1,
            message: message.to_string(),
        };
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| error("TYPE without a name"))?;
                    let kind = words.next().ok_or_else(|| error("TYPE without a type"))?;
                    if !valid_metric_name(name) {
                        return Err(error("invalid metric name in TYPE"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(error("unknown metric type"));
                    }
                    if exposition
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(error("metric family typed twice"));
                    }
                }
                Some("HELP") => {
                    let name = words.next().ok_or_else(|| error("HELP without a name"))?;
                    if !valid_metric_name(name) {
                        return Err(error("invalid metric name in HELP"));
                    }
                }
                _ => {}
            }
            continue;
        }
        exposition
            .samples
            .push(parse_sample(line).map_err(|message| error(&message))?);
    }
    Ok(exposition)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let label_end = rest
                .find(|c: char| !is_name_char(c))
                .ok_or("unterminated label set")?;
            let label = &rest[..label_end];
            if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("invalid label name {label:?}"));
            }
            rest = rest[label_end..]
                .strip_prefix("=\"")
                .ok_or("expected =\" after a label name")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let value_end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".to_string()),
                    Some((idx, '"')) => break idx,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        _ => return Err("invalid escape in a label value".to_string()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            rest = &rest[value_end + 1..];
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label:?} repeated"));
            }
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("expected , or } after a label value".to_string());
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("missing value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("invalid timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value".to_string());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_types_and_escapes_are_parsed() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{qos=\"1\",x=\"q\\\"\\\\\\n\"} 3\na_total{qos=\"0\"} 2 1700000000\n# TYPE g gauge\ng -1.5e3\ng{le=\"+Inf\"} +Inf\n";
        let exposition = parse(text).unwrap();
        assert_eq!(exposition.types["a_total"], "counter");
        assert_eq!(exposition.sum("a_total", &[]), 5.0);
        assert_eq!(exposition.sum("a_total", &[("qos", "1")]), 3.0);
        assert_eq!(exposition.samples[0].labels["x"], "q\"\\\n");
        assert_eq!(exposition.sum("g", &[("le", "+Inf")]), f64::INFINITY);
        assert!(exposition.has("g") && !exposition.has("h"));
    }

    #[test]
    fn invalid_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("ok 1\n9bad 1\n", 2),
            ("a{x=\"1} 2\n", 1),
            ("a{x=1} 2\n", 1),
            ("a 1 2 3\n", 1),
            ("a\n", 1),
            ("a one\n", 1),
            ("# TYPE a counter\n# TYPE a gauge\n", 2),
            ("# TYPE a countr\n", 1),
            ("a{x=\"1\",x=\"2\"} 1\n", 1),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
    }
}
