//! Human output: aligned tables, binary sizes, and the daemon's JSON re-indented for `--json`.

use cowd_api::exports::ExportInfo;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row; columns are separated by two spaces, and the last column is not
/// padded, so no line ends in spaces.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of as many cells as there are columns; control characters are escaped so a
    /// row stays on one line.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.rows
            .push(cells.into_iter().map(|c| printable(&c)).collect());
    }

    /// The table as text, each line ending in a newline.
    pub fn render(&self) -> String {
        self.render_with_notes(|_, _| {})
    }

    /// [`render`](Self::render), with the lines `notes` appends to the output after each row
    /// (given the row's index; each line ending in a newline) under that row.
    pub fn render_with_notes(&self, mut notes: impl FnMut(usize, &mut String)) -> String {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| width(&r[i]))
                    .chain([width(self.columns[i].0)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.columns.iter().map(|c| c.0.to_owned()).collect();
        let mut out = String::new();
        for (row, cells) in std::iter::once(&header).chain(&self.rows).enumerate() {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - width(cell));
                let last = i + 1 == cells.len();
                match self.columns[i].1 {
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if !last {
                            line.push_str(&pad);
                        }
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if row > 0 {
                notes(row - 1, &mut out);
            }
        }
        out
    }
}

/// `s` with control characters escaped (`\n`, `\u{1b}`, ...).
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A size in binary units: `512 B`, `1.5 KiB`, `1.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up a unit before one decimal would round the value to 1024.0.
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The `cowctl exports` table, or `no exports`.
pub fn exports_table(exports: &[ExportInfo]) -> String {
    if exports.is_empty() {
        return "no exports\n".to_owned();
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("MODE", Align::Left),
        ("CONNECTIONS", Align::Right),
        ("PATH", Align::Left),
    ]);
    for e in exports {
        t.row(vec![
            e.name.clone(),
            human_size(e.size),
            if e.read_only { "ro" } else { "rw" }.to_owned(),
            e.connections.to_string(),
            e.path.clone(),
        ]);
    }
    t.render()
}

/// Re-indents a valid JSON document the way `serde_json::to_string_pretty` does, keeping
/// everything else exactly as sent: key order, unknown fields, number and string spelling.
/// Ends with a newline.
pub fn pretty_json(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // An opening bracket was just written; its first element goes on a new line, unless the
    // container is empty.
    let mut opened = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        let closing = matches!(c, '}' | ']');
        if closing {
            depth = depth.saturating_sub(1);
        }
        if std::mem::take(&mut opened) {
            if !closing {
                newline(&mut out, depth);
            }
        } else if closing {
            newline(&mut out, depth);
        }
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
                opened = true;
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            '"' => {
                out.push('"');
                in_string = true;
            }
            _ => out.push(c),
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
        assert_eq!(human_size((1 << 30) - 1), "1.0 GiB");
        assert_eq!(human_size((1 << 20) - 10), "1.0 MiB");
        assert_eq!(human_size(10 * (1 << 40) + (1 << 39)), "10.5 TiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    fn info(name: &str, size: u64, read_only: bool, connections: usize, path: &str) -> ExportInfo {
        ExportInfo {
            name: name.into(),
            path: path.into(),
            description: String::new(),
            size,
            read_only,
            connections,
        }
    }

    #[test]
    fn exports_table_is_aligned() {
        let t = exports_table(&[
            info("disk", 1 << 30, false, 0, "/dev/sdb"),
            info("scratch-area", 512, true, 12, "/srv/img/scratch.img"),
        ]);
        assert_eq!(
            t,
            "NAME             SIZE  MODE  CONNECTIONS  PATH\n\
             disk          1.0 GiB  rw              0  /dev/sdb\n\
             scratch-area    512 B  ro             12  /srv/img/scratch.img\n"
        );
    }

    #[test]
    fn empty_table() {
        assert_eq!(exports_table(&[]), "no exports\n");
    }

    #[test]
    fn cells_stay_on_one_line() {
        let t = exports_table(&[info("a\nb", 1, false, 0, "/x\ty")]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("a\\nb") && t.contains("/x\\ty"), "{t}");
    }

    #[test]
    fn pretty_json_matches_serde_json() {
        // Objects with keys in sorted order, so serde_json's map order equals the input order.
        let docs = [
            json!([]),
            json!({}),
            json!([{}, [], [[]], {"a": {}}]),
            json!(null),
            json!("a string, with {brackets}: [and] \"quotes\" \\ and é ünïcödé"),
            json!([{"connections": 1, "description": "cowd export of /x", "name": "disk",
                    "path": "/tmp/x y/disk.img", "read_only": false, "size": 1073741824u64}]),
            json!({"a": [1, -2.5, 3e100, true, false, null], "b": {"c": {"d": ["e", "\n\t\u{1}"]}}}),
        ];
        for doc in docs {
            let compact = serde_json::to_string(&doc).unwrap();
            let expected = serde_json::to_string_pretty(&doc).unwrap() + "\n";
            assert_eq!(pretty_json(compact.as_bytes()), expected, "{compact}");
            // Already pretty input comes out the same.
            assert_eq!(pretty_json(expected.as_bytes()), expected);
        }
    }

    #[test]
    fn pretty_json_keeps_key_order_and_unknown_fields() {
        let raw = br#"{"z":1,"a":{"new_field":[1,2]}}"#;
        assert_eq!(
            pretty_json(raw),
            "{\n  \"z\": 1,\n  \"a\": {\n    \"new_field\": [\n      1,\n      2\n    ]\n  }\n}\n"
        );
    }
}
