//! Human output (aligned tables, `key  value` lists) and `--output json` (the API's JSON as is,
//! one document per command, for scripts).

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Columns padded to their widest cell (in characters), two spaces apart; lines carry no
/// trailing blanks.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// A row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (cell, w) in line.iter().zip(&widths) {
                // Cells are single-line: a newline in a description would break the columns.
                let cell = cell.replace(['\n', '\r', '\t'], " ");
                text.push_str(&cell);
                text.push_str(&" ".repeat(w - width(&cell) + 2));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines, keys aligned (a single record).
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<w$}  {v}\n")).collect()
}

/// A JSON field as text for a table cell: strings bare, absent as "-", others as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let mut t = Table::new(&["NAME", "RUNTIME", "MEMORY"]);
        t.row(vec!["hello".into(), "python3.10".into(), "128".into()]);
        t.row(vec!["ü".into(), "custom".into()]);
        t.row(vec!["multi\nline".into(), "x".into(), "1".into(), "dropped".into()]);
        assert_eq!(
            t.render(),
            "NAME        RUNTIME     MEMORY\n\
             hello       python3.10  128\n\
             ü           custom\n\
             multi line  x           1\n"
        );
    }

    #[test]
    fn fields_and_cells() {
        assert_eq!(fields(&[("a", "1".into()), ("long", "2".into())]), "a     1\nlong  2\n");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(3)), "3");
    }
}
