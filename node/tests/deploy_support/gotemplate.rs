//! Just enough of Helm to render the chart's ConfigMap in a test without the `helm` binary:
//! a reader of the block-style YAML of `values.yaml`, and a renderer of the Go template
//! constructs the ConfigMap uses (`.Values` paths, `range $k, $v :=`, `with`, `end`, pipes into
//! `int64`, `quote`, `toJson`, `nindent`, and `{{-`/`-}}` trimming).
//!
//! Anything else panics with the construct's text, so a template change that needs more is
//! noticed (extend this file, or run `helm template` by hand) instead of rendering wrongly.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// A YAML value of `values.yaml`: maps keep their keys sorted, as Helm's `range` visits them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A scalar as written (quotes removed), and whether it was quoted.
    Scalar { text: String, quoted: bool },
    /// A mapping.
    Map(BTreeMap<String, Value>),
    /// A sequence.
    List(Vec<Value>),
}

impl Value {
    /// A plain (unquoted) scalar.
    pub(crate) fn plain(text: &str) -> Value {
        Value::Scalar {
            text: text.to_owned(),
            quoted: false,
        }
    }

    /// Looks up a dotted path (`config.log.level`).
    pub(crate) fn path(&self, path: &str) -> &Value {
        let mut value = self;
        for key in path.split('.').filter(|key| !key.is_empty()) {
            value = match value {
                Value::Map(map) => map
                    .get(key)
                    .unwrap_or_else(|| panic!("values.yaml has no {path} ({key})")),
                _ => panic!("{path}: {key} is not in a map"),
            };
        }
        value
    }

    /// Sets a dotted path, creating maps on the way (for value overrides, like `--set`).
    pub(crate) fn set(&mut self, path: &str, new: Value) {
        let mut value = self;
        let keys: Vec<&str> = path.split('.').collect();
        for (idx, key) in keys.iter().enumerate() {
            let Value::Map(map) = value else {
                panic!("{path}: {key} is not in a map")
            };
            if idx == keys.len() - 1 {
                map.insert((*key).to_owned(), new);
                return;
            }
            value = map
                .entry((*key).to_owned())
                .or_insert_with(|| Value::Map(BTreeMap::new()));
        }
    }

    /// Go template truthiness: empty strings, maps, lists, `false` and `0` are false.
    fn is_truthy(&self) -> bool {
        match self {
            Value::Scalar { text, quoted } => {
                !(text.is_empty()
                    || (!quoted && (text == "false" || text == "0" || text == "null")))
            }
            Value::Map(map) => !map.is_empty(),
            Value::List(items) => !items.is_empty(),
        }
    }

    /// What `{{ value }}` prints.
    fn print(&self) -> String {
        match self {
            Value::Scalar { text, .. } => text.clone(),
            other => panic!("printing a collection: {other:?}"),
        }
    }

