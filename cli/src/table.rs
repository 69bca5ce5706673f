//! Plain aligned text tables and key/value blocks for the `table` output format.

/// A table with a header row; columns are separated by two spaces and padded to the widest
/// cell. Numeric columns are right-aligned. Cells are kept on one line.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            right: vec![false; headers.len()],
        }
    }

    /// Right-align these columns (counts, ratios).
    pub fn numeric(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cells: Vec<String> = cells.into_iter().map(|c| one_line(&c.into())).collect();
        cells.resize(self.headers.len().max(cells.len()), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table as text, one line per row, each line ending in a newline.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                let pad = width - cell.chars().count();
                if i > 0 {
                    text.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the keys padded to the same width; pairs with an empty value are left out.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(&format!("{k:<width$}  {}\n", one_line(v)));
    }
    out
}

/// A section: a title line, then the body (or `empty` when the table has no rows).
pub fn section(title: &str, table: &Table, empty: &str) -> String {
    if table.is_empty() {
        format!("{title}: {empty}\n")
    } else {
        format!("{title}\n{}", table.render())
    }
}

/// Newlines, tabs and other control characters would break the alignment: make them spaces.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// A count or ratio cell: "-" for nothing.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_numbers_right_aligned() {
        let mut t = Table::new(&["ROLE", "HAS POLICY", "ACTION"]);
        t.row(["web-server-role", "no", "attached"]);
        t.row(["db", "yes", "already"]);
        t.row(["batch\nworker", "no", "failed: User is not authorized"]);
        assert_eq!(
            t.render(),
            "ROLE             HAS POLICY  ACTION\n\
             web-server-role  no          attached\n\
             db               yes         already\n\
             batch worker     no          failed: User is not authorized\n"
        );
        let mut n = Table::new(&["WAVE", "INSTANCES"]).numeric(&[1]);
        n.row(["canary", "10"]);
        n.row(["wave 1", "1200"]);
        assert_eq!(n.render(), "WAVE    INSTANCES\ncanary         10\nwave 1       1200\n");
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn unicode_widths_and_short_rows() {
        let mut t = Table::new(&["A", "B"]);
        t.row(["äöü"]);
        t.row(["x", "y"]);
        assert_eq!(t.render(), "A    B\näöü\nx    y\n");
    }

    #[test]
    fn sections_and_key_values() {
        let t = Table::new(&["INSTANCE"]);
        assert_eq!(section("Failed instances", &t, "none"), "Failed instances: none\n");
        assert_eq!(
            key_values(&[
                ("Status", "FAILED".into()),
                ("Error", String::new()),
                ("Execution", "arn:x".into())
            ]),
            "Status     FAILED\nExecution  arn:x\n"
        );
        assert_eq!(opt::<u32>(None), "-");
    }
}
