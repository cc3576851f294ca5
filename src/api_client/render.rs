//! Plain tables for people; `--output json` prints the API's own JSON instead.

use serde_json::Value;

/// A value as a table cell: strings bare, absent values as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell, two spaces apart, headers in capitals.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(value, width)| format!("{value:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// `key: value` lines for one object's chosen fields.
pub fn record(value: &Value, fields: &[(&str, &str)]) -> String {
    let width = fields.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, pointer) in fields {
        let shown = value.pointer(pointer).map_or_else(|| "-".to_owned(), cell);
        out.push_str(&format!("{label:<width$}  {shown}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_line_up() {
        let rows =
            vec![vec!["web".to_owned(), "active".to_owned()], vec!["a".to_owned(), "-".to_owned()]];
        assert_eq!(table(&["name", "status"], &rows), "NAME  STATUS\nweb   active\na     -\n");
    }

    #[test]
    fn records_show_missing_fields_as_dashes() {
        let shown = record(
            &json!({"a": 1, "b": {"c": "x"}}),
            &[("a", "/a"), ("deep", "/b/c"), ("z", "/z")],
        );
        assert_eq!(shown, "a     1\ndeep  x\nz     -\n");
    }
}