    /// `toJson`.
    fn to_json(&self) -> String {
        match self {
            Value::Scalar { text, quoted } => {
                let is_literal =
                    !quoted && (text == "true" || text == "false" || text.parse::<f64>().is_ok());
                if is_literal {
                    text.clone()
                } else {
                    serde_json::Value::String(text.clone()).to_string()
                }
            }
            Value::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Value::to_json)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Value::Map(map) => format!(
                "{{{}}}",
                map.iter()
                    .map(|(k, v)| format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        v.to_json()
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

fn scalar(text: &str) -> Value {
    let text = text.trim();
    if text == "{}" {
        return Value::Map(BTreeMap::new());
    }
    if text == "[]" {
        return Value::List(Vec::new());
    }
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return Value::Scalar {
                text: text[1..text.len() - 1].to_owned(),
                quoted: true,
            };
        }
    }
    Value::plain(text)
}

/// Parses block-style YAML (nested maps, `- ` lists, scalars, `{}`/`[]`, `#` comments).
pub(crate) fn parse_values(yaml: &str) -> Value {
    let lines: Vec<(usize, &str)> = yaml
        .lines()
        .map(|line| match line.find(" #") {
            Some(idx) if !line[..idx].contains('"') => &line[..idx],
            _ => line,
        })
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| (line.len() - line.trim_start().len(), line.trim()))
        .collect();
    let mut pos = 0;
    let value = parse_block(&lines, &mut pos, 0);
    assert_eq!(pos, lines.len(), "unparsed YAML from {:?}", lines.get(pos));
    value
}

fn parse_block(lines: &[(usize, &str)], pos: &mut usize, indent: usize) -> Value {
    if lines
        .get(*pos)
        .is_some_and(|(_, text)| text.starts_with("- "))
    {
        let mut items = Vec::new();
        while let Some((line_indent, text)) = lines.get(*pos) {
            if *line_indent != indent || !text.starts_with("- ") {
                break;
            }
            assert!(
                !text[2..].contains(": "),
                "maps in lists are not supported: {text}"
            );
            items.push(scalar(&text[2..]));
            *pos += 1;
        }
        return Value::List(items);
    }
    let mut map = BTreeMap::new();
    while let Some((line_indent, text)) = lines.get(*pos) {
        if *line_indent < indent {
            break;
        }
        assert_eq!(*line_indent, indent, "unexpected indentation at {text:?}");
        let (key, rest) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("expected `key: value`, got {text:?}"));
        *pos += 1;
        let value = if rest.trim().is_empty() {
            match lines.get(*pos) {
                // A list may sit at the key's own indentation.
                Some((next, next_text))
                    if *next > indent || (*next == indent && next_text.starts_with("- ")) =>
                {
                    parse_block(lines, pos, *next)
                }
                _ => Value::plain(""),
            }
        } else {
            scalar(rest)
        };
        map.insert(key.trim().to_owned(), value);
    }
    Value::Map(map)
}

enum Token<'a> {
    Text(&'a str),
    Action(&'a str),
}

/// Splits a template into text and actions, applying `{{-` and `-}}` trimming.
fn tokenize(template: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let end = start + rest[start..].find("}}").expect("unterminated action");
        let mut text = &rest[..start];
        let mut action = &rest[start + 2..end];
        if trim_next {
            text = text.trim_start();
        }
        if let Some(trimmed) = action.strip_prefix('-') {
            text = text.trim_end();
            action = trimmed;
        }
        trim_next = false;
        if let Some(trimmed) = action.strip_suffix('-') {
            trim_next = true;
            action = trimmed;
        }
        tokens.push(Token::Text(text));
        tokens.push(Token::Action(action.trim()));
        rest = &rest[end + 2..];
    }
    tokens.push(Token::Text(if trim_next {
        rest.trim_start()
    } else {
        rest
    }));
    tokens
}

struct Scope<'v> {
    values: &'v Value,
    dot: Value,
    vars: BTreeMap<String, Value>,
}

/// Renders `template` with `values` as `.Values`.
pub(crate) fn render(template: &str, values: &Value) -> String {
    let tokens = tokenize(template);
    let mut out = String::new();
    let mut pos = 0;
    let mut scope = Scope {
        values,
        dot: Value::Map(BTreeMap::new()),
        vars: BTreeMap::new(),
    };
    render_until_end(&tokens, &mut pos, &mut scope, &mut out, true);
    assert_eq!(pos, tokens.len(), "an `end` without a block");
    out
}

