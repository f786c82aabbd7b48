//! Plain-text tables for `starling ctl` output: a header line and left-aligned columns.

use std::io::{self, Write};

use serde_json::Value;

/// Renders a JSON value for a table cell: strings bare, null as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Writes `rows` under `headers`, each column as wide as its widest cell.
///
/// # Errors
/// Returns the writer's error.
pub fn write_table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let write_row = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (idx, (value, width)) in cells.zip(&widths).enumerate() {
            if idx + 1 == widths.len() {
                line.push_str(value);
            } else {
                line.push_str(&format!("{value:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())
    };
    write_row(out, &mut headers.iter().copied())?;
    for row in rows {
        write_row(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes an object's fields as `key: value` lines, keys aligned.
///
/// # Errors
/// Returns the writer's error.
pub fn write_fields(out: &mut dyn Write, object: &Value) -> io::Result<()> {
    let Some(fields) = object.as_object() else {
        return writeln!(out, "{}", cell(object));
    };
    let width = fields.keys().map(|k| k.len()).max().unwrap_or(0);
    for (key, value) in fields {
        writeln!(out, "{key:<width$}  {}", cell(value))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["car-1".to_string(), "true".to_string()],
            vec!["c".to_string(), "-".to_string()],
        ];
        write_table(&mut out, &["CLIENT ID", "CONNECTED"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CLIENT ID  CONNECTED\ncar-1      true\nc          -\n"
        );
    }
}