/// Renders tokens from `pos` to the matching `end` (or the end); writes only when `emit`.
fn render_until_end(
    tokens: &[Token<'_>],
    pos: &mut usize,
    scope: &mut Scope<'_>,
    out: &mut String,
    emit: bool,
) {
    while let Some(token) = tokens.get(*pos) {
        *pos += 1;
        match token {
            Token::Text(text) => {
                if emit {
                    out.push_str(text);
                }
            }
            Token::Action("end") => return,
            Token::Action(action) if action.starts_with("/*") => {}
            Token::Action(action) if action.starts_with("range ") => {
                let (vars, pipeline) = action["range ".len()..]
                    .split_once(":=")
                    .unwrap_or_else(|| panic!("unsupported range: {action}"));
                let names: Vec<&str> = vars.split(',').map(str::trim).collect();
                assert_eq!(names.len(), 2, "unsupported range: {action}");
                let collection = if emit {
                    eval(pipeline, scope)
                } else {
                    Value::Map(BTreeMap::new())
                };
                let body_start = *pos;
                let entries: Vec<(Value, Value)> = match collection {
                    Value::Map(map) => map
                        .into_iter()
                        .map(|(k, v)| (Value::plain(&k), v))
                        .collect(),
                    Value::List(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(idx, v)| (Value::plain(&idx.to_string()), v))
                        .collect(),
                    Value::Scalar { .. } => panic!("range over a scalar: {action}"),
                };
                for (key, value) in &entries {
                    *pos = body_start;
                    scope.vars.insert(names[0].to_owned(), key.clone());
                    scope.vars.insert(names[1].to_owned(), value.clone());
                    render_until_end(tokens, pos, scope, out, emit);
                }
                if entries.is_empty() {
                    *pos = body_start;
                    render_until_end(tokens, pos, scope, out, false);
                }
            }
            Token::Action(action) if action.starts_with("with ") => {
                let value = if emit {
                    eval(&action["with ".len()..], scope)
                } else {
                    Value::plain("")
                };
                let saved = std::mem::replace(&mut scope.dot, value.clone());
                render_until_end(tokens, pos, scope, out, emit && value.is_truthy());
                scope.dot = saved;
            }
            Token::Action(action) => {
                if emit {
                    out.push_str(&eval(action, scope).print());
                }
            }
        }
    }
}

/// Evaluates a pipeline: `term | fn args | ...`, or `fn args`.
fn eval(pipeline: &str, scope: &Scope<'_>) -> Value {
    let mut value: Option<Value> = None;
    for command in pipeline.split('|').map(str::trim) {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (function, args) = words.split_first().expect("empty command");
        let mut args: Vec<Value> = args.iter().map(|arg| term(arg, scope)).collect();
        if let Some(piped) = value.take() {
            args.push(piped);
        }
        value = Some(match *function {
            "int64" => {
                let text = args.last().expect("int64 needs an argument").print();
                let number: f64 = text.parse().unwrap_or_else(|_| panic!("int64 of {text:?}"));
                Value::plain(&(number as i64).to_string())
            }
            "quote" => Value::plain(&format!(
                "\"{}\"",
                args.last()
                    .expect("quote needs an argument")
                    .print()
                    .replace('"', "\\\"")
            )),
            "toJson" => Value::plain(&args.last().expect("toJson needs an argument").to_json()),
            "nindent" => {
                let width: usize = args[0].print().parse().expect("nindent width");
                let pad = " ".repeat(width);
                let text = args[1].print();
                Value::plain(&format!(
                    "\n{}",
                    text.lines()
                        .map(|l| format!("{pad}{l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            }
            other if args.is_empty() => term(other, scope),
            other => panic!("unsupported template function {other:?} in {pipeline:?}"),
        });
    }
    value.expect("empty pipeline")
}

fn term(word: &str, scope: &Scope<'_>) -> Value {
    if word == "." {
        return scope.dot.clone();
    }
    if let Some(path) = word.strip_prefix(".Values.") {
        return scope.values.path(path).clone();
    }
    if word.starts_with('$') {
        return scope
            .vars
            .get(word)
            .unwrap_or_else(|| panic!("unknown variable {word}"))
            .clone();
    }
    if word.parse::<f64>().is_ok() {
        return Value::plain(word);
    }
    panic!("unsupported template term {word:?}")
}
